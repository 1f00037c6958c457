package app

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestTunnelServerStatusAndMetricsAreOnlyOnTheInternalListener(t *testing.T) {
	named := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, name) })
	}
	public, internal := tunnelServerHandlers(named("page"), named("metrics"), named("checks"))
	for _, tc := range []struct {
		path                 string
		wantPublic, wantHere string // "" = 404
	}{
		{path: "/status", wantHere: "page"},
		{path: "/status.json", wantHere: "page"},
		{path: "/metrics", wantHere: "metrics"},
		{path: "/readyz", wantPublic: "checks", wantHere: "checks"},
		{path: "/livez", wantPublic: "checks", wantHere: "checks"},
		{path: "/healthz", wantPublic: "checks", wantHere: "checks"},
	} {
		for _, side := range []struct {
			name string
			h    http.Handler
			want string
		}{{"public", public, tc.wantPublic}, {"internal", internal, tc.wantHere}} {
			rec := httptest.NewRecorder()
			side.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
			if side.want == "" {
				assert.Equal(t, http.StatusNotFound, rec.Code, "%s %s", side.name, tc.path)
				continue
			}
			assert.Equal(t, side.want, rec.Body.String(), "%s %s", side.name, tc.path)
		}
	}
}
