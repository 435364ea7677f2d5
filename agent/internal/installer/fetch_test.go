package installer

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/layout"
)

// serveBuild serves the rig's build folder over HTTPS; handler, if set,
// answers instead for the paths it takes.
func serveBuild(t *testing.T, r *updateRig, handler func(w http.ResponseWriter, req *http.Request) bool) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, layout.BuildSystem), r.system, 0o644)
	for _, s := range layout.Slots() {
		os.WriteFile(filepath.Join(dir, layout.BuildUKI(s)), r.ukis[s], 0o644)
	}
	files := http.StripPrefix("/builds/next/", http.FileServer(http.Dir(dir)))
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if handler != nil && handler(w, req) {
			return
		}
		files.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// An update naming a URL is fetched over HTTPS and written as a
// streamed one is: slot B and BootNext.
func TestUpdateFetchedOverHTTPS(t *testing.T) {
	r := newUpdateRig(t, nil)
	srv := serveBuild(t, r, nil)
	r.inst.Client = srv.Client()
	m := r.request(false)
	m.Url = srv.URL + "/builds/next"
	r.inst.HandleUpdate(m)
	if e := r.next(t); e.GetState() != apiv1.UpdateState_UPDATE_STATE_RECEIVING {
		t.Fatalf("first event %v, want RECEIVING", e)
	}
	var e *apiv1.UpdateEvent
	for e = r.next(t); e.GetState() == apiv1.UpdateState_UPDATE_STATE_RECEIVING; e = r.next(t) {
	}
	if e.GetState() != apiv1.UpdateState_UPDATE_STATE_REBOOTING || e.GetBytes() != int64(len(r.system)+len(r.ukis[layout.SlotB])) {
		t.Fatalf("last event %v, want REBOOTING with every byte", e)
	}
	if uki, _ := os.ReadFile(filepath.Join(r.inst.ESP, layout.SlotUKI(layout.SlotB))); string(uki) != string(r.ukis[layout.SlotB]) {
		t.Error("slot B's UKI is not on the ESP")
	}
	select {
	case <-r.inst.Done():
	case <-time.After(time.Minute):
		t.Fatal("Done not closed after a fetched update")
	}
}

// A fetch that fails, or fetches the wrong bytes, fails the update and
// says why; the next update still works.
func TestUpdateFetchRefusals(t *testing.T) {
	fetchIdle = time.Second
	defer func() { fetchIdle = FetchIdle }()
	for name, tc := range map[string]struct {
		url     func(srv *httptest.Server) string
		handler func(w http.ResponseWriter, req *http.Request) bool
		client  bool
		want    string
	}{
		"no CA roots": {url: func(s *httptest.Server) string { return s.URL + "/builds/next" }, want: "no CA roots"},
		"plain HTTP": {url: func(s *httptest.Server) string { return "http://" + s.Listener.Addr().String() + "/builds/next" }, client: true,
			want: "want https://"},
		"missing file": {url: func(s *httptest.Server) string { return s.URL + "/builds/other" }, client: true, want: "404"},
		"other bytes": {url: func(s *httptest.Server) string { return s.URL + "/builds/next" }, client: true, want: "SHA-256",
			handler: func(w http.ResponseWriter, req *http.Request) bool {
				if !strings.HasSuffix(req.URL.Path, layout.BuildSystem) {
					return false
				}
				w.Write(make([]byte, 5*mib+17))
				return true
			}},
		"short": {url: func(s *httptest.Server) string { return s.URL + "/builds/next" }, client: true, want: "bytes",
			handler: func(w http.ResponseWriter, req *http.Request) bool {
				if !strings.HasSuffix(req.URL.Path, layout.BuildSystem) {
					return false
				}
				w.Write(make([]byte, 1000))
				return true
			}},
		"stalled": {url: func(s *httptest.Server) string { return s.URL + "/builds/next" }, client: true, want: "context canceled",
			handler: func(w http.ResponseWriter, req *http.Request) bool {
				if !strings.HasSuffix(req.URL.Path, layout.BuildSystem) {
					return false
				}
				w.Header().Set("Content-Length", "5243009")
				w.Write(make([]byte, 1000))
				w.(http.Flusher).Flush()
				<-req.Context().Done() // the node gives up
				return true
			}},
		"redirect to HTTP": {url: func(s *httptest.Server) string { return s.URL + "/builds/next" }, client: true, want: "not HTTPS",
			handler: func(w http.ResponseWriter, req *http.Request) bool {
				http.Redirect(w, req, "http://example.invalid/system.img", http.StatusFound)
				return true
			}},
	} {
		t.Run(name, func(t *testing.T) {
			r := newUpdateRig(t, nil)
			srv := serveBuild(t, r, tc.handler)
			if tc.client {
				c := srv.Client()
				c.CheckRedirect = httpsOnly
				r.inst.Client = c
			}
			m := r.request(false)
			m.Url = tc.url(srv)
			r.inst.HandleUpdate(m)
			var e *apiv1.UpdateEvent
			for e = r.next(t); e.GetState() == apiv1.UpdateState_UPDATE_STATE_RECEIVING; e = r.next(t) {
			}
			if e.GetState() != apiv1.UpdateState_UPDATE_STATE_FAILED || !strings.Contains(e.GetReason(), tc.want) {
				t.Fatalf("event %v, want FAILED naming %q", e, tc.want)
			}
			if _, err := os.Stat(filepath.Join(r.inst.ESP, layout.SlotUKI(layout.SlotB))); err == nil {
				t.Error("a failed fetch left slot B's UKI on the ESP")
			}
			// The node takes the next update, streamed.
			r.inst.HandleUpdate(r.request(false))
			if e := r.next(t); e.GetState() != apiv1.UpdateState_UPDATE_STATE_RECEIVING {
				t.Fatalf("the next update: %v", e)
			}
			r.send(layout.SlotB)
			if e := r.next(t); e.GetState() != apiv1.UpdateState_UPDATE_STATE_REBOOTING {
				t.Fatalf("the next update's last event %v, want REBOOTING", e)
			}
		})
	}
}
