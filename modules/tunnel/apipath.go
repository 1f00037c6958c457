package tunnel

import (
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
)

// APIRequest is a namespaced Kubernetes API path that may cross the tunnel
// from the control plane to the physical cluster.
type APIRequest struct {
	// Group is the API group ("" for the core group).
	Group string
	// Version is the API version.
	Version string
	// Namespace is the namespace in the path.
	Namespace string
	// Resource is the plural resource name.
	Resource string
	// Name is the object name ("" for a collection).
	Name string
	// Subresource is the subresource ("" for none).
	Subresource string
}

// isPodSubresource reports whether a pod subresource may cross the tunnel.
func isPodSubresource(sub string) bool {
	switch sub {
	case "log", "exec", "attach", "portforward":
		return true
	}
	return false
}

// isNamespaceSubresource reports whether seg, right after /namespaces/<ns>/, names a
// subresource of the namespace object (as kube-apiserver's request info reads it).
func isNamespaceSubresource(seg string) bool {
	return seg == "status" || seg == "finalize"
}

// IsWatch reports whether query asks for a watch exactly as kube-apiserver decodes the
// watch parameter: present with a first value that is neither "0" nor "false" (any case),
// so "true", "1", "yes", "True" and an empty value all watch.
func IsWatch(query url.Values) bool {
	v, ok := query["watch"]
	if !ok || len(v) == 0 {
		return false
	}
	return v[0] != "0" && !strings.EqualFold(v[0], "false")
}

// ParseAPIPath parses /api/v1/namespaces/<ns>/<resource>[/<name>[/<sub>]] or
// /apis/<group>/<version>/namespaces/<ns>/<resource>[/<name>[/<sub>]]. It
// refuses unclean paths, cluster-scoped paths, the namespace's own
// subresources (status, finalize) and every subresource except the pod
// subresources log, exec, attach and portforward.
func ParseAPIPath(p string) (APIRequest, error) {
	if p == "" || path.Clean(p) != p {
		return APIRequest{}, fmt.Errorf("path %q is not clean", p)
	}
	seg := strings.Split(strings.TrimPrefix(p, "/"), "/")
	var r APIRequest
	switch {
	case len(seg) >= 2 && seg[0] == "api":
		r.Version, seg = seg[1], seg[2:]
	case len(seg) >= 3 && seg[0] == "apis":
		r.Group, r.Version, seg = seg[1], seg[2], seg[3:]
	default:
		return APIRequest{}, fmt.Errorf("path %q is not a Kubernetes API path", p)
	}
	if len(seg) < 3 || len(seg) > 5 || seg[0] != "namespaces" {
		return APIRequest{}, fmt.Errorf("path %q is not a namespaced resource path", p)
	}
	if isNamespaceSubresource(seg[2]) {
		// kube-apiserver reads /namespaces/<ns>/status as the status of namespace <ns>,
		// never as a resource named "status" in it.
		return APIRequest{}, fmt.Errorf("path %q is a subresource of the namespace, not a namespaced resource", p)
	}
	r.Namespace, r.Resource = seg[1], seg[2]
	if len(seg) >= 4 {
		r.Name = seg[3]
	}
	if len(seg) == 5 {
		r.Subresource = seg[4]
		if r.Group != "" || r.Resource != "pods" || !isPodSubresource(r.Subresource) {
			return APIRequest{}, fmt.Errorf("subresource %s/%s is not served through the tunnel", r.Resource, r.Subresource)
		}
	}
	for _, s := range []string{r.Version, r.Namespace, r.Resource} {
		if s == "" {
			return APIRequest{}, fmt.Errorf("path %q has an empty segment", p)
		}
	}
	return r, nil
}

// Path renders the request path.
func (r APIRequest) Path() string {
	var b strings.Builder
	if r.Group == "" {
		b.WriteString("/api/" + r.Version)
	} else {
		b.WriteString("/apis/" + r.Group + "/" + r.Version)
	}
	b.WriteString("/namespaces/" + r.Namespace + "/" + r.Resource)
	if r.Name != "" {
		b.WriteString("/" + r.Name)
		if r.Subresource != "" {
			b.WriteString("/" + r.Subresource)
		}
	}
	return b.String()
}

// Verb returns the Kubernetes authorization verb of the request, or an error
// when the method is not allowed through the tunnel: plain resources are
// read-only (get, list, watch; watch decided by IsWatch, only for
// collections), log is read, exec/attach/portforward are create (as
// kube-apiserver authorises them, whatever the HTTP method).
func (r APIRequest) Verb(method string, query url.Values) (string, error) {
	switch r.Subresource {
	case "":
		if method != http.MethodGet && method != http.MethodHead {
			return "", fmt.Errorf("method %s is not allowed: only read-only requests cross the tunnel", method)
		}
		// As kube-apiserver: a named GET is "get" whatever its query; only a
		// collection becomes "watch" or "list".
		switch {
		case r.Name != "":
			return "get", nil
		case IsWatch(query):
			return "watch", nil
		default:
			return "list", nil
		}
	case "log":
		if method != http.MethodGet {
			return "", fmt.Errorf("method %s is not allowed for pods/log", method)
		}
		return "get", nil
	default:
		if method != http.MethodGet && method != http.MethodPost {
			return "", fmt.Errorf("method %s is not allowed for pods/%s", method, r.Subresource)
		}
		return "create", nil
	}
}

// StripCredentials removes the headers that carry the caller's credentials or
// identity (Authorization, Proxy-Authorization, Cookie, Impersonate-*,
// X-Remote-*) from h: they never cross the tunnel, each side authenticates on
// its own.
func StripCredentials(h http.Header) {
	for _, k := range []string{"Authorization", "Proxy-Authorization", "Cookie"} {
		h.Del(k)
	}
	for k := range h {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "impersonate-") || strings.HasPrefix(lk, "x-remote-") {
			h.Del(k)
		}
	}
}

// WorkspaceSegment starts the optional workspace part of a proxied path under kcp:
// <target>/proxy/clusters/<workspace>/api/v1/... names a namespace of that workspace.
const WorkspaceSegment = "clusters"

// SplitWorkspace splits the path after <target>/proxy into the workspace it names and the
// Kubernetes API path: "/clusters/<workspace>/api/v1/..." gives ("<workspace>",
// "/api/v1/..."), a path without the workspace part gives ("", p). The workspace must be a
// kcp logical cluster name or path exactly as a target's cluster (DNS labels joined by
// ':', bounded, no wildcard); otherwise the error wraps ErrInvalidTarget. The API path is
// not checked here (ParseAPIPath does).
func SplitWorkspace(p string) (workspace, apiPath string, err error) {
	rest, ok := strings.CutPrefix(p, "/"+WorkspaceSegment+"/")
	if !ok {
		return "", p, nil
	}
	workspace, apiPath, ok = strings.Cut(rest, "/")
	if err := validClusterPath(workspace); err != nil {
		return "", "", fmt.Errorf("%w: workspace %.64q: %s", ErrInvalidTarget, workspace, err.Error())
	}
	if !ok {
		return "", "", fmt.Errorf("path %.128q names workspace %s but no API path", p, workspace)
	}
	return workspace, "/" + apiPath, nil
}

// WorkspaceProxyPath returns the path prefix under which a user of workspace reaches t's
// physical cluster (kcp): <t.ProxyPath()>/clusters/<workspace>; append the API path.
func (t Target) WorkspaceProxyPath(workspace string) string {
	return t.ProxyPath() + "/" + WorkspaceSegment + "/" + workspace
}
