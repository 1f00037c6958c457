package memlimit

import (
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConfigure(t *testing.T) {
	files := func(kv ...string) fstest.MapFS {
		m := fstest.MapFS{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = &fstest.MapFile{Data: []byte(kv[i+1])}
		}
		return m
	}
	tests := []struct {
		name    string
		env     string
		cgroup  fstest.MapFS
		ratio   float64
		want    int64
		wantErr string
	}{
		{name: "cgroup v2 limit", cgroup: files("memory.max", "536870912\n"), want: 483183820},
		{name: "cgroup v2 without limit", cgroup: files("memory.max", "max\n")},
		{name: "cgroup v1 limit", cgroup: files("memory/memory.limit_in_bytes", "268435456\n"), want: 241591910},
		{name: "cgroup v1 without limit", cgroup: files("memory/memory.limit_in_bytes", "9223372036854771712\n")},
		{name: "v2 wins over v1", cgroup: files("memory.max", "1000", "memory/memory.limit_in_bytes", "5000"), want: 900},
		{name: "custom ratio", cgroup: files("memory.max", "1000"), ratio: 0.5, want: 500},
		{name: "no cgroup files", cgroup: files()},
		{name: "GOMEMLIMIT set: left alone", env: "100MiB", cgroup: files("memory.max", "536870912")},
		{name: "garbage", cgroup: files("memory.max", "lots"), wantErr: `"lots" is not a positive number`},
		{name: "negative", cgroup: files("memory.max", "-1"), wantErr: "not a positive number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var set []int64
			got, err := Configure(Settings{
				Getenv: func(k string) string {
					if k == "GOMEMLIMIT" {
						return tt.env
					}
					return ""
				},
				Cgroup:         tt.cgroup,
				SetMemoryLimit: func(n int64) int64 { set = append(set, n); return 0 },
				Ratio:          tt.ratio,
			})
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				assert.Empty(t, set)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			if tt.want == 0 {
				assert.Empty(t, set, "no limit set")
			} else {
				assert.Equal(t, []int64{tt.want}, set)
			}
		})
	}
}

func FuzzCgroupLimit(f *testing.F) {
	for _, s := range []string{"max\n", "536870912\n", "0", "-5", "9223372036854771712", "", "1e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		limit, ok, err := CgroupLimit(fstest.MapFS{"memory.max": &fstest.MapFile{Data: []byte(s)}})
		if err != nil || !ok {
			assert.Zero(t, limit)
			return
		}
		assert.Positive(t, limit)
		assert.Less(t, limit, v1Unlimited)
	})
}
