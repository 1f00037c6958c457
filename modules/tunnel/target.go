package tunnel

import (
	"fmt"
	"strings"
)

const (
	// PathPrefix starts every tunnel server path.
	PathPrefix = "/tunnel/v1/clusters/"
	// ProxySegment separates a SyncTarget endpoint from the Kubernetes API path
	// of a control plane → physical cluster request.
	ProxySegment = "proxy"
	// Subprotocol is the WebSocket subprotocol both ends must agree on; it
	// versions the tunnel protocol.
	Subprotocol = "v1.tunnel.tmc-syncer.io"
)

// Target identifies a SyncTarget: its logical cluster and its name.
type Target struct {
	// Cluster is the logical cluster of the SyncTarget.
	Cluster string
	// Name is the SyncTarget name.
	Name string
}

// String returns "cluster/name".
func (t Target) String() string { return t.Cluster + "/" + t.Name }

// Validate reports whether both parts are non-empty and safe path segments.
func (t Target) Validate() error {
	for _, s := range []string{t.Cluster, t.Name} {
		if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/?#%") {
			return fmt.Errorf("invalid sync target %q", t.String())
		}
	}
	return nil
}

// Path returns the syncer endpoint of the target:
// /tunnel/v1/clusters/<cluster>/synctargets/<name>.
func (t Target) Path() string {
	return PathPrefix + t.Cluster + "/synctargets/" + t.Name
}

// ProxyPath returns the path prefix under which the control plane reaches the
// target's physical cluster: <Path()>/proxy.
func (t Target) ProxyPath() string { return t.Path() + "/" + ProxySegment }

// ParsePath splits a tunnel server path into its Target and the remainder
// after the target endpoint ("" for the syncer endpoint itself, or
// "/proxy/..." for control plane requests).
func ParsePath(p string) (Target, string, error) {
	rest, ok := strings.CutPrefix(p, PathPrefix)
	if !ok {
		return Target{}, "", fmt.Errorf("path %q does not start with %s", p, PathPrefix)
	}
	parts := strings.SplitN(rest, "/", 4)
	if len(parts) < 3 || parts[1] != "synctargets" {
		return Target{}, "", fmt.Errorf("path %q is not %s<cluster>/synctargets/<name>", p, PathPrefix)
	}
	t := Target{Cluster: parts[0], Name: parts[2]}
	if err := t.Validate(); err != nil {
		return Target{}, "", err
	}
	remainder := ""
	if len(parts) == 4 {
		remainder = "/" + parts[3]
	}
	return t, remainder, nil
}
