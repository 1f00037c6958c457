package tunnel

import (
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

const (
	// PathPrefix starts every tunnel server path.
	PathPrefix = "/tunnel/v1/clusters/"
	// ProxySegment separates a SyncTarget endpoint from the Kubernetes API path
	// of a control plane → physical cluster request.
	ProxySegment = "proxy"
	// EventsSegment separates a SyncTarget endpoint from the Event API path of the
	// Event relay (syncer → workspace Events under kcp, whose virtual workspace serves none).
	EventsSegment = "events"
	// Subprotocol is the WebSocket subprotocol both ends must agree on; it
	// versions the tunnel protocol.
	Subprotocol = "v1.tunnel.tmc-syncer.io"
	// MaxClusterLength bounds a logical cluster path ("root:org:ws"). kcp
	// itself sets no bound on the path; 1 KiB is far beyond any real nesting
	// and keeps a hostile path out of logs and metric labels.
	MaxClusterLength = 1024
)

// ErrInvalidTarget marks a cluster or SyncTarget name that is not a valid
// kcp logical cluster path or Kubernetes object name.
var ErrInvalidTarget = errors.New("invalid sync target")

// ErrNotTunnelPath marks a path that is not a tunnel endpoint at all.
var ErrNotTunnelPath = errors.New("not a tunnel path")

// Target identifies a SyncTarget: its logical cluster and its name.
type Target struct {
	// Cluster is the logical cluster of the SyncTarget.
	Cluster string
	// Name is the SyncTarget name.
	Name string
}

// String returns "cluster/name".
func (t Target) String() string { return t.Cluster + "/" + t.Name }

// Validate reports whether Cluster is a valid kcp logical cluster path
// (colon-separated DNS labels, e.g. "root:org:ws"; the wildcard "*" is not a
// cluster) and Name a valid Kubernetes object name (DNS-1123 subdomain). Both
// are then valid UTF-8, safe path segments and bounded in length. The error
// wraps ErrInvalidTarget.
func (t Target) Validate() error {
	if err := validClusterPath(t.Cluster); err != nil {
		return fmt.Errorf("%w: cluster %.64q: %s", ErrInvalidTarget, t.Cluster, err.Error())
	}
	if errs := validation.IsDNS1123Subdomain(t.Name); len(errs) > 0 {
		return fmt.Errorf("%w: name %.64q: %s", ErrInvalidTarget, t.Name, strings.Join(errs, "; "))
	}
	return nil
}

// validClusterPath checks a kcp logical cluster path without regular
// expressions: 1..MaxClusterLength bytes of DNS labels joined by ':'.
func validClusterPath(c string) error {
	if c == "" {
		return errors.New("must not be empty")
	}
	if len(c) > MaxClusterLength {
		return fmt.Errorf("must be at most %d characters", MaxClusterLength)
	}
	for seg := range strings.SplitSeq(c, ":") {
		if !isDNSLabel(seg) {
			return errors.New("must be DNS labels (lower case letters, digits, '-', at most 63 each) separated by ':'")
		}
	}
	return nil
}

func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// Path returns the syncer endpoint of the target:
// /tunnel/v1/clusters/<cluster>/synctargets/<name>.
func (t Target) Path() string {
	return PathPrefix + t.Cluster + "/synctargets/" + t.Name
}

// ProxyPath returns the path prefix under which the control plane reaches the
// target's physical cluster: <Path()>/proxy.
func (t Target) ProxyPath() string { return t.Path() + "/" + ProxySegment }

// EventsPath returns the path of t's Event relay; a kcp-style client appends
// "/clusters/<cluster>/api/v1/namespaces/<ns>/events[/<name>]".
func (t Target) EventsPath() string { return t.Path() + "/" + EventsSegment }

// ParsePath splits a tunnel server path into its Target and the remainder
// after the target endpoint ("" for the syncer endpoint itself, or
// "/proxy/..." for control plane requests). A path of another shape fails
// with ErrNotTunnelPath, one whose cluster or name is invalid with
// ErrInvalidTarget.
func ParsePath(p string) (Target, string, error) {
	rest, ok := strings.CutPrefix(p, PathPrefix)
	if !ok {
		return Target{}, "", fmt.Errorf("%w: path %.128q does not start with %s", ErrNotTunnelPath, p, PathPrefix)
	}
	parts := strings.SplitN(rest, "/", 4)
	if len(parts) < 3 || parts[1] != "synctargets" {
		return Target{}, "", fmt.Errorf("%w: path %.128q is not %s<cluster>/synctargets/<name>", ErrNotTunnelPath, p, PathPrefix)
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
