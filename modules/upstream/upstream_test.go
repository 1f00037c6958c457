package upstream

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	metadatafake "k8s.io/client-go/metadata/fake"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

var widgets = schema.GroupVersionResource{Group: "test.tmc.dev", Version: "v1", Resource: "widgets"}

func testConfig() Config {
	scheme := runtime.NewScheme()
	kinds := map[schema.GroupVersionResource]string{widgets: "WidgetList"}
	return Config{
		Target:     identity.NewTarget("root:org", "phys", "st-uid"),
		Resources:  []schema.GroupVersionResource{widgets},
		Upstream:   Clients{Dynamic: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, kinds), Kube: fake.NewClientset()},
		Downstream: Clients{Dynamic: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, kinds), Kube: fake.NewClientset()},
		Mapper:     meta.NewDefaultRESTMapper(nil),
		Registry:   prometheus.NewRegistry(),
	}
}

func TestNewValidates(t *testing.T) {
	tests := map[string]func(*Config){
		"no dynamic clients": func(c *Config) { c.Upstream.Dynamic = nil },
		"no target":          func(c *Config) { c.Target = identity.Target{} },
		"no kube clients":    func(c *Config) { c.Downstream.Kube = nil },
		"bad event options":  func(c *Config) { c.Options.Events.API = "nope" },
		"no status sync target name": func(c *Config) {
			c.Target.Name = ""
		},
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig()
			mutate(&cfg)
			_, err := New(cfg)
			require.Error(t, err)
		})
	}
}

func TestNewWithoutEvents(t *testing.T) {
	cfg := testConfig()
	cfg.Options.DisableEvents = true
	cfg.Downstream.Kube = nil
	s, err := New(cfg)
	require.NoError(t, err)
	assert.NotNil(t, s.Status())
	assert.Nil(t, s.Events())
}

func TestRunStartsAndStops(t *testing.T) {
	cfg := testConfig()
	scheme := runtime.NewScheme()
	require.NoError(t, metav1.AddMetaToScheme(scheme))
	cfg.Downstream.Metadata = metadatafake.NewSimpleMetadataClient(scheme)
	cfg.Mapper = nil // discovery of the fake clientset
	s, err := New(cfg)
	require.NoError(t, err)
	require.NotNil(t, s.Events())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	require.Eventually(t, s.Synced, 10*time.Second, 10*time.Millisecond, "both controllers sync their caches")
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		require.Fail(t, "Run did not return after cancel")
	}
}

func TestStatusIsSyncedOnlyForResourcesThatHaveOne(t *testing.T) {
	tests := map[string]struct {
		in, want []schema.GroupVersionResource
	}{
		"built-ins without status are left out": {
			in: []schema.GroupVersionResource{
				{Version: "v1", Resource: "configmaps"}, {Version: "v1", Resource: "secrets"}, {Version: "v1", Resource: "serviceaccounts"},
				{Group: "apps", Version: "v1", Resource: "deployments"}, {Version: "v1", Resource: "services"},
			},
			want: []schema.GroupVersionResource{{Group: "apps", Version: "v1", Resource: "deployments"}, {Version: "v1", Resource: "services"}},
		},
		"a CRD named like a built-in keeps its status": {
			in:   []schema.GroupVersionResource{{Group: "example.dev", Version: "v1", Resource: "configmaps"}},
			want: []schema.GroupVersionResource{{Group: "example.dev", Version: "v1", Resource: "configmaps"}},
		},
		"none": {in: nil, want: []schema.GroupVersionResource{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, WithStatus(tc.in))
		})
	}
}
