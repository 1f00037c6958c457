package clients

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"
)

func TestConfigureAppliesDefaultsAndDialer(t *testing.T) {
	base := &rest.Config{Host: "https://example"}
	cfg := Configure(base, Options{})
	assert.InDelta(t, 30, cfg.QPS, 0)
	assert.Equal(t, 20, cfg.Burst)
	assert.Equal(t, "tmc-syncer/dev", cfg.UserAgent)
	assert.Nil(t, cfg.Dial)
	assert.Empty(t, base.UserAgent, "the input config is not modified")

	dialErr := errors.New("via tunnel")
	cfg = Configure(base, Options{QPS: 5, Burst: 7, Version: "v1.2.3", Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, dialErr
	}})
	assert.InDelta(t, 5, cfg.QPS, 0)
	assert.Equal(t, 7, cfg.Burst)
	assert.Equal(t, "tmc-syncer/v1.2.3", cfg.UserAgent)
	require.NotNil(t, cfg.Dial)
	_, err := cfg.Dial(context.Background(), "tcp", "x:443")
	require.ErrorIs(t, err, dialErr)
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(path, []byte(`apiVersion: v1
kind: Config
clusters:
- name: a
  cluster: {server: "https://a.example"}
- name: b
  cluster: {server: "https://b.example"}
users:
- name: u
  user: {token: t}
contexts:
- name: a
  context: {cluster: a, user: u}
- name: b
  context: {cluster: b, user: u}
current-context: a
`), 0o600))
	cfg, err := Load(path, "")
	require.NoError(t, err)
	assert.Equal(t, "https://a.example", cfg.Host)
	cfg, err = Load(path, "b")
	require.NoError(t, err)
	assert.Equal(t, "https://b.example", cfg.Host)
	_, err = Load(path, "missing")
	require.ErrorContains(t, err, `context "missing"`)
}
