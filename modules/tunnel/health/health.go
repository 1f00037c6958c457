// Package health serves /livez, /readyz and /healthz (an alias of /readyz)
// the way kube-apiserver does: each endpoint runs its named checks, answers
// 200 "ok" or 500, and with ?verbose lists every check as "[+]name ok" or
// "[-]name failed: reason". /livez/<name> and /readyz/<name> run one check;
// ?exclude=<name> skips one.
package health

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// CheckFunc returns nil when healthy and an error saying why not otherwise.
type CheckFunc func(ctx context.Context) error

// Check is a named check.
type Check struct {
	Name  string
	Check CheckFunc
}

// Handler serves the health endpoints. Checks can be added while serving.
type Handler struct {
	timeout time.Duration

	mu     sync.RWMutex
	livez  []Check
	readyz []Check
}

var _ http.Handler = (*Handler)(nil)

// DefaultTimeout bounds each check.
const DefaultTimeout = 5 * time.Second

// NewHandler returns a Handler with a "ping" liveness and readiness check
// (the process answers).
func NewHandler() *Handler {
	ping := Check{Name: "ping", Check: func(context.Context) error { return nil }}
	return &Handler{timeout: DefaultTimeout, livez: []Check{ping}, readyz: []Check{ping}}
}

// AddLivez adds liveness checks: a failing one means restart the process.
func (h *Handler) AddLivez(checks ...Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.livez = append(h.livez, checks...)
}

// AddReadyz adds readiness checks: a failing one means do not rely on the
// process right now.
func (h *Handler) AddReadyz(checks ...Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.readyz = append(h.readyz, checks...)
}

// ServeHTTP implements http.Handler for /livez, /readyz, /healthz and their
// /<check> sub-paths.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	endpoint, one, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	h.mu.RLock()
	var checks []Check
	switch endpoint {
	case "livez":
		checks = append(checks, h.livez...)
	case "readyz", "healthz":
		checks = append(checks, h.readyz...)
	default:
		h.mu.RUnlock()
		http.NotFound(w, r)
		return
	}
	h.mu.RUnlock()
	if one != "" {
		var found []Check
		for _, c := range checks {
			if c.Name == one {
				found = append(found, c)
			}
		}
		if len(found) == 0 {
			http.Error(w, fmt.Sprintf("no %s check %q", endpoint, one), http.StatusNotFound)
			return
		}
		checks = found
	}
	excluded := map[string]bool{}
	for _, e := range r.URL.Query()["exclude"] {
		excluded[e] = true
	}
	results := h.run(r.Context(), checks, excluded)
	failed := false
	var b strings.Builder
	for _, res := range results {
		switch {
		case res.excluded:
			fmt.Fprintf(&b, "[+]%s excluded: ok\n", res.name)
		case res.err != nil:
			failed = true
			fmt.Fprintf(&b, "[-]%s failed: %s\n", res.name, oneLine(res.err.Error()))
		default:
			fmt.Fprintf(&b, "[+]%s ok\n", res.name)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	_, verbose := r.URL.Query()["verbose"]
	switch {
	case failed:
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "%s%s check failed\n", b.String(), endpoint)
	case verbose:
		fmt.Fprintf(w, "%s%s check passed\n", b.String(), endpoint)
	default:
		fmt.Fprint(w, "ok")
	}
}

type result struct {
	name     string
	err      error
	excluded bool
}

// run runs the checks concurrently, each bounded by the timeout.
func (h *Handler) run(ctx context.Context, checks []Check, excluded map[string]bool) []result {
	out := make([]result, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		out[i].name = c.Name
		if excluded[c.Name] {
			out[i].excluded = true
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, h.timeout)
			defer cancel()
			out[i].err = c.Check(cctx)
		})
	}
	wg.Wait()
	return out
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// ---- checks ----

// Synced fails until every hasSynced func returns true (informers synced).
func Synced(name string, hasSynced ...func() bool) Check {
	return Check{Name: name, Check: func(context.Context) error {
		for _, f := range hasSynced {
			if !f() {
				return errors.New("informers not synced yet")
			}
		}
		return nil
	}}
}

// Pinger reaches a remote endpoint; it returns nil when the endpoint answered.
type Pinger func(ctx context.Context) error

// Reachable fails when ping fails, with its error as the reason (e.g. the
// upstream API server through the tunnel).
func Reachable(name string, ping Pinger) Check {
	return Check{Name: name, Check: func(ctx context.Context) error {
		if err := ping(ctx); err != nil {
			return fmt.Errorf("unreachable: %w", err)
		}
		return nil
	}}
}

