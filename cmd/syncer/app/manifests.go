package app

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/tmc-syncer/syncer/cmd/syncer/manifests"
)

func newManifestsCommand(version string) *cobra.Command {
	cfg := manifests.Config{FromCluster: "root", Image: "tmc-syncer/syncer:" + version, Replicas: 1}
	var kubeconfig string
	cmd := &cobra.Command{
		Use:   "manifests",
		Short: "Print the YAML that installs a syncer into a physical cluster for one SyncTarget",
		Example: "  syncer manifests --sync-target-name eu-1 --sync-target-uid $(kubectl get synctarget eu-1 -o jsonpath='{.metadata.uid}') \\\n" +
			"    --from-kubeconfig syncer-upstream.kubeconfig --resources deployments.apps,services | kubectl apply -f -",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.SyncTargetName == "" {
				return errorf(ExitUsage, "--sync-target-name: required")
			}
			if kubeconfig == "" {
				return errorf(ExitUsage, "--from-kubeconfig: required (it is stored in a Secret for the syncer)")
			}
			data, err := os.ReadFile(kubeconfig)
			if err != nil {
				return errorf(ExitKubeconfig, "--from-kubeconfig: %w", err)
			}
			if _, err := loadConfig("from-kubeconfig", kubeconfig, ""); err != nil {
				return err
			}
			cfg.UpstreamKubeconfig = data
			out, err := manifests.YAML(manifests.Objects(cfg))
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&cfg.SyncTargetName, "sync-target-name", cfg.SyncTargetName, "name of the SyncTarget")
	fs.StringVar(&cfg.SyncTargetUID, "sync-target-uid", cfg.SyncTargetUID, "UID of the SyncTarget")
	fs.StringVar(&cfg.FromCluster, "from-cluster", cfg.FromCluster, "logical cluster of the SyncTarget")
	fs.StringVar(&kubeconfig, "from-kubeconfig", "", "kubeconfig the syncer uses upstream; stored in a Secret")
	fs.StringSliceVar(&cfg.Resources, "resources", nil, "resources to sync (resource.group), also granted in the ClusterRole")
	fs.StringVar(&cfg.Image, "image", cfg.Image, "syncer image")
	fs.StringVar(&cfg.Namespace, "namespace", "", "namespace of the syncer (default: derived from the SyncTarget)")
	fs.Int32Var(&cfg.Replicas, "replicas", cfg.Replicas, "replicas; more than one turns on leader election")
	fs.StringVar(&cfg.TunnelURL, "tunnel-url", "", "tunnel server URL")
	fs.BoolVar(&cfg.ExposeMetrics, "expose-metrics", false, "serve the syncer's /metrics on the pod's address (:8080) instead of loopback")
	return cmd
}
