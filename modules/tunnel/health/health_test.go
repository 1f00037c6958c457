package health

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

type stater struct{ s tunnel.State }

func (s stater) State() tunnel.State { return s.s }

func get(t *testing.T, h http.Handler, target string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	body, err := io.ReadAll(rec.Result().Body)
	require.NoError(t, err)
	return rec.Code, string(body)
}

func TestHandlerVerboseOutput(t *testing.T) {
	synced := false
	h := NewHandler()
	h.AddLivez(Check{Name: "workers", Check: func(context.Context) error { return nil }})
	h.AddReadyz(
		Synced("informers", func() bool { return synced }),
		Reachable("upstream", func(context.Context) error { return errors.New("dial tcp 127.0.0.1:6443: connection refused") }),
		TunnelConnected(stater{tunnel.StateBackoff}),
	)
	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/livez", 200, "ok"},
		{"/livez?verbose", 200, "[+]ping ok\n[+]workers ok\nlivez check passed\n"},
		{"/readyz", 500, "[+]ping ok\n[-]informers failed: informers not synced yet\n" +
			"[-]upstream failed: unreachable: dial tcp 127.0.0.1:6443: connection refused\n" +
			"[-]tunnel failed: tunnel not connected (state Backoff)\nreadyz check failed\n"},
		{"/healthz?verbose", 500, "[+]ping ok\n[-]informers failed: informers not synced yet\n" +
			"[-]upstream failed: unreachable: dial tcp 127.0.0.1:6443: connection refused\n" +
			"[-]tunnel failed: tunnel not connected (state Backoff)\nhealthz check failed\n"},
		{"/readyz?exclude=upstream&exclude=tunnel&exclude=informers", 200, "ok"},
		{"/readyz?verbose&exclude=upstream&exclude=tunnel&exclude=informers", 200,
			"[+]ping ok\n[+]informers excluded: ok\n[+]upstream excluded: ok\n[+]tunnel excluded: ok\nreadyz check passed\n"},
		{"/readyz/tunnel", 500, "[-]tunnel failed: tunnel not connected (state Backoff)\nreadyz check failed\n"},
		{"/readyz/ping", 200, "ok"},
		{"/readyz/nope", 404, "no readyz check \"nope\"\n"},
		{"/other", 404, "404 page not found\n"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			code, body := get(t, h, tc.path)
			assert.Equal(t, tc.code, code)
			assert.Equal(t, tc.body, body)
		})
	}
	synced = true
	h2 := NewHandler()
	h2.AddReadyz(Synced("informers", func() bool { return synced }), TunnelConnected(stater{tunnel.StateConnected}))
	code, body := get(t, h2, "/readyz?verbose")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "[+]ping ok\n[+]informers ok\n[+]tunnel ok\nreadyz check passed\n", body)
	assert.Equal(t, []string{"informers", "ping", "tunnel"}, h2.Names("readyz"))

	rec := httptest.NewRecorder()
	h2.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/readyz", nil))
	assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)
}

func TestCheckTimeout(t *testing.T) {
	h := NewHandler()
	h.timeout = 20 * time.Millisecond
	h.AddReadyz(Check{Name: "slow", Check: func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}})
	code, body := get(t, h, "/readyz")
	assert.Equal(t, http.StatusInternalServerError, code)
	assert.Contains(t, body, "[-]slow failed: context deadline exceeded")
}

func TestWatchdogDetectsWedgedWorkers(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	pending := 3
	d := NewWatchdog(time.Minute, func() int { return pending }, clk)
	check := d.Check().Check
	require.NoError(t, check(context.Background()))
	clk.SetTime(clk.Now().Add(61 * time.Second))
	require.EqualError(t, check(context.Background()), "workers made no progress for 1m1s with 3 items pending")
	pending = 0
	require.NoError(t, check(context.Background()), "idle workers are not wedged")
	pending = 1
	d.Beat()
	require.NoError(t, check(context.Background()))
}

func TestClosed(t *testing.T) {
	ch := make(chan struct{})
	f := Closed(ch)
	assert.False(t, f())
	close(ch)
	assert.True(t, f())
}

func TestCachedCheckCostsOneRunPerTTLWhateverTheProbes(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	var runs atomic.Int64
	var fail atomic.Bool
	c := Cached(Reachable("upstream", func(context.Context) error {
		runs.Add(1)
		if fail.Load() {
			return errors.New("down")
		}
		return nil
	}), 15*time.Second, clk)
	h := NewHandler()
	h.AddReadyz(c)
	probe := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code
	}

	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { assert.Equal(t, http.StatusOK, probe()) })
	}
	wg.Wait()
	assert.EqualValues(t, 1, runs.Load(), "fifty probes, one upstream request")

	fail.Store(true)
	clk.SetTime(clk.Now().Add(14 * time.Second))
	assert.Equal(t, http.StatusOK, probe(), "within the TTL the last result stands")
	assert.EqualValues(t, 1, runs.Load())
	clk.SetTime(clk.Now().Add(time.Second))
	assert.Equal(t, http.StatusInternalServerError, probe())
	assert.Equal(t, http.StatusInternalServerError, probe(), "a failure is cached too")
	assert.EqualValues(t, 2, runs.Load())
}
