package app

import (
	"context"
	"errors"
	"fmt"
	"io"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tmc-syncer/syncer/cmd/syncer/options"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
)

// runSyncer starts every component of the syncer and blocks until ctx ends or one
// of them fails.
func runSyncer(ctx context.Context, version string, opts *options.Options, stderr io.Writer) error {
	upstream, err := loadConfig("from-kubeconfig", opts.FromKubeconfig, opts.FromContext)
	if err != nil {
		return err
	}
	if _, err := loadConfig("to-kubeconfig", opts.ToKubeconfig, opts.ToContext); err != nil {
		return err
	}
	if err := checkSyncTarget(ctx, upstream, opts.SyncTargetName, opts.SyncTargetUID); err != nil {
		return err
	}
	_, _ = fmt.Fprintf(stderr, "syncer %s: SyncTarget %s checked; the sync components are not yet assembled\n", version, opts.SyncTargetName)
	return errorf(ExitFailure, "not yet assembled: the engine, downstream and upstream modules are wired by the cmd/syncer issue")
}

// loadConfig reads a kubeconfig; an empty path means the in-cluster configuration.
func loadConfig(flag, path, context string) (*rest.Config, error) {
	if path == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, errorf(ExitKubeconfig, "--%s: not set and not running in a cluster: %w", flag, err)
		}
		return cfg, nil
	}
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: path}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		return nil, errorf(ExitKubeconfig, "--%s %s: %w", flag, path, err)
	}
	return cfg, nil
}

// checkSyncTarget makes sure the SyncTarget exists and, when uid is set, is the one
// the syncer was deployed for: a SyncTarget re-created under the same name must not
// inherit the old one's physical cluster.
func checkSyncTarget(ctx context.Context, cfg *rest.Config, name, uid string) error {
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return errorf(ExitKubeconfig, "--from-kubeconfig: %w", err)
	}
	st, err := client.Resource(workloadv1alpha1.SyncTargetsResource).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return errorf(ExitSyncTarget, "SyncTarget %q not found upstream (%s)", name, cfg.Host)
	case err != nil && isUnreachable(err):
		return errorf(ExitUnreachable, "upstream %s unreachable: %w", cfg.Host, err)
	case err != nil:
		return errorf(ExitSyncTarget, "get SyncTarget %q: %w", name, err)
	}
	if uid != "" && string(st.GetUID()) != uid {
		return errorf(ExitSyncTarget, "SyncTarget %q has UID %s, but --sync-target-uid is %s", name, st.GetUID(), uid)
	}
	return nil
}

func isUnreachable(err error) bool {
	var status apierrors.APIStatus
	return !errors.As(err, &status)
}
