package app

import (
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tmc-syncer/syncer/cmd/syncer/manifests"
)

func newUpstreamRBACCommand() *cobra.Command {
	cfg := manifests.UpstreamConfig{ServiceAccount: "tmc-syncer", SyncedObjects: true}
	cmd := &cobra.Command{
		Use:   "upstream-rbac",
		Short: "Print the control plane's RBAC that lets one syncer act as its SyncTarget and no other",
		Long: "upstream-rbac prints a ClusterRole restricted by resourceNames to one SyncTarget (read it, heartbeat\n" +
			"its status, open its tunnel), its binding to the syncer's upstream ServiceAccount, and a Role that lets\n" +
			"that ServiceAccount request tokens for itself only (the tunnel token). Apply it to the control plane\n" +
			"(under kcp: in the SyncTarget's workspace).",
		Example: "  syncer upstream-rbac --sync-target-name eu-1 --namespace syncers --service-account eu-1 | kubectl apply -f -",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if errs := validation.IsDNS1123Subdomain(cfg.SyncTargetName); len(errs) > 0 {
				return errorf(ExitUsage, "--sync-target-name %q: %v", cfg.SyncTargetName, errs)
			}
			if errs := validation.IsDNS1123Label(cfg.Namespace); len(errs) > 0 {
				return errorf(ExitUsage, "--namespace %q: %v", cfg.Namespace, errs)
			}
			if errs := validation.IsDNS1123Subdomain(cfg.ServiceAccount); len(errs) > 0 {
				return errorf(ExitUsage, "--service-account %q: %v", cfg.ServiceAccount, errs)
			}
			out, err := manifests.YAML(manifests.UpstreamObjects(cfg))
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&cfg.SyncTargetName, "sync-target-name", "", "name of the SyncTarget")
	fs.StringVar(&cfg.Namespace, "namespace", "", "upstream namespace of the syncer's ServiceAccount")
	fs.StringVar(&cfg.ServiceAccount, "service-account", cfg.ServiceAccount, "the syncer's upstream ServiceAccount")
	fs.StringSliceVarP(&cfg.Resources, "resources", "r", nil, "the syncer's --resources (resource.group): granted with --synced-objects (configmaps, secrets, serviceaccounts always are)")
	fs.BoolVar(&cfg.Upsync, "upsync", false, "with --synced-objects: also let the syncer upsync Pods, PersistentVolumes and Endpoints labelled Upsync downstream (create, update, delete them on the hub)")
	fs.BoolVar(&cfg.SyncedObjects, "synced-objects", true, "also print the plain hub's grant to read and write the synced objects (false under kcp, whose syncer virtual workspace authorizes them)")
	return cmd
}
