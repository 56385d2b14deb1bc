package relay

import (
	"errors"
	"strings"
	"testing"

	"github.com/ssemesh/ssemesh/internal/cfgerr"
	"time"
)

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"MaxEventBytes", c.MaxEventBytes, 4 << 20},
		{"RingEvents", c.RingEvents, 10000},
		{"RingBytes", c.RingBytes, int64(64 << 20)},
		{"RingAge", c.RingAge, 15 * time.Minute},
		{"Linger", c.Linger, 30 * time.Second},
		{"Heartbeat", c.Heartbeat, 15 * time.Second},
		{"ChildHeartbeat", c.ChildHeartbeat, 5 * time.Second},
		{"ClientLagBytes", c.ClientLagBytes, int64(8 << 20)},
		{"WriteTimeout", c.WriteTimeout, 10 * time.Second},
		{"ConnectTimeout", c.ConnectTimeout, 10 * time.Second},
		{"ReadyTimeout", c.ReadyTimeout, 15 * time.Second},
		{"IdleTimeout", c.IdleTimeout, 60 * time.Second},
		{"BackoffMin", c.BackoffMin, 250 * time.Millisecond},
		{"BackoffMax", c.BackoffMax, 30 * time.Second},
		{"ConnectRetries", c.ConnectRetries, 3},
		{"CatchUpTimeout", c.CatchUpTimeout, 5 * time.Second},
		{"GapEvent", c.GapEvent, "ssemesh-gap"},
		{"DrainRetry", c.DrainRetry, 2 * time.Second},
		{"UserAgent", c.UserAgent, "ssemesh"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("DefaultConfig().%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	// Relations the relay relies on beyond Validate: a client may lag by
	// more than one maximal event, and the idle timeout outlasts the
	// heartbeat interval of an upstream ssemesh node.
	if c.ClientLagBytes < int64(c.MaxEventBytes) {
		t.Errorf("ClientLagBytes %d < MaxEventBytes %d: one maximal event would disconnect a resuming client", c.ClientLagBytes, c.MaxEventBytes)
	}
	if c.IdleTimeout <= c.Heartbeat {
		t.Errorf("IdleTimeout %s <= Heartbeat %s: an idle parent node would be dropped between heartbeats", c.IdleTimeout, c.Heartbeat)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		field  string // "" when the config is valid
		detail string // part of the message after the field name
	}{
		{"defaults", func(*Config) {}, "", ""},

		{"max event bytes at minimum", func(c *Config) { c.MaxEventBytes = 1024; c.RingBytes = 1024 }, "", ""},
		{"max event bytes too small", func(c *Config) { c.MaxEventBytes = 1023 }, "max_event_bytes", "must be at least 1024, got 1023"},
		{"max event bytes zero", func(c *Config) { c.MaxEventBytes = 0 }, "max_event_bytes", "got 0"},

		{"ring events one", func(c *Config) { c.RingEvents = 1 }, "", ""},
		{"ring events zero", func(c *Config) { c.RingEvents = 0 }, "ring_events", "must be positive"},

		{"ring bytes equal to max event", func(c *Config) { c.RingBytes = int64(c.MaxEventBytes) }, "", ""},
		{"ring bytes below max event", func(c *Config) { c.MaxEventBytes = 2048; c.RingBytes = 2047 }, "ring_bytes", "must hold at least one maximal event (2048 bytes), got 2047"},

		{"ring age zero", func(c *Config) { c.RingAge = 0 }, "ring_age", "must be positive"},
		{"ring age negative", func(c *Config) { c.RingAge = -time.Second }, "ring_age", "must be positive"},

		{"linger zero", func(c *Config) { c.Linger = 0 }, "", ""},
		{"linger negative", func(c *Config) { c.Linger = -time.Nanosecond }, "linger", "must not be negative"},

		{"heartbeat zero", func(c *Config) { c.Heartbeat = 0 }, "heartbeat", "must be positive"},

		{"client lag at minimum", func(c *Config) { c.MaxEventBytes = 4096; c.ClientLagBytes = 4096 }, "", ""},
		{"client lag too small", func(c *Config) { c.MaxEventBytes = 1024; c.ClientLagBytes = 4095 }, "client_lag_bytes", "must be at least 4096 and at least max_event_bytes (1024), got 4095"},
		{"client lag below one maximal event", func(c *Config) { c.ClientLagBytes = int64(c.MaxEventBytes) - 1 }, "client_lag_bytes", "at least max_event_bytes"},

		{"write timeout zero", func(c *Config) { c.WriteTimeout = 0 }, "write_timeout", "must be positive"},
		{"connect timeout zero", func(c *Config) { c.ConnectTimeout = 0 }, "connect_timeout", "must be positive"},
		{"ready timeout zero", func(c *Config) { c.ReadyTimeout = 0 }, "ready_timeout", "must be positive"},
		{"idle timeout zero", func(c *Config) { c.IdleTimeout = 0 }, "idle_timeout", "must be positive"},
		{"child heartbeat zero", func(c *Config) { c.ChildHeartbeat = 0 }, "child_heartbeat", "must be positive"},

		{"backoff min zero", func(c *Config) { c.BackoffMin = 0 }, "backoff_min", "must be positive"},
		{"backoff max equal to min", func(c *Config) { c.BackoffMin = time.Second; c.BackoffMax = time.Second }, "", ""},
		{"backoff max below min", func(c *Config) { c.BackoffMin = 2 * time.Second; c.BackoffMax = time.Second }, "backoff_max", "must be >= backoff_min (2s), got 1s"},

		{"no connect retries", func(c *Config) { c.ConnectRetries = 0 }, "", ""},
		{"negative connect retries", func(c *Config) { c.ConnectRetries = -1 }, "connect_retries", "must not be negative"},

		{"catch-up timeout zero", func(c *Config) { c.CatchUpTimeout = 0 }, "catch_up_timeout", "must be positive"},

		{"drain retry zero", func(c *Config) { c.DrainRetry = 0 }, "", ""},
		{"drain retry negative", func(c *Config) { c.DrainRetry = -time.Millisecond }, "drain_retry", "must not be negative"},

		{"gap event disabled", func(c *Config) { c.GapEvent = "" }, "", ""},
		{"no user agent", func(c *Config) { c.UserAgent = "" }, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mutate(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var fe *cfgerr.Error
			if !errors.As(err, &fe) {
				t.Fatalf("Validate() = %v, want a *cfgerr.Error for %s", err, tc.field)
			}
			if fe.Key != tc.field {
				t.Fatalf("Validate() names %q, want %q (%v)", fe.Key, tc.field, err)
			}
			if !strings.Contains(fe.Reason, tc.detail) {
				t.Fatalf("Validate() = %q, want it to contain %q", err, tc.detail)
			}
		})
	}
}

func TestConfigValidateNamesFirstBadField(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		field  string
	}{
		{"event size before ring", func(c *Config) { c.MaxEventBytes = 1; c.RingEvents = 0 }, "max_event_bytes"},
		{"ring before timeouts", func(c *Config) { c.RingAge = 0; c.Heartbeat = 0; c.IdleTimeout = 0 }, "ring_age"},
		{"timeouts in order", func(c *Config) { c.IdleTimeout = 0; c.WriteTimeout = 0 }, "write_timeout"},
		{"backoff before drain", func(c *Config) { c.DrainRetry = -1; c.BackoffMin = 0 }, "backoff_min"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mutate(&c)
			var fe *cfgerr.Error
			if err := c.Validate(); !errors.As(err, &fe) || fe.Key != tc.field {
				t.Fatalf("Validate() = %v, want the error for %s", err, tc.field)
			}
		})
	}
}

func TestNewValidatesConfig(t *testing.T) {
	bad := DefaultConfig()
	bad.Heartbeat = 0
	if r, err := New(bad, nil); err == nil {
		r.Close()
		t.Fatal("New accepted a config with heartbeat 0")
	} else if !strings.Contains(err.Error(), "relay.heartbeat") {
		t.Fatalf("New error = %v, want it to name relay.heartbeat", err)
	}

	good := DefaultConfig()
	good.RingEvents = 7
	r, err := New(good, nil)
	if err != nil {
		t.Fatalf("New(valid) = %v", err)
	}
	defer r.Close()
	if got := r.Config(); got != good {
		t.Fatalf("Config() = %+v, want %+v", got, good)
	}
	if r.Streams() != 0 || r.Clients() != 0 || len(r.Keys()) != 0 {
		t.Fatalf("a new relay reports %d streams, %d clients, keys %v", r.Streams(), r.Clients(), r.Keys())
	}
}
