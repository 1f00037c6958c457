package server

import (
	"path"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tmc-syncer/syncer/modules/engine/clients"
)

func FuzzParseEventPath(f *testing.F) {
	for _, s := range []string{
		"/clusters/root:org:ws/api/v1/namespaces/team-a/events",
		"/clusters/ws/api/v1/namespaces/a/events/web.17a2b",
		"/clusters/*/api/v1/namespaces/a/events",
		"/clusters/ws/api/v1/namespaces/a/../b/events",
		"/clusters/ws/api/v1/namespaces/%FF/events",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := parseEventPath(p)
		if err != nil {
			return
		}
		require.Equal(t, path.Clean(p), p)
		assert.True(t, clients.ValidCluster(got.cluster), "cluster %q", got.cluster)
		for _, s := range []string{got.namespace, got.name} {
			assert.NotContains(t, s, "/")
			assert.False(t, strings.ContainsAny(s, ".:") && s == got.namespace, "namespace %q is a DNS label", s)
		}
	})
}
