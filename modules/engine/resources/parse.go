package resources

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Always lists the resources every syncer syncs, whatever its configuration.
var Always = []schema.GroupResource{
	{Resource: "configmaps"},
	{Resource: "secrets"},
	{Resource: "serviceaccounts"},
}

// KCPBuiltins are the resources kcp's syncer always syncs (kcp v0.11's syncer
// virtual workspace serves them in every workspace; kcp's plugin grants them
// downstream). Under kcp they stand in for Always.
var KCPBuiltins = []schema.GroupResource{
	{Resource: "configmaps"},
	{Resource: "secrets"},
}

// Parse reads kcp-style --resources values ("deployments.apps,services"; the
// flag may be repeated) into group-resources, adds Always, and returns them
// deduplicated and sorted. "services" is the core group; everything after the
// first dot is the group.
func Parse(values []string) ([]schema.GroupResource, error) {
	seen := map[schema.GroupResource]bool{}
	for _, gr := range Always {
		seen[gr] = true
	}
	for _, v := range values {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			gr := schema.ParseGroupResource(strings.ToLower(s))
			if gr.Resource == "" || strings.Contains(gr.Resource, "/") || strings.HasSuffix(s, ".") {
				return nil, fmt.Errorf("parse --resources entry %q: want <resource> or <resource>.<group>", s)
			}
			seen[gr] = true
		}
	}
	out := make([]schema.GroupResource, 0, len(seen))
	for gr := range seen {
		out = append(out, gr)
	}
	sortGRs(out)
	return out, nil
}

func sortGRs(grs []schema.GroupResource) {
	sort.Slice(grs, func(i, j int) bool { return grs[i].String() < grs[j].String() })
}
