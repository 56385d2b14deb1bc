package main

import (
	"context"
	"io"
	"math"
	"os/exec"
	"time"
)

// StormReport is a fault caused during the window (--storm-cmd) and how
// the clients recovered from it, read from the timeline of all URLs.
type StormReport struct {
	Command       string    `json:"command"`
	OffsetSeconds float64   `json:"offset_seconds"` // into the window, as asked
	At            time.Time `json:"at"`             // when the command started
	TookSeconds   float64   `json:"took_seconds"`
	Error         string    `json:"error,omitempty"`

	// SampleSeconds is the timeline's resolution, that of the times below.
	SampleSeconds float64 `json:"sample_seconds"`
	// Serving counts clients with a session that has delivered an event;
	// Connected, those with a session past its response headers.
	// Baseline is the count just before the storm, Low the fewest after
	// it. Recovered99 and Recovered100 are the seconds from the storm
	// until the count was back at 99% and 100% of the baseline for the
	// rest of the window: 0 when it never fell below, absent when it was
	// still below at the window's end.
	Serving   Recovery `json:"serving"`
	Connected Recovery `json:"connected"`

	// Sessions established after the storm until the window's end, over
	// SpanSeconds (from the last sample before the storm to the last with
	// a new session, in whole samples): the reconnect spread is the peak
	// rate against the average. PeakPerS is over one second,
	// PeakSamplePerS over one sample period.
	Sessions       int64      `json:"sessions"`
	SpanSeconds    float64    `json:"span_seconds"`
	AvgPerS        float64    `json:"avg_per_second"`
	PeakPerS       float64    `json:"peak_per_second"`
	PeakSamplePerS float64    `json:"peak_sample_per_second"`
	URLs           []StormURL `json:"urls"`
	// Calm is the latency of the clients the storm did not disconnect
	// (sessions established before it) for the events sent in its first
	// CalmSeconds (--storm-span): what the storm cost those already served.
	Calm        Latency `json:"calm_latency"`
	CalmSeconds float64 `json:"calm_seconds"`
}

// Recovery is how one count came back after the storm.
type Recovery struct {
	Baseline     int64    `json:"baseline"`
	Low          int64    `json:"low"`
	Recovered99  *float64 `json:"recovered_99_seconds,omitempty"`
	Recovered100 *float64 `json:"recovered_100_seconds,omitempty"`
}

// StormURL is what one URL went through after the storm.
type StormURL struct {
	Name string `json:"name"`
	// Clients with a session on it just before the storm and at the
	// window's end.
	ConnectedBefore int64 `json:"connected_before"`
	ConnectedAfter  int64 `json:"connected_after"`
	// Sessions it established after the storm, and their peak rate over
	// one second; the same for its refusals.
	Sessions        int64   `json:"sessions"`
	PeakPerS        float64 `json:"peak_per_second"`
	Refused         int64   `json:"refused"`
	RefusedPeakPerS float64 `json:"refused_peak_per_second"`
}

// run runs the storm command at the given time, its output going to out.
func (s *StormReport) run(ctx context.Context, at time.Time, out io.Writer) {
	if !sleepUntil(ctx, at) {
		s.Error = "the run ended before the storm"
		return
	}
	s.At = time.Now()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", s.Command)
	cmd.Stdout, cmd.Stderr = out, out
	// A command that leaves a process behind holding its output (a node
	// it restarted) must not hold up the run.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	s.TookSeconds = time.Since(s.At).Seconds()
	if err != nil {
		s.Error = err.Error()
	}
}

// analyse fills the recovery figures from the run's timeline, up to the
// window's end t1.
func (s *StormReport) analyse(tl *timeline, urls []namedURL, t1 time.Time) {
	n := tl.samples()
	if s.At.IsZero() || n == 0 {
		return
	}
	s.SampleSeconds = tl.Every.Seconds()
	// kb: the last sample before the storm; ke: the last in the window.
	kb, ke := -1, -1
	for k := range n {
		at := tl.at(k)
		if at.Before(s.At) {
			kb = k
		}
		if !at.After(t1) {
			ke = k
		}
	}
	if kb < 0 || ke <= kb {
		return
	}
	stormAt := s.At
	since := func(k int) float64 { return max(tl.at(k).Sub(stormAt).Seconds(), 0) }

	s.Serving = recovery(tl.total(func(u *urlSeries) []int64 { return u.Serving }), kb, ke, since)
	s.Connected = recovery(tl.total(func(u *urlSeries) []int64 { return u.Connected }), kb, ke, since)

	perSecond := max(1, int(math.Round(float64(time.Second)/float64(tl.Every))))
	windowSeconds := float64(perSecond) * tl.Every.Seconds()
	sessions := tl.total(func(u *urlSeries) []int64 { return u.Sessions })
	s.Sessions = sessions[ke] - sessions[kb]
	s.PeakPerS = peakRate(sessions, kb, ke, perSecond) / windowSeconds
	s.PeakSamplePerS = peakRate(sessions, kb, ke, 1) / s.SampleSeconds
	for k := ke; k > kb; k-- {
		if sessions[k] > sessions[k-1] {
			s.SpanSeconds = float64(k-kb) * s.SampleSeconds
			break
		}
	}
	if s.SpanSeconds > 0 {
		s.AvgPerS = float64(s.Sessions) / s.SpanSeconds
	}
	for i := range tl.URLs {
		u := &tl.URLs[i]
		su := StormURL{
			Name:            urls[i].Name,
			ConnectedBefore: u.Connected[kb], ConnectedAfter: u.Connected[ke],
			Sessions: u.Sessions[ke] - u.Sessions[kb], PeakPerS: peakRate(u.Sessions, kb, ke, perSecond) / windowSeconds,
			Refused: u.Refused[ke] - u.Refused[kb], RefusedPeakPerS: peakRate(u.Refused, kb, ke, perSecond) / windowSeconds,
		}
		s.URLs = append(s.URLs, su)
	}
}

// recovery measures how count came back after the storm: the baseline is
// sample kb, the last before it; the storm's samples run to ke. since(k)
// is the time from the storm to sample k.
func recovery(count []int64, kb, ke int, since func(int) float64) Recovery {
	r := Recovery{Baseline: count[kb], Low: count[kb]}
	for k := kb + 1; k <= ke; k++ {
		r.Low = min(r.Low, count[k])
	}
	r.Recovered99 = backAt(count, kb, ke, int64(math.Ceil(0.99*float64(r.Baseline))), since)
	r.Recovered100 = backAt(count, kb, ke, r.Baseline, since)
	return r
}

// backAt is the time from the storm until count was at least want for the
// rest of samples kb+1..ke: 0 if it never fell below, nil if it ended
// below.
func backAt(count []int64, kb, ke int, want int64, since func(int) float64) *float64 {
	if count[ke] < want {
		return nil
	}
	last := -1 // the last sample below want
	for k := kb + 1; k <= ke; k++ {
		if count[k] < want {
			last = k
		}
	}
	d := 0.0
	if last >= 0 {
		d = since(last + 1)
	}
	return &d
}

// peakRate is the largest increase of a running total over w consecutive
// sample periods, among those that end after sample kb and by ke.
func peakRate(total []int64, kb, ke, w int) float64 {
	var peak int64
	for k := kb + 1; k <= ke; k++ {
		from := max(k-w, kb)
		peak = max(peak, total[k]-total[from])
	}
	return float64(peak)
}
