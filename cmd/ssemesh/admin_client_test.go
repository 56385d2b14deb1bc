package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// seenRequest is what the test server saw of one request.
type seenRequest struct {
	method, path, query, auth string
}

func TestAdminClientGet(t *testing.T) {
	long := strings.Repeat("x", 400)
	tests := []struct {
		name string
		// handler answers the request; nil means nobody listens at the
		// address.
		handler http.HandlerFunc
		token   string
		path    string
		query   url.Values
		also    []int
		timeout time.Duration
		// decode asks through getJSON instead of get.
		decode bool

		wantCode int
		wantBody string
		wantJSON string
		wantErr  []string // substrings of the error; none means success
		wantAuth string
		timedOut bool
	}{
		{
			name: "success with query and token",
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, "tree text\n")
			},
			token:    "secret",
			path:     "/v1/topology",
			query:    url.Values{"format": {"text"}, "stream": {"/feeds/a?x=1"}},
			wantCode: http.StatusOK,
			wantBody: "tree text\n",
			wantAuth: "Bearer secret",
		},
		{
			name: "success without token sends no header",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusNoContent)
			},
			path:     "/v1/nodes",
			wantCode: http.StatusNoContent,
		},
		{
			name: "getJSON decodes the answer",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, `{"node":"n1"}`)
			},
			token:    "secret",
			path:     "/v1/streams",
			decode:   true,
			wantJSON: "n1",
			wantAuth: "Bearer secret",
		},
		{
			name: "getJSON names the path it could not decode",
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, "not json")
			},
			path:    "/v1/streams",
			decode:  true,
			wantErr: []string{"admin: decoding /v1/streams:", "invalid character"},
		},
		{
			name: "non-2xx with a JSON error body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, `{"error":"stream \"/feeds/none\" is not in the topology report"}`)
			},
			path:     "/v1/topology",
			wantCode: http.StatusNotFound,
			wantErr:  []string{"admin: GET http://", "/v1/topology: 404 Not Found: stream \"/feeds/none\" is not in the topology report"},
		},
		{
			name: "non-2xx with a plain body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "  upstream broke  ", http.StatusBadGateway)
			},
			path:     "/v1/streams",
			wantCode: http.StatusBadGateway,
			wantErr:  []string{"/v1/streams: 502 Bad Gateway: upstream broke"},
		},
		{
			name: "non-2xx with a long body is shortened",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, long, http.StatusInternalServerError)
			},
			path:     "/v1/streams",
			wantCode: http.StatusInternalServerError,
			wantErr:  []string{"500 Internal Server Error: " + long[:300] + "..."},
		},
		{
			name: "401 hints at the token",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			},
			token:    "wrong",
			path:     "/v1/nodes",
			wantCode: http.StatusUnauthorized,
			wantErr:  []string{"401 Unauthorized: unauthorized", "(give the node's admin.token with --token or $" + adminTokenEnv + ")"},
			wantAuth: "Bearer wrong",
		},
		{
			name: "a listed non-2xx code is an answer",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprint(w, `{"status":"draining"}`)
			},
			path:     "/readyz",
			also:     []int{http.StatusServiceUnavailable},
			wantCode: http.StatusServiceUnavailable,
			wantBody: `{"status":"draining"}`,
		},
		{
			name:    "nobody listening",
			path:    "/v1/nodes",
			wantErr: []string{"admin: GET http://127.0.0.1:", "/v1/nodes:"},
		},
		{
			name: "timeout",
			handler: func(w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
			},
			path:     "/v1/topology",
			timeout:  200 * time.Millisecond,
			wantErr:  []string{"admin: GET http://127.0.0.1:", "/v1/topology:"},
			timedOut: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(adminTokenEnv, "")
			seen := make(chan seenRequest, 1)
			var addr string
			if tc.handler != nil {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					seen <- seenRequest{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization")}
					tc.handler(w, r)
				}))
				t.Cleanup(srv.Close)
				addr = srv.Listener.Addr().String()
			} else {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr = ln.Addr().String()
				if err := ln.Close(); err != nil {
					t.Fatal(err)
				}
			}

			c, err := (&adminFlags{admin: addr, token: tc.token}).client()
			if err != nil {
				t.Fatal(err)
			}
			if tc.timeout > 0 {
				c.http.Timeout = tc.timeout
			}

			var (
				code int
				body []byte
				got  struct {
					Node string `json:"node"`
				}
			)
			if tc.decode {
				err = c.getJSON(t.Context(), tc.path, &got)
			} else {
				code, body, err = c.get(t.Context(), tc.path, tc.query, tc.also...)
			}

			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error; code %d, body %q", code, body)
				}
				msg := err.Error()
				wants := tc.wantErr
				if !tc.decode {
					// Errors of the request itself name the node; decoding
					// errors name the path only.
					wants = append([]string{addr}, wants...)
				}
				for _, want := range wants {
					if !strings.Contains(msg, want) {
						t.Errorf("error lacks %q: %s", want, msg)
					}
				}
				if body != nil {
					t.Errorf("body %q returned with an error", body)
				}
			} else if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if code != tc.wantCode {
				t.Errorf("code %d, want %d", code, tc.wantCode)
			}
			if !tc.decode && err == nil && string(body) != tc.wantBody {
				t.Errorf("body %q, want %q", body, tc.wantBody)
			}
			if got.Node != tc.wantJSON {
				t.Errorf("decoded node %q, want %q", got.Node, tc.wantJSON)
			}
			if tc.timedOut {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Errorf("error is not a timeout: %v", err)
				}
			}

			if tc.handler == nil {
				return
			}
			select {
			case r := <-seen:
				if r.method != http.MethodGet {
					t.Errorf("method %s, want GET", r.method)
				}
				if r.path != tc.path {
					t.Errorf("path %q, want %q", r.path, tc.path)
				}
				if r.query != tc.query.Encode() {
					t.Errorf("query %q, want %q", r.query, tc.query.Encode())
				}
				if r.auth != tc.wantAuth {
					t.Errorf("Authorization %q, want %q", r.auth, tc.wantAuth)
				}
			default:
				t.Error("the server saw no request")
			}
		})
	}
}

// TestAdminClientTokenFromEnvironment checks that $SSEMESH_ADMIN_TOKEN is
// sent when --token is not given, and that --token wins over it.
func TestAdminClientTokenFromEnvironment(t *testing.T) {
	seen := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Authorization")
	}))
	t.Cleanup(srv.Close)
	t.Setenv(adminTokenEnv, "from-env")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "Bearer from-env"},
		{[]string{"--token", "from-flag"}, "Bearer from-flag"},
	} {
		var a adminFlags
		fs := flag.NewFlagSet("status", flag.ContinueOnError)
		a.register(fs)
		if err := parseFlags(fs, append([]string{"--admin", srv.URL + "/"}, tc.args...), &statusCommand, io.Discard, os.LookupEnv); err != nil {
			t.Fatal(err)
		}
		c, err := a.client()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.get(t.Context(), "/v1/nodes", nil); err != nil {
			t.Fatal(err)
		}
		if got := <-seen; got != tc.want {
			t.Errorf("%v: Authorization %q, want %q", tc.args, got, tc.want)
		}
	}
}
