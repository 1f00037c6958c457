package app

import (
	"testing"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"

	"github.com/tmc-syncer/syncer/cmd/syncer/options"
)

func TestApplyGCPercent(t *testing.T) {
	tests := []struct {
		name string
		gogc string
		want int // -1: not set
	}{
		{name: "GOGC unset: the flag", want: 50},
		{name: "GOGC set: the runtime's", gogc: "200", want: -1},
		{name: "GOGC off: the runtime's", gogc: "off", want: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := -1
			applyGCPercent(logr.Discard(), 50, func(k string) string {
				if k == "GOGC" {
					return tt.gogc
				}
				return ""
			}, func(p int) int { got = p; return 100 })
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestUpstreamListPageSizeIsNotUsedUnderKCP(t *testing.T) {
	opts := options.New()
	assert.Equal(t, int64(500), upstreamListPageSize(opts, false))
	assert.Equal(t, int64(0), upstreamListPageSize(opts, true), "kcp's virtual workspace is listed in one request")
}
