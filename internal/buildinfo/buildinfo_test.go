package buildinfo

import (
	"runtime"
	"strings"
	"testing"
)

func TestGet(t *testing.T) {
	i := Get()
	if i.Version == "" || i.GoVersion != runtime.Version() || i.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Fatalf("Get() = %+v", i)
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		in   Info
		want string
	}{
		{Info{Version: "dev", GoVersion: "go1.26.8", Platform: "linux/amd64"}, "ssemesh dev go1.26.8 linux/amd64"},
		{Info{Version: "v1.4.0", Revision: "0123456789abcdef0123", Time: "2026-12-01T10:00:00Z", GoVersion: "go1.26.8", Platform: "linux/arm64"},
			"ssemesh v1.4.0 (commit 0123456789ab, 2026-12-01T10:00:00Z) go1.26.8 linux/arm64"},
		{Info{Version: "v1.4.0-3-gabc", Revision: "abc", Modified: true, GoVersion: "go1.26.8", Platform: "linux/amd64"},
			"ssemesh v1.4.0-3-gabc (commit abc, modified) go1.26.8 linux/amd64"},
	}
	for _, tc := range tests {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
	if !strings.HasPrefix(Get().String(), "ssemesh ") {
		t.Fatal("String of the running build lacks the name")
	}
}
