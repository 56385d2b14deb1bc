package node

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/certs/certstest"
)

// TestBrowserEventSourceOverHTTPS has Chromium's own EventSource read a
// stream from a node over HTTPS with the test's CA trusted: the browser
// speaks HTTP/2 to the node, and gets every event in order.
func TestBrowserEventSourceOverHTTPS(t *testing.T) {
	chromiumPath(t)
	ca := certstest.NewCA(t, "test CA")
	be, n, certFile, _ := httpsNode(t, ca, func(c *Config) { c.CORS.AllowedOrigins = []string{"*"} })
	leaf := certstest.ReadCert(t, certFile)
	spki, err := x509.MarshalPKIXPublicKey(leaf.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(spki)

	// The page reports the first ten events to its own server, whose
	// /wait image holds the page's load (and Chromium's --dump-dom) until
	// then, so the browser exits as soon as it has seen them.
	const want = 10
	var mu sync.Mutex
	var report string
	reported := make(chan struct{})
	var once sync.Once
	page := fmt.Sprintf(`<!doctype html><html><body><img src="/wait"><script>
const es = new EventSource("https://%s%s");
const ids = [];
es.onmessage = e => {
  ids.push(e.lastEventId);
  if (ids.length === %d) { fetch("/report?ids=" + ids.join(",")); es.close(); }
};
es.onerror = () => fetch("/report?error=" + es.readyState);
</script></body></html>`, n.Addr(), streamPath, want)
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, page)
		case "/report":
			mu.Lock()
			report = r.URL.RawQuery
			mu.Unlock()
			once.Do(func() { close(reported) })
		case "/wait":
			select {
			case <-reported:
			case <-time.After(30 * time.Second):
			case <-r.Context().Done():
			}
			w.Header().Set("Content-Type", "image/gif")
			_, _ = w.Write([]byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"))
		}
	}))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if n.Relay().Clients() > 0 {
					be.Publish(streamPath, 1)
				}
			}
		}
	}()
	runChromium(t, "--ignore-certificate-errors-spki-list="+base64.StdEncoding.EncodeToString(sum[:]), "--dump-dom", "http://"+addr+"/")
	close(stop)
	<-done

	mu.Lock()
	got := report
	mu.Unlock()
	ids, ok := strings.CutPrefix(got, "ids=")
	if !ok {
		t.Fatalf("the browser reported %q, want ten event ids", got)
	}
	list := strings.Split(ids, ",")
	first := 0
	fmt.Sscan(list[0], &first)
	if len(list) != want || !slices.Equal(list, seq(first, first+want-1)) {
		t.Fatalf("the browser got ids %v, want %d in a row", list, want)
	}
	if n.h2Requests.Load() == 0 {
		t.Fatalf("the browser's stream request was not HTTP/2 (%d HTTP/1.1 requests)", n.h1Requests.Load())
	}
}
