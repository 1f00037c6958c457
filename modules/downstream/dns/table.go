package dns

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Table is one workspace's view of its downstream namespaces and Services: what the table
// ConfigMap holds and what the Server answers from. The zero value is an empty table.
type Table struct {
	// Namespaces maps an upstream namespace to its downstream namespace.
	Namespaces map[string]string
	// Services maps "<service>.<upstream namespace>" to the Service's ClusterIPs; an empty
	// slice is a Service without one (headless, ExternalName), resolved by the cluster's DNS.
	Services map[string][]netip.Addr
}

// Data renders t as the table ConfigMap's data.
func (t Table) Data() map[string]string {
	data := make(map[string]string, len(t.Namespaces)+len(t.Services))
	for up, down := range t.Namespaces {
		data[up] = down
	}
	for key, ips := range t.Services {
		s := make([]string, len(ips))
		for i, ip := range ips {
			s[i] = ip.String()
		}
		data[key] = strings.Join(s, ",")
	}
	return data
}

// ParseTable reads a table ConfigMap's data. Entries that are not valid (a key that is not
// a namespace or `<service>.<namespace>`, a downstream namespace that is not a DNS label, an
// address that does not parse) are skipped and reported in the returned error; the valid
// entries are always returned, so one bad entry never takes a workspace's DNS down.
func ParseTable(data map[string]string) (Table, error) {
	t := Table{Namespaces: map[string]string{}, Services: map[string][]netip.Addr{}}
	var bad []string
	for key, value := range data {
		svc, ns, isService := strings.Cut(key, ".")
		if !isService {
			if !isLabel(key) || !isLabel(value) {
				bad = append(bad, key)
				continue
			}
			t.Namespaces[key] = value
			continue
		}
		if !isLabel(svc) || !isLabel(ns) {
			bad = append(bad, key)
			continue
		}
		ips, ok := parseIPs(value)
		if !ok {
			bad = append(bad, key)
			continue
		}
		t.Services[key] = ips
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return t, fmt.Errorf("dns table: %d invalid entries skipped: %s", len(bad), strings.Join(bad, ", "))
	}
	return t, nil
}

func parseIPs(value string) ([]netip.Addr, bool) {
	if value == "" {
		return []netip.Addr{}, true
	}
	parts := strings.Split(value, ",")
	if len(parts) > 2 { // a Service has at most one address per family
		return nil, false
	}
	ips := make([]netip.Addr, 0, len(parts))
	for _, p := range parts {
		ip, err := netip.ParseAddr(p)
		if err != nil || ip.Zone() != "" {
			return nil, false
		}
		ips = append(ips, ip.Unmap())
	}
	return ips, true
}

func isLabel(s string) bool { return len(validation.IsDNS1123Label(s)) == 0 }

// ResolutionKind says how the Server answers a query.
type ResolutionKind int

const (
	// Forward sends the query unchanged to the upstream resolvers.
	Forward ResolutionKind = iota
	// ForwardRewritten sends the query for Resolution.Rewritten (the downstream name) and
	// answers with the question's own name.
	ForwardRewritten
	// Answer answers with Resolution.IPs.
	Answer
	// NXDomain answers that the name does not exist: a Service the workspace does not have
	// in a namespace it has.
	NXDomain
)

// Resolution is how the Server answers one name.
type Resolution struct {
	Kind ResolutionKind
	// IPs are the addresses of an Answer.
	IPs []netip.Addr
	// Rewritten is the downstream name of a ForwardRewritten query (fully qualified).
	Rewritten string
	// Zone is the name negative answers carry an SOA for (fully qualified).
	Zone string
}

// Resolve decides how to answer name (any case, with or without the final dot) for a
// cluster whose domain is clusterDomain (e.g. cluster.local):
//
//   - `<svc>.<ns>.svc.<domain>` with ns an upstream namespace of the workspace: the Service's
//     ClusterIPs; a Service without ClusterIP is resolved by the cluster's DNS under its
//     downstream name; a Service the workspace does not have does not exist;
//   - longer names in such a namespace (`<pod>.<svc>.<ns>.svc.<domain>`, SRV names) go to the
//     cluster's DNS under their downstream name;
//   - `<svc>.<ns>` (what a search path makes of a short name) as the long form when the
//     workspace has that Service, else forwarded unchanged: it may be a name on the Internet;
//   - everything else is forwarded unchanged.
func (t Table) Resolve(name, clusterDomain string) Resolution {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	suffix := ".svc." + strings.ToLower(strings.Trim(clusterDomain, "."))
	labels := strings.Split(name, ".")
	if prefix, ok := strings.CutSuffix(name, suffix); ok && prefix != "" {
		parts := strings.Split(prefix, ".")
		if len(parts) < 2 {
			return Resolution{Kind: Forward}
		}
		ns := parts[len(parts)-1]
		down, ok := t.Namespaces[ns]
		if !ok {
			return Resolution{Kind: Forward}
		}
		parts[len(parts)-1] = down
		rewritten := strings.Join(parts, ".") + suffix + "."
		if len(parts) > 2 {
			return Resolution{Kind: ForwardRewritten, Rewritten: rewritten}
		}
		ips, ok := t.Services[parts[0]+"."+ns]
		switch {
		case !ok:
			return Resolution{Kind: NXDomain, Zone: ns + suffix + "."}
		case len(ips) == 0:
			return Resolution{Kind: ForwardRewritten, Rewritten: rewritten}
		default:
			return Resolution{Kind: Answer, IPs: ips, Zone: ns + suffix + "."}
		}
	}
	if len(labels) == 2 {
		if down, ok := t.Namespaces[labels[1]]; ok {
			if ips, ok := t.Services[name]; ok {
				if len(ips) == 0 {
					return Resolution{Kind: ForwardRewritten, Rewritten: labels[0] + "." + down + suffix + "."}
				}
				return Resolution{Kind: Answer, IPs: ips, Zone: labels[1] + "."}
			}
		}
	}
	return Resolution{Kind: Forward}
}
