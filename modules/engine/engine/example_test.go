package engine_test

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tmc-syncer/syncer/modules/engine/clients"
	"github.com/tmc-syncer/syncer/modules/engine/engine"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
)

// specSyncer is a controller: it reads the object named by the key from the
// engine's caches and converges the physical cluster (elided here).
type specSyncer struct{ eng *engine.Engine }

func (s *specSyncer) Name() string { return "spec-syncer" }
func (s *specSyncer) Workers() int { return 4 }
func (s *specSyncer) Reconcile(_ context.Context, key queue.Key) error {
	obj, found, err := s.eng.Informers().Get(informers.ID{Side: informers.Upstream, GVR: key.GVR}, key.Cluster, key.Namespace, key.Name)
	if err != nil {
		return fmt.Errorf("get %s: %w", key, err)
	}
	if !found {
		return nil // deleted upstream: clean up downstream
	}
	_ = obj // deep-copy, transform, apply …
	return nil
}

// Example shows how a syncer component runs a controller on the engine.
func Example() {
	run := func(ctx context.Context) error {
		upCfg, err := clients.Load("/path/to/upstream.kubeconfig", "")
		if err != nil {
			return err
		}
		downCfg, err := clients.Load("/path/to/physical.kubeconfig", "")
		if err != nil {
			return err
		}
		up, err := engine.ClientsFor(clients.Configure(upCfg, clients.Options{Version: "v0.1.0"}))
		if err != nil {
			return err
		}
		down, err := engine.ClientsFor(clients.Configure(downCfg, clients.Options{Version: "v0.1.0"}))
		if err != nil {
			return err
		}
		eng, err := engine.New(engine.Config{
			SyncTargetName: "us-east-1", SyncTargetUID: "4b1c…", FromCluster: "root:org:ws",
			Resources: []string{"deployments.apps,services"}, Registry: prometheus.NewRegistry(),
		}, up, down)
		if err != nil {
			return err
		}
		runner, err := eng.Register(&specSyncer{eng: eng},
			engine.Watch{Side: informers.Upstream, Direction: queue.Down},
			engine.Watch{Side: informers.Downstream, Direction: queue.Down})
		if err != nil {
			return err
		}
		runner.EnqueueAfter(queue.Key{Direction: queue.Down, GVR: informers.NamespacesGVR, Name: "x"}, time.Minute)
		return eng.Run(ctx) // blocks until ctx ends, then drains
	}
	_ = run
}
