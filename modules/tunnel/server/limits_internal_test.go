package server

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestOnlyRealUpgradesLiftTheBodyLimit(t *testing.T) {
	tests := []struct {
		connection, upgrade string
		want                bool
	}{
		{"Upgrade", "websocket", true},
		{"keep-alive, upgrade", "SPDY/3.1", true},
		{"Upgrade", "h2c", false},
		{"Upgrade", "x", false},
		{"", "websocket", false},
		{"upgrade", "", false},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Header.Set("Connection", tt.connection)
		r.Header.Set("Upgrade", tt.upgrade)
		assert.Equal(t, tt.want, isUpgrade(r), "Connection %q, Upgrade %q", tt.connection, tt.upgrade)
	}
}