// TunnelStater is the tunnel client's view of its connection; *client.Client implements it.
type TunnelStater interface {
	State() tunnel.State
}

// TunnelConnected fails while the tunnel client is not connected, naming its state.
func TunnelConnected(c TunnelStater) Check {
	return Check{Name: "tunnel", Check: func(context.Context) error {
		if s := c.State(); s != tunnel.StateConnected {
			return fmt.Errorf("tunnel not connected (state %s)", s)
		}
		return nil
	}}
}

// Watchdog detects wedged workers: each worker loop calls Beat; the check
// fails when no beat arrived within the limit while work was pending.
type Watchdog struct {
	clock   clock.PassiveClock
	limit   time.Duration
	pending func() int

	mu   sync.Mutex
	last time.Time
}

// NewWatchdog returns a Watchdog; pending returns the amount of queued work
// (nil means always some), clk nil means real time.
func NewWatchdog(limit time.Duration, pending func() int, clk clock.PassiveClock) *Watchdog {
	if clk == nil {
		clk = clock.RealClock{}
	}
	if pending == nil {
		pending = func() int { return 1 }
	}
	return &Watchdog{clock: clk, limit: limit, pending: pending, last: clk.Now()}
}

// Beat records progress.
func (d *Watchdog) Beat() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.last = d.clock.Now()
}

// Check is a liveness check named "workers".
func (d *Watchdog) Check() Check {
	return Check{Name: "workers", Check: func(context.Context) error {
		d.mu.Lock()
		since := d.clock.Since(d.last)
		d.mu.Unlock()
		if n := d.pending(); n > 0 && since > d.limit {
			return fmt.Errorf("workers made no progress for %s with %d items pending", since.Round(time.Second), n)
		}
		return nil
	}}
}

// Names returns the names of the checks of an endpoint ("livez" or
// "readyz"), sorted, for logs.
func (h *Handler) Names(endpoint string) []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	src := h.readyz
	if endpoint == "livez" {
		src = h.livez
	}
	out := make([]string, 0, len(src))
	for _, c := range src {
		out = append(out, c.Name)
	}
	sort.Strings(out)
	return out
}

// RESTPinger returns a Pinger that GETs path (e.g. "/version") with c, e.g.
// the upstream client whose Dial goes through the tunnel.
func RESTPinger(c rest.Interface, path string) Pinger {
	return func(ctx context.Context) error {
		if err := c.Get().AbsPath(path).Do(ctx).Error(); err != nil {
			return fmt.Errorf("GET %s: %w", path, err)
		}
		return nil
	}
}

// Closed adapts a channel closed once ready (e.g. Engine.Ready()) to a
// hasSynced func for Synced.
func Closed(ch <-chan struct{}) func() bool {
	return func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
}

// Cached reuses c's result, success or failure, for ttl: a probe or a scrape of /readyz
// then costs no request to what c checks (e.g. the upstream API server). Concurrent calls
// share one run. clk nil means real time.
func Cached(c Check, ttl time.Duration, clk clock.PassiveClock) Check {
	if clk == nil {
		clk = clock.RealClock{}
	}
	cc := &cachedCheck{check: c.Check, ttl: ttl, clock: clk}
	return Check{Name: c.Name, Check: cc.run}
}

type cachedCheck struct {
	check CheckFunc
	ttl   time.Duration
	clock clock.PassiveClock
	group singleflight.Group

	mu   sync.Mutex
	at   time.Time
	err  error
	done bool
}

// fresh returns the cached result while it is within the TTL.
func (c *cachedCheck) fresh() (error, bool) { //nolint:revive // (result, ok) reads best here
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done && c.clock.Since(c.at) < c.ttl {
		return c.err, true
	}
	return nil, false
}

func (c *cachedCheck) run(ctx context.Context) error {
	if err, ok := c.fresh(); ok {
		return err
	}
	_, err, _ := c.group.Do("", func() (any, error) {
		// A flight that ended between the look above and this one has just stored a
		// result: use it rather than asking again.
		if err, ok := c.fresh(); ok {
			return nil, err
		}
		err := c.check(ctx)
		c.mu.Lock()
		c.at, c.err, c.done = c.clock.Now(), err, true
		c.mu.Unlock()
		return nil, err
	})
	return err // the check's own error, as if uncached
}
