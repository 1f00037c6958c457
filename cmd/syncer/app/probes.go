package app

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/tmc-syncer/syncer/modules/engine/engine"
	tunnelclient "github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/upstream"
)

// probes answers /livez, /readyz and /healthz from the components' own state.
type probes struct {
	tunnel *tunnelclient.Client

	mu       sync.Mutex
	engine   *engine.Engine
	upstream *upstream.Syncer
}

func (p *probes) setEngine(e *engine.Engine) { p.mu.Lock(); p.engine = e; p.mu.Unlock() }

func (p *probes) setUpstream(s *upstream.Syncer) { p.mu.Lock(); p.upstream = s; p.mu.Unlock() }

// managedNamespace reports whether a downstream namespace is one this syncer
// created (it carries our locator); the tunnel serves pod requests only there.
func (p *probes) managedNamespace(ns string) bool {
	p.mu.Lock()
	eng := p.engine
	p.mu.Unlock()
	if eng == nil {
		return false
	}
	_, _, ok, err := eng.Informers().UpstreamNamespace(ns)
	return ok && err == nil
}

// readiness runs the named checks; an empty string means the check passed.
func (p *probes) readiness() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	checks := map[string]string{}
	if p.engine == nil {
		checks["engine"] = "not started (waiting for the SyncTarget or the leader lease)"
	} else {
		select {
		case <-p.engine.Ready():
			checks["informers-synced"] = ""
		default:
			checks["informers-synced"] = "informers not synced yet"
		}
	}
	if p.upstream != nil {
		checks["upstream-synced"] = ""
		if !p.upstream.Synced() {
			checks["upstream-synced"] = "status and event caches not synced yet"
		}
	}
	if p.tunnel != nil {
		if st := p.tunnel.State(); st.String() != "Connected" {
			checks["tunnel"] = "tunnel " + st.String()
		} else {
			checks["tunnel"] = ""
		}
	}
	return checks
}

func (p *probes) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = fmt.Fprint(w, "ok") })
	ready := func(w http.ResponseWriter, r *http.Request) {
		checks := p.readiness()
		names := make([]string, 0, len(checks))
		for n := range checks {
			names = append(names, n)
		}
		sort.Strings(names)
		var b strings.Builder
		failed := false
		for _, n := range names {
			if reason := checks[n]; reason != "" {
				failed = true
				fmt.Fprintf(&b, "[-]%s failed: %s\n", n, reason)
			} else {
				fmt.Fprintf(&b, "[+]%s ok\n", n)
			}
		}
		if failed {
			w.WriteHeader(http.StatusInternalServerError)
		}
		if _, verbose := r.URL.Query()["verbose"]; verbose || failed {
			_, _ = fmt.Fprint(w, b.String())
		}
		if failed {
			_, _ = fmt.Fprint(w, "readyz check failed\n")
			return
		}
		_, _ = fmt.Fprint(w, "ok")
	}
	mux.HandleFunc("/readyz", ready)
	mux.HandleFunc("/healthz", ready)
	return mux
}
