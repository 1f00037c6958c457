package framework

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMetricSum(t *testing.T) {
	scrape := `# HELP x_total things
# TYPE x_total counter
x_total{resource="configmaps",side="up"} 2
x_total{resource="configmaps",side="down"} 3
x_total{resource="secrets",side="down"} 5
x_total_other 7
y 1.5
`
	for _, tc := range []struct {
		name, metric string
		match        []string
		want         float64
	}{
		{"all samples", "x_total", nil, 10},
		{"one label", "x_total", []string{`side="down"`}, 8},
		{"two labels", "x_total", []string{`resource="configmaps"`, `side="down"`}, 3},
		{"no label match", "x_total", []string{`side="sideways"`}, 0},
		{"a longer name is another metric", "x_total_other", nil, 7},
		{"no labels", "y", nil, 1.5},
		{"absent", "z", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.InDelta(t, tc.want, MetricSum(scrape, tc.metric, tc.match...), 1e-9)
		})
	}
}

func TestHTTPGet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ok" {
			http.Error(w, "nope", http.StatusNotFound)
			return
		}
		_, _ = w.Write([]byte("body"))
	}))
	defer srv.Close()
	body, err := HTTPGet(context.Background(), srv.URL+"/ok")
	require.NoError(t, err)
	assert.Equal(t, "body", body)
	_, err = HTTPGet(context.Background(), srv.URL+"/missing")
	require.ErrorContains(t, err, "404")
}
