package dns

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDNSIDIsKcps(t *testing.T) {
	// kcp v0.11.0's pkg/syncer/spec/spec_process_test.go: workspace root:org:ws, SyncTarget
	// us-west1 with UID syncTargetUID.
	assert.Equal(t, "kcp-dns-us-west1-1nuzj7pw-2fcy2vpi", ID("root:org:ws", "syncTargetUID", "us-west1"))
	assert.NotEqual(t, ID("root:org:ws", "syncTargetUID", "us-west1"), ID("root:org:other", "syncTargetUID", "us-west1"),
		"two workspaces, two DNS servers")
}

func addrs(s ...string) []netip.Addr {
	out := []netip.Addr{}
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func testTable() Table {
	return Table{
		Namespaces: map[string]string{"shop": "kcp-aaaa", "db": "kcp-bbbb"},
		Services: map[string][]netip.Addr{
			"web.shop":    addrs("10.96.0.10"),
			"dual.shop":   addrs("10.96.0.11", "fd00::11"),
			"v6only.shop": addrs("fd00::12"),
			"pg.db":       addrs(),
		},
	}
}

func TestTableDataRoundTrip(t *testing.T) {
	data := testTable().Data()
	assert.Equal(t, map[string]string{
		"shop": "kcp-aaaa", "db": "kcp-bbbb",
		"web.shop": "10.96.0.10", "dual.shop": "10.96.0.11,fd00::11", "v6only.shop": "fd00::12", "pg.db": "",
	}, data, "kcp's namespace entries plus one entry per Service")
	back, err := ParseTable(data)
	require.NoError(t, err)
	assert.Equal(t, testTable(), back)
}

func TestParseTableSkipsInvalidEntries(t *testing.T) {
	tests := map[string]map[string]string{
		"namespace not a label":        {"Shop": "kcp-aaaa"},
		"downstream not a label":       {"shop": "kcp_aaaa"},
		"downstream empty":             {"shop": ""},
		"service key with three parts": {"a.b.c": "10.0.0.1"},
		"service not a label":          {"-web.shop": "10.0.0.1"},
		"address not an IP":            {"web.shop": "ten"},
		"three addresses":              {"web.shop": "10.0.0.1,10.0.0.2,10.0.0.3"},
		"zone in address":              {"web.shop": "fe80::1%eth0"},
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			data["ok"] = "kcp-ok"
			got, err := ParseTable(data)
			require.Error(t, err)
			assert.Equal(t, map[string]string{"ok": "kcp-ok"}, got.Namespaces, "valid entries are kept")
			assert.Empty(t, got.Services)
		})
	}
}

func TestResolve(t *testing.T) {
	tab := testTable()
	tests := []struct {
		name string
		want Resolution
	}{
		{"web.shop.svc.cluster.local.", Resolution{Kind: Answer, IPs: addrs("10.96.0.10"), Zone: "shop.svc.cluster.local."}},
		{"WEB.Shop.SVC.cluster.local", Resolution{Kind: Answer, IPs: addrs("10.96.0.10"), Zone: "shop.svc.cluster.local."}},
		{"web.shop.", Resolution{Kind: Answer, IPs: addrs("10.96.0.10"), Zone: "shop."}},
		{"nope.shop.svc.cluster.local.", Resolution{Kind: NXDomain, Zone: "shop.svc.cluster.local."}},
		{"nope.shop.", Resolution{Kind: Forward}}, // may be a name on the Internet
		{"pg.db.svc.cluster.local.", Resolution{Kind: ForwardRewritten, Rewritten: "pg.kcp-bbbb.svc.cluster.local."}},
		{"pg.db.", Resolution{Kind: ForwardRewritten, Rewritten: "pg.kcp-bbbb.svc.cluster.local."}},
		{"pg-0.pg.db.svc.cluster.local.", Resolution{Kind: ForwardRewritten, Rewritten: "pg-0.pg.kcp-bbbb.svc.cluster.local."}},
		{"_pg._tcp.pg.db.svc.cluster.local.", Resolution{Kind: ForwardRewritten, Rewritten: "_pg._tcp.pg.kcp-bbbb.svc.cluster.local."}},
		{"kube-dns.kube-system.svc.cluster.local.", Resolution{Kind: Forward}},
		{"web.kcp-aaaa.svc.cluster.local.", Resolution{Kind: Forward}}, // already physical
		{"shop.svc.cluster.local.", Resolution{Kind: Forward}},
		{"svc.cluster.local.", Resolution{Kind: Forward}},
		{"example.com.", Resolution{Kind: Forward}},
		{"web.shop.example.com.", Resolution{Kind: Forward}},
		{".", Resolution{Kind: Forward}},
		{"", Resolution{Kind: Forward}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tab.Resolve(tt.name, "cluster.local"))
		})
	}
	assert.Equal(t, Resolution{Kind: Answer, IPs: addrs("10.96.0.10"), Zone: "shop.svc.corp.example."},
		tab.Resolve("web.shop.svc.corp.example.", "corp.example."), "another cluster domain")
	assert.Equal(t, Resolution{Kind: Forward}, Table{}.Resolve("web.shop.svc.cluster.local.", "cluster.local"), "an empty table forwards")
}
