package downstream

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/transformation/rename"
)

// PodMutatorOptions turn on the pod-spec mutator (transformation.WithPodMutator): the pods
// of synced workloads call their workspace's API with their own upstream ServiceAccount
// token instead of the physical cluster's.
type PodMutatorOptions struct {
	// APIURL is where pods reach the workspace API: kcp's external address, or the
	// syncer's in-cluster endpoint that forwards through the tunnel. Required.
	APIURL *url.URL
	// CAConfigMap is the downstream ConfigMap whose ca.crt the pods trust for APIURL; empty
	// means kcp-root-ca.crt (the workspace's own kube-root-ca.crt, synced down).
	CAConfigMap string
	// Nameservers gives each workspace's DNS server; nil means none (pods keep the
	// physical cluster's DNS).
	Nameservers Nameservers
	// PrepareNamespace, when set, runs once per downstream namespace and process before the
	// first object goes into it (the tunnel's pod API endpoint keeps its CAConfigMap there).
	// An error fails that object's sync, which is retried.
	PrepareNamespace func(ctx context.Context, namespace string) error
	// UpsyncPods labels pod templates for upsync (kcp's upsyncPods).
	UpsyncPods bool
}

// Nameservers resolves the DNS server of a workspace for the pod mutator. A workspace
// whose DNS is not ready yet returns an error wrapping transformation.ErrPodInputsNotReady
// (its workloads are then retried shortly); "" means no workspace DNS.
type Nameservers interface {
	Nameserver(cluster string) (string, error)
}

// NameserversFunc adapts a function to Nameservers.
type NameserversFunc func(cluster string) (string, error)

// Nameserver implements Nameservers.
func (f NameserversFunc) Nameserver(cluster string) (string, error) { return f(cluster) }

var secretsGVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// podInputs implements transformation.PodInputs over the engine's upstream Secret cache
// (keyed by logical cluster; indexed by namespace across clusters).
type podInputs struct {
	secrets     func() (cache.Indexer, bool)
	fromCluster string
	nameservers Nameservers
}

var _ transformation.PodInputs = (*podInputs)(nil)

// TokenSecret returns the upstream name of the oldest token Secret of serviceAccount in
// cluster|namespace that carries a token (kcp picks the oldest too, so that a new token
// does not roll the pods), "" when there is none yet. Only Secrets in the cache are
// candidates: those are the ones synced down, under the name the mutator references.
func (p *podInputs) TokenSecret(cluster, namespace, serviceAccount string) (string, error) {
	store, ok := p.secrets()
	if !ok {
		return "", fmt.Errorf("%w: Secrets are not synced (yet)", transformation.ErrPodInputsNotReady)
	}
	items, err := store.ByIndex(cache.NamespaceIndex, namespace)
	if err != nil {
		return "", fmt.Errorf("list Secrets of %s|%s: %w", cluster, namespace, err)
	}
	var candidates []*unstructured.Unstructured
	for _, it := range items {
		u, ok := it.(*unstructured.Unstructured)
		if !ok || identity.LogicalCluster(u, p.fromCluster) != cluster || u.GetNamespace() != namespace {
			continue
		}
		if typ, _, _ := unstructured.NestedString(u.Object, "type"); typ != string(corev1.SecretTypeServiceAccountToken) {
			continue
		}
		if u.GetAnnotations()[rename.ServiceAccountNameAnnotation] != serviceAccount || u.GetDeletionTimestamp() != nil {
			continue
		}
		// The token controller fills the Secret after it is created: until then a pod would
		// mount no token.
		if token, _, _ := unstructured.NestedString(u.Object, "data", "token"); token == "" {
			continue
		}
		candidates = append(candidates, u)
	}
	if len(candidates) == 0 {
		return "", nil
	}
	sort.Slice(candidates, func(i, j int) bool {
		ti, tj := candidates[i].GetCreationTimestamp(), candidates[j].GetCreationTimestamp()
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return candidates[i].GetName() < candidates[j].GetName()
	})
	return candidates[0].GetName(), nil
}

// Nameserver implements transformation.PodInputs.
func (p *podInputs) Nameserver(cluster string) (string, error) {
	if p.nameservers == nil {
		return "", nil
	}
	return p.nameservers.Nameserver(cluster)
}

// podMutatorOption builds the pod mutator over the engine's informers.
func podMutatorOption(o *PodMutatorOptions, m *informers.Manager, fromCluster string) (transformation.Option, error) {
	if o.APIURL == nil {
		return nil, errors.New("downstream: pod mutator needs an API URL")
	}
	inputs := &podInputs{
		fromCluster: fromCluster,
		nameservers: o.Nameservers,
		secrets: func() (cache.Indexer, bool) {
			inf, ok := m.Informer(informers.ID{Side: informers.Upstream, GVR: secretsGVR})
			if !ok {
				return nil, false
			}
			return inf.GetIndexer(), true
		},
	}
	cfg := transformation.PodMutatorConfig{APIURL: o.APIURL, Inputs: inputs, CAConfigMap: o.CAConfigMap, UpsyncPods: o.UpsyncPods}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("downstream: %w", err)
	}
	return transformation.WithPodMutator(cfg), nil
}
