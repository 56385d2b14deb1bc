package relay

import (
	"fmt"
	"time"

	"github.com/ssemesh/ssemesh/internal/cfgerr"
)

// Config holds every tunable of the relay: the `relay` section of a node's
// configuration file, where a key that is absent keeps DefaultConfig's
// value and a zero written in the file is a zero (linger: 0s closes a
// stream with its last subscriber). The zero Config is not usable.
type Config struct {
	// MaxEventBytes bounds one upstream line and one event's data. An upstream
	// exceeding it is logged and reconnected; clients never see a cut event.
	MaxEventBytes int `yaml:"max_event_bytes"`
	// Ring buffer per stream: the most recent events kept for Last-Event-ID
	// replay, bounded by count, bytes and age (whichever bites first).
	RingEvents int           `yaml:"ring_events"`
	RingBytes  int64         `yaml:"ring_bytes"`
	RingAge    time.Duration `yaml:"ring_age"`
	// Linger keeps a stream's upstream open this long after its last client
	// left, so a reconnecting crowd does not reopen it.
	Linger time.Duration `yaml:"linger"`
	// Heartbeat is the interval of the comment line written to every client
	// so proxies and load balancers keep the stream open and departed
	// clients are found on idle streams.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// ChildHeartbeat is the heartbeat for subscribers that are other mesh
	// nodes, when shorter than Heartbeat. The interval is announced to
	// them (HeartbeatHeader), and a child takes a parent silent for three
	// of them as gone: a partition between data centres is found in
	// seconds, not at idle_timeout or when TCP's backed-off retransmission
	// gets through.
	ChildHeartbeat time.Duration `yaml:"child_heartbeat"`
	// ClientLagBytes is how far (in bytes) a client may fall behind the newest
	// event before it is disconnected as a slow consumer.
	ClientLagBytes int64 `yaml:"client_lag_bytes"`
	// WriteTimeout bounds one blocking write to a client that could not take
	// data at once; missing it disconnects the client.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// ConnectTimeout bounds waiting for an upstream's response headers.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// ReadyTimeout bounds how long a client waits for a new stream's first
	// upstream answer before it gets 504.
	ReadyTimeout time.Duration `yaml:"ready_timeout"`
	// IdleTimeout: an upstream silent for longer (comments count as traffic)
	// is considered dead and reconnected.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// Backoff between upstream reconnects: jittered exponential from
	// BackoffMin to BackoffMax. An upstream `retry:` field raises the floor.
	BackoffMin time.Duration `yaml:"backoff_min"`
	BackoffMax time.Duration `yaml:"backoff_max"`
	// ConnectRetries is how many times one connect is retried (transport
	// errors and 5xx) before the stream reports the failure.
	ConnectRetries int `yaml:"connect_retries"`
	// CatchUpTimeout bounds fetching events older than the ring from
	// upstream for a client whose Last-Event-ID the ring no longer holds.
	CatchUpTimeout time.Duration `yaml:"catch_up_timeout"`
	// CatchUpPerStream and CatchUpMax bound those fetches running at once,
	// per stream and per relay. Subscribers resuming from the same id share
	// one fetch; a subscriber over the budget gets a gap event instead of
	// one more request upstream.
	CatchUpPerStream int `yaml:"catch_up_per_stream"`
	CatchUpMax       int `yaml:"catch_up_max"`
	// GapEvent is the event type sent to a client whose Last-Event-ID could
	// not be resumed without loss. Empty disables the event; the gap is then
	// only counted (ssemesh_gaps_total) and logged.
	GapEvent string `yaml:"gap_event"`
	// DrainRetry is the retry hint (ms, jittered) sent to clients closed by
	// shutdown, so they come back spread out and elsewhere.
	DrainRetry time.Duration `yaml:"drain_retry"`
	// UserAgent is sent upstream.
	UserAgent string `yaml:"-"`
}

// DefaultConfig returns production defaults.
func DefaultConfig() Config {
	return Config{
		MaxEventBytes:    4 << 20,
		RingEvents:       10000,
		RingBytes:        64 << 20,
		RingAge:          15 * time.Minute,
		Linger:           30 * time.Second,
		Heartbeat:        15 * time.Second,
		ChildHeartbeat:   5 * time.Second,
		ClientLagBytes:   8 << 20,
		WriteTimeout:     10 * time.Second,
		ConnectTimeout:   10 * time.Second,
		ReadyTimeout:     15 * time.Second,
		IdleTimeout:      60 * time.Second,
		BackoffMin:       250 * time.Millisecond,
		BackoffMax:       30 * time.Second,
		ConnectRetries:   3,
		CatchUpTimeout:   5 * time.Second,
		CatchUpPerStream: 4,
		CatchUpMax:       64,
		GapEvent:         "ssemesh-gap",
		DrainRetry:       2 * time.Second,
		UserAgent:        "ssemesh",
	}
}

// Validate names the first bad field, by its key in the relay section.
func (c Config) Validate() error {
	pos := []struct {
		name string
		ok   bool
	}{
		{"max_event_bytes", c.MaxEventBytes >= 1024},
		{"ring_events", c.RingEvents >= 1},
		{"ring_bytes", c.RingBytes >= int64(c.MaxEventBytes)},
		{"ring_age", c.RingAge > 0},
		{"linger", c.Linger >= 0},
		{"heartbeat", c.Heartbeat > 0},
		{"child_heartbeat", c.ChildHeartbeat > 0},
		{"client_lag_bytes", c.ClientLagBytes >= 4096 && c.ClientLagBytes >= int64(c.MaxEventBytes)},
		{"write_timeout", c.WriteTimeout > 0},
		{"connect_timeout", c.ConnectTimeout > 0},
		{"ready_timeout", c.ReadyTimeout > 0},
		{"idle_timeout", c.IdleTimeout > 0},
		{"backoff_min", c.BackoffMin > 0},
		{"backoff_max", c.BackoffMax >= c.BackoffMin},
		{"connect_retries", c.ConnectRetries >= 0},
		{"catch_up_timeout", c.CatchUpTimeout > 0},
		{"catch_up_per_stream", c.CatchUpPerStream >= 1},
		{"catch_up_max", c.CatchUpMax >= c.CatchUpPerStream},
		{"drain_retry", c.DrainRetry >= 0},
	}
	for _, p := range pos {
		if !p.ok {
			return &cfgerr.Error{Key: p.name, Reason: reasonInvalid(p.name, c)}
		}
	}
	return nil
}

func reasonInvalid(name string, c Config) string {
	switch name {
	case "max_event_bytes":
		return fmt.Sprintf("must be at least 1024, got %d", c.MaxEventBytes)
	case "ring_bytes":
		return fmt.Sprintf("must hold at least one maximal event (%d bytes), got %d", c.MaxEventBytes, c.RingBytes)
	case "backoff_max":
		return fmt.Sprintf("must be >= backoff_min (%s), got %s", c.BackoffMin, c.BackoffMax)
	case "catch_up_per_stream":
		return fmt.Sprintf("must be at least 1, got %d", c.CatchUpPerStream)
	case "catch_up_max":
		return fmt.Sprintf("must be >= catch_up_per_stream (%d), got %d", c.CatchUpPerStream, c.CatchUpMax)
	case "client_lag_bytes":
		// Below one maximal event, a single large event would cut every
		// client that is catching up.
		return fmt.Sprintf("must be at least 4096 and at least max_event_bytes (%d), got %d", c.MaxEventBytes, c.ClientLagBytes)
	case "linger", "drain_retry", "connect_retries":
		return "must not be negative"
	}
	return "must be positive"
}
