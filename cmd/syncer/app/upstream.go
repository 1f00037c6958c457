package app

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/clients"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

// virtualWorkspaceWait bounds how long the syncer waits for kcp to publish the
// SyncTarget's virtual workspace URLs.
const virtualWorkspaceWait = time.Minute

// upstreamConfigs are the control plane's client configurations, by role.
type upstreamConfigs struct {
	// SyncTarget reaches the SyncTarget's own workspace: the SyncTarget, its
	// heartbeat and status, API imports.
	SyncTarget *rest.Config
	// Workloads lists and watches the objects to sync and writes them back. Under
	// kcp it is the syncer virtual workspace across every logical cluster placed on
	// the target, each write routed to its object's cluster (clients.ForAllClusters);
	// on a plain kube-apiserver it is SyncTarget.
	Workloads *rest.Config
	// Upsyncer is kcp's upsyncer virtual workspace (nil on a plain kube-apiserver).
	Upsyncer *rest.Config
	// Cluster is the SyncTarget's logical cluster: its kcp.io/cluster annotation
	// (kcp's syncTargetKey is computed from it), else --from-cluster.
	Cluster string
	// KCP says the control plane is kcp: kcp's controllers own the SyncTarget's
	// syncedResources and heartbeat health, and Events have no way up.
	KCP bool
}

// resolveUpstream finds the SyncTarget and decides how to reach the control plane,
// as kcp's syncer does: a kubeconfig with a bare kcp host is scoped to the
// SyncTarget's workspace (--from-cluster), and when the SyncTarget advertises a
// syncer virtual workspace all workload traffic goes through it. A plain
// kube-apiserver serves the SyncTarget at the host itself.
func resolveUpstream(ctx context.Context, cfg *rest.Config, fromCluster, name, uid string) (upstreamConfigs, error) {
	stCfg := cfg
	st, err := getSyncTarget(ctx, cfg, name)
	if !hasClusterPath(cfg.Host) && clients.ValidCluster(fromCluster) {
		// kcp's syncer always adds /clusters/<from-cluster> to a bare host; try that
		// first, and take the host as it is when the server has no such path (a
		// plain kube-apiserver answers 404 without details).
		scoped, serr := clients.ForCluster(cfg, cfg.Host, fromCluster)
		if serr != nil {
			return upstreamConfigs{}, errorf(ExitUsage, "--from-cluster: %w", serr)
		}
		if sst, gerr := getSyncTarget(ctx, scoped, name); gerr == nil || !isUnservedPath(gerr) {
			stCfg, st, err = scoped, sst, gerr
		}
	}
	switch {
	case apierrors.IsNotFound(err):
		return upstreamConfigs{}, errorf(ExitSyncTarget, "SyncTarget %q not found upstream (%s)", name, stCfg.Host)
	case err != nil && isUnreachable(err):
		return upstreamConfigs{}, errorf(ExitUnreachable, "upstream %s unreachable: %w", cfg.Host, err)
	case err != nil:
		return upstreamConfigs{}, errorf(ExitSyncTarget, "get SyncTarget %q: %w", name, err)
	}
	if uid != "" && string(st.GetUID()) != uid {
		return upstreamConfigs{}, errorf(ExitSyncTarget, "SyncTarget %q has UID %s, but --sync-target-uid is %s", name, st.GetUID(), uid)
	}
	out := upstreamConfigs{SyncTarget: stCfg, Workloads: stCfg, Cluster: identity.TargetOf(st, fromCluster).Cluster}
	if !hasClusterPath(stCfg.Host) {
		return out, nil
	}
	// kcp: wait for its controllers to publish the virtual workspace URLs.
	out.KCP = true
	var syncerURL, upsyncerURL string
	err = wait.PollUntilContextTimeout(ctx, time.Second, virtualWorkspaceWait, true, func(ctx context.Context) (bool, error) {
		if st == nil {
			if st, err = getSyncTarget(ctx, stCfg, name); err != nil {
				return false, nil //nolint:nilerr // retried until the timeout
			}
		}
		syncerURL, upsyncerURL = virtualWorkspaceURLs(st)
		if syncerURL == "" {
			st = nil
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return out, errorf(ExitSyncTarget, "SyncTarget %q has no status.virtualWorkspaces after %s: is kcp's workload controller running?", name, virtualWorkspaceWait)
	}
	for _, u := range []string{syncerURL, upsyncerURL} {
		if u == "" {
			continue
		}
		if p, err := url.Parse(u); err != nil || p.Scheme != "https" || p.Host == "" {
			return out, errorf(ExitSyncTarget, "SyncTarget %q: virtual workspace URL %q is not an https URL", name, u)
		}
	}
	out.Workloads = clients.ForAllClusters(cfg, syncerURL)
	if upsyncerURL != "" {
		out.Upsyncer = clients.ForAllClusters(cfg, upsyncerURL)
	}
	return out, nil
}

func getSyncTarget(ctx context.Context, cfg *rest.Config, name string) (*unstructured.Unstructured, error) {
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, errorf(ExitKubeconfig, "--from-kubeconfig: %w", err)
	}
	return client.Resource(workloadv1alpha1.SyncTargetsResource).Get(ctx, name, metav1.GetOptions{})
}

// virtualWorkspaceURLs reads status.virtualWorkspaces[0] (kcp publishes one).
func virtualWorkspaceURLs(st *unstructured.Unstructured) (syncerURL, upsyncerURL string) {
	vws, _, _ := unstructured.NestedSlice(st.Object, "status", "virtualWorkspaces")
	if len(vws) == 0 {
		return "", ""
	}
	vw, _ := vws[0].(map[string]any)
	syncerURL, _ = vw["syncerURL"].(string)
	upsyncerURL, _ = vw["upsyncerURL"].(string)
	return syncerURL, upsyncerURL
}

func hasClusterPath(host string) bool {
	u, err := url.Parse(host)
	return err == nil && strings.Contains(u.Path, "/clusters/")
}

// isUnservedPath tells an answer for a path the server does not serve at all from
// one about the SyncTarget: a plain kube-apiserver answers /clusters/… with a 404
// whose body is no Status (client-go makes up "the server could not find the requested
// resource") or, to an identity without access to that non-resource path, with a 403
// "cannot get path"; kcp's answers about a SyncTarget name it.
func isUnservedPath(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	msg := status.Status().Message
	switch {
	case apierrors.IsNotFound(err):
		return strings.HasPrefix(msg, "the server could not find the requested resource")
	case apierrors.IsForbidden(err):
		return strings.Contains(msg, "cannot get path")
	}
	return false
}
