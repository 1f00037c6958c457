package clients

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"k8s.io/client-go/rest"
)

// WildcardPath is the path segment of kcp's virtual workspaces that lists and
// watches every logical cluster at once.
const WildcardPath = "/clusters/*"

type clusterKey struct{}

// WithCluster returns a context whose requests through a config made by
// ForAllClusters go to the logical cluster instead of to every cluster. The queue
// runner sets it for each key, so every write of a reconcile reaches the workspace
// of the object it reconciles.
func WithCluster(ctx context.Context, cluster string) context.Context {
	return context.WithValue(ctx, clusterKey{}, cluster)
}

// ClusterFrom returns the logical cluster set by WithCluster.
func ClusterFrom(ctx context.Context) (string, bool) {
	c, ok := ctx.Value(clusterKey{}).(string)
	return c, ok && c != ""
}

// logicalClusterName matches kcp's logical cluster names and paths ("root",
// "root:team-a", "2x7q1m0bd0fa2fz6").
var logicalClusterName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(:[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// ValidCluster reports whether name is a logical cluster name or path; anything else
// must never become part of a request path.
func ValidCluster(name string) bool {
	return len(name) <= 1024 && logicalClusterName.MatchString(name)
}

// ForCluster returns a copy of cfg whose host is base + "/clusters/" + cluster.
func ForCluster(cfg *rest.Config, base, cluster string) (*rest.Config, error) {
	if !ValidCluster(cluster) {
		return nil, fmt.Errorf("%q is not a logical cluster name", cluster)
	}
	out := rest.CopyConfig(cfg)
	out.Host = strings.TrimSuffix(base, "/") + "/clusters/" + cluster
	return out, nil
}

// ForAllClusters returns a copy of cfg for a kcp virtual workspace at base: list and
// watch requests go to every logical cluster (base + "/clusters/*"), and a request
// whose context carries a cluster (WithCluster) goes to that cluster alone, as kcp
// requires for writes.
func ForAllClusters(cfg *rest.Config, base string) *rest.Config {
	out := rest.CopyConfig(cfg)
	out.Host = strings.TrimSuffix(base, "/") + WildcardPath
	out.Wrap(func(rt http.RoundTripper) http.RoundTripper { return clusterRouter{next: rt} })
	return out
}

// clusterRouter rewrites the wildcard segment of a request path to the cluster of
// the request's context.
type clusterRouter struct{ next http.RoundTripper }

func (r clusterRouter) RoundTrip(req *http.Request) (*http.Response, error) {
	cluster, ok := ClusterFrom(req.Context())
	if !ok {
		return r.next.RoundTrip(req)
	}
	if !ValidCluster(cluster) {
		return nil, fmt.Errorf("request for %q: not a logical cluster name", cluster)
	}
	i := strings.Index(req.URL.Path, WildcardPath+"/")
	if i < 0 {
		return r.next.RoundTrip(req)
	}
	routed := req.Clone(req.Context())
	routed.URL.Path = req.URL.Path[:i] + "/clusters/" + cluster + req.URL.Path[i+len(WildcardPath):]
	routed.URL.RawPath = ""
	return r.next.RoundTrip(routed)
}
