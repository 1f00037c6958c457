package apiimport_test

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/upstream/apiimport"
)

// Wiring under kcp: the upstream client reaches the SyncTarget's workspace
// (host + /clusters/<--from-cluster>), the downstream clients the physical cluster.
func Example() {
	var upCfg, downCfg *rest.Config // from --from-kubeconfig and --to-kubeconfig
	ctx := context.Background()

	ws := rest.CopyConfig(upCfg)
	ws.Host += "/clusters/root:loc"
	up := dynamic.NewForConfigOrDie(ws)
	disc := discovery.NewDiscoveryClientForConfigOrDie(downCfg)
	imp, err := apiimport.New(apiimport.Options{
		Target:    identity.NewTarget("root:loc", "cluster-1", "4d1f…"),
		Resources: []schema.GroupResource{{Group: "apps", Resource: "deployments"}, {Resource: "services"}},
		Upstream:  up,
		Downstream: apiimport.Downstream{
			Discovery: disc,
			OpenAPI:   disc.OpenAPIV3WithContext(ctx),
			Dynamic:   dynamic.NewForConfigOrDie(downCfg),
			Kube:      kubernetes.NewForConfigOrDie(downCfg),
		},
		PollInterval: time.Minute, // --api-import-poll-interval
	})
	if err != nil {
		panic(err)
	}
	_ = imp.Run(ctx) // blocks until ctx ends
}
