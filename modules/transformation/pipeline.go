package transformation

import (
	"errors"
	"fmt"
	"reflect"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// Context is what the pipeline knows about the syncer it runs in.
type Context struct {
	// SyncTargetKey is the sync target key (computed by the engine); required.
	SyncTargetKey string
	// SyncTargetName is the SyncTarget's name; required.
	SyncTargetName string
	// SyncTargetUID is the SyncTarget's UID; part of the namespace locator.
	SyncTargetUID string
	// SyncTargetCluster is the SyncTarget's logical cluster; part of the namespace locator.
	SyncTargetCluster string
	// LogicalCluster is used when an upstream object has no kcp.io/cluster annotation, as on
	// a plain kube-apiserver (the syncer's --from-cluster).
	LogicalCluster string
	// Namespaces, when set, finds existing downstream namespaces by locator, so that objects
	// go to a namespace an older kcp created under another name (see namespace.Resolve);
	// nil places every object in namespace.DownstreamName of its locator.
	Namespaces namespace.Lookup
}

func (c Context) validate() error {
	if c.SyncTargetKey == "" {
		return errors.New("context has no sync target key")
	}
	if c.SyncTargetName == "" {
		return errors.New("context has no sync target name")
	}
	return nil
}

// Direction is the way an object travels through the pipeline.
type Direction int

const (
	// Down is upstream spec to downstream object.
	Down Direction = iota
	// Up is downstream status to upstream object.
	Up
)

// String returns "down" or "up".
func (d Direction) String() string {
	if d == Up {
		return "up"
	}
	return "down"
}

// Request is what a stage sees besides the object it transforms. Upstream and Downstream are
// the caller's objects: stages must treat them as read-only.
type Request struct {
	Context
	// Direction is the way the object travels.
	Direction Direction
	// GroupKind is the object's kind.
	GroupKind schema.GroupKind
	// Cluster is the upstream object's logical cluster: its kcp.io/cluster annotation, else
	// Context.LogicalCluster.
	Cluster string
	// Upstream is the upstream object as given to the pipeline.
	Upstream *unstructured.Unstructured
	// Downstream is the downstream object (Up direction only).
	Downstream *unstructured.Unstructured
}

// Locator returns the namespace locator of the upstream object (Namespace is empty for
// cluster-scoped objects).
func (r *Request) Locator() namespace.Locator {
	return r.locator(r.Cluster, r.Upstream.GetNamespace())
}

// UpstreamCluster returns the logical cluster of an upstream object: its kcp.io/cluster
// annotation, else c.LogicalCluster.
func (c Context) UpstreamCluster(upstream *unstructured.Unstructured) string {
	if upstream != nil {
		if cluster, _ := annotation(upstream.Object, kcp.ClusterAnnotation); cluster != "" {
			return cluster
		}
	}
	return c.LogicalCluster
}

// Locator returns the namespace locator of an upstream object, the same one ToDownstream uses
// to pick its downstream namespace; pass it to namespace.DownstreamNamespace to create that
// namespace.
func (c Context) Locator(upstream *unstructured.Unstructured) namespace.Locator {
	return c.locator(c.UpstreamCluster(upstream), upstream.GetNamespace())
}

// DownstreamNamespace returns the downstream namespace ToDownstream puts a namespaced upstream
// object in: the existing namespace c.Namespaces finds for its locator, else the one named
// after the locator.
func (c Context) DownstreamNamespace(upstream *unstructured.Unstructured) (string, error) {
	return namespace.Resolve(c.Locator(upstream), c.Namespaces)
}

func (c Context) locator(cluster, ns string) namespace.Locator {
	return namespace.Locator{
		SyncTarget: namespace.SyncTarget{
			Cluster: c.SyncTargetCluster,
			Name:    c.SyncTargetName,
			UID:     c.SyncTargetUID,
		},
		Cluster:   cluster,
		Namespace: ns,
	}
}

// Stage is one ordered step of a chain. Transform mutates obj, the pipeline's private deep copy
// (going down, a copy without .status and metadata.managedFields, which never go down); it
// returns Skip(...) to drop the object, or an error that fails it.
type Stage interface {
	// Name names the stage in errors and skips.
	Name() string
	// Transform applies the stage to obj.
	Transform(req *Request, obj *unstructured.Unstructured) error
}

// NewStage wraps a function as a Stage.
func NewStage(name string, fn func(req *Request, obj *unstructured.Unstructured) error) Stage {
	return funcStage{name: name, fn: fn}
}

type funcStage struct {
	name string
	fn   func(*Request, *unstructured.Unstructured) error
}

func (s funcStage) Name() string { return s.name }

func (s funcStage) Transform(req *Request, obj *unstructured.Unstructured) error {
	return s.fn(req, obj)
}

// Transformer is the contract the engine codes against; *Pipeline implements it.
type Transformer interface {
	// ToDownstream returns the object the physical cluster should hold for upstream.
	ToDownstream(ctx Context, upstream *unstructured.Unstructured) (*unstructured.Unstructured, error)
	// StatusToUpstream returns upstream updated with downstream's status and whether it changed.
	StatusToUpstream(ctx Context, downstream, upstream *unstructured.Unstructured) (*unstructured.Unstructured, bool, error)
}

var _ Transformer = (*Pipeline)(nil)

// Option configures a Pipeline.
type Option func(*config)

type config struct {
	all           []Stage
	perKind       map[schema.GroupKind][]Stage
	status        []Stage
	clusterScoped map[schema.GroupKind]bool
}

// WithStage appends stages to the downstream chain of every kind, after the built-in ones.
func WithStage(stages ...Stage) Option {
	return func(c *config) { c.all = append(c.all, stages...) }
}

// WithKindStage appends stages to the downstream chain of one kind, after the built-in ones
// and those added by WithStage.
func WithKindStage(gk schema.GroupKind, stages ...Stage) Option {
	return func(c *config) { c.perKind[gk] = append(c.perKind[gk], stages...) }
}

// WithStatusStage appends stages to the upstream (status) chain of every kind.
func WithStatusStage(stages ...Stage) Option {
	return func(c *config) { c.status = append(c.status, stages...) }
}

// WithClusterScoped allows cluster-scoped kinds to be synced; they keep their name and carry
// the namespace locator on themselves. PersistentVolumes are allowed by default.
func WithClusterScoped(gks ...schema.GroupKind) Option {
	return func(c *config) {
		for _, gk := range gks {
			c.clusterScoped[gk] = true
		}
	}
}

// Pipeline runs the ordered stage chains. It is immutable once built and safe for concurrent
// use.
type Pipeline struct {
	down          map[schema.GroupKind][]Stage
	downDefault   []Stage
	up            []Stage
	clusterScoped map[schema.GroupKind]bool
}

// NewPipeline builds a pipeline with the default chains plus whatever opts add.
//
// The downstream chain is: select, spec-diff, metadata, namespace, rename, the kind's own
// stage (Secret, Service, ServiceAccount, pod-spec carriers), ownership, then caller stages.
// The upstream chain is: select, status, then caller stages.
func NewPipeline(opts ...Option) *Pipeline {
	c := &config{
		perKind:       map[schema.GroupKind][]Stage{},
		clusterScoped: map[schema.GroupKind]bool{{Kind: "PersistentVolume"}: true},
	}
	for _, o := range opts {
		o(c)
	}
	p := &Pipeline{
		down:          map[schema.GroupKind][]Stage{},
		clusterScoped: c.clusterScoped,
	}
	chain := func(kindStages ...Stage) []Stage {
		s := []Stage{
			NewStage("select", p.selectDown),
			NewStage("spec-diff", specDiff),
			NewStage("metadata", stripMetadata),
			NewStage("namespace", mapNamespace),
			NewStage("rename", renameObject),
		}
		s = append(s, kindStages...)
		s = append(s, NewStage("ownership", recordOwner))
		return append(s, c.all...)
	}
	p.downDefault = chain()
	for gk, s := range kindStages() {
		p.down[gk] = chain(s)
	}
	for gk, extra := range c.perKind {
		base, ok := p.down[gk]
		if !ok {
			base = p.downDefault
		}
		p.down[gk] = append(append([]Stage(nil), base...), extra...)
	}
	p.up = append([]Stage{NewStage("select", selectUp), NewStage("status", copyStatus)}, c.status...)
	return p
}

func (p *Pipeline) downChain(gk schema.GroupKind) []Stage {
	if s, ok := p.down[gk]; ok {
		return s
	}
	return p.downDefault
}

// ToDownstream returns the object the physical cluster should hold for upstream, which it
// does not modify. A skipped object yields a *SkipError; any other failure a *StageError (or
// a plain error for invalid input).
func (p *Pipeline) ToDownstream(ctx Context, upstream *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	if err := ctx.validate(); err != nil {
		return nil, fmt.Errorf("transform to downstream: %w", err)
	}
	if upstream == nil || upstream.Object == nil {
		return nil, errors.New("transform to downstream: nil object")
	}
	req := newRequest(ctx, Down, upstream, nil)
	out, err := run(req, upstream, p.downChain(req.GroupKind))
	if err != nil {
		return nil, err
	}
	return out, nil
}

// StatusToUpstream returns a copy of upstream carrying downstream's status: in .status when
// the upstream object has one sync target, in the experimental.status.workload.kcp.io/<key>
// annotation when it has several. changed is false when the result equals upstream, so the
// caller can skip the write. Neither argument is modified.
func (p *Pipeline) StatusToUpstream(ctx Context, downstream, upstream *unstructured.Unstructured) (*unstructured.Unstructured, bool, error) {
	if err := ctx.validate(); err != nil {
		return nil, false, fmt.Errorf("status to upstream: %w", err)
	}
	if upstream == nil || upstream.Object == nil || downstream == nil || downstream.Object == nil {
		return nil, false, errors.New("status to upstream: nil object")
	}
	req := newRequest(ctx, Up, upstream, downstream)
	out, err := run(req, upstream, p.up)
	if err != nil {
		return nil, false, err
	}
	return out, !reflect.DeepEqual(out.Object, upstream.Object), nil
}

func newRequest(ctx Context, dir Direction, upstream, downstream *unstructured.Unstructured) *Request {
	return &Request{
		Context:    ctx,
		Direction:  dir,
		GroupKind:  upstream.GroupVersionKind().GroupKind(),
		Cluster:    ctx.UpstreamCluster(upstream),
		Upstream:   upstream,
		Downstream: downstream,
	}
}

// run copies src and applies the stages in order. A panic (a caller stage's, or a bug of ours)
// becomes a StageError so that one bad object cannot take the syncer down.
func run(req *Request, src *unstructured.Unstructured, stages []Stage) (out *unstructured.Unstructured, err error) {
	ref := ObjectRef{GroupKind: req.GroupKind, Namespace: src.GetNamespace(), Name: src.GetName()}
	current := "copy"
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, &StageError{Object: ref, Stage: current, Err: fmt.Errorf("panic: %v", r)}
		}
	}()
	copied, err := copyObject(src.Object, req.Direction)
	if err != nil {
		return nil, &StageError{Object: ref, Stage: current, Err: err}
	}
	obj := &unstructured.Unstructured{Object: copied}
	for _, s := range stages {
		current = s.Name()
		if err := s.Transform(req, obj); err != nil {
			var skip *SkipError
			if errors.As(err, &skip) {
				filled := *skip
				filled.Object, filled.Stage = ref, current
				return nil, &filled
			}
			return nil, &StageError{Object: ref, Stage: current, Err: err}
		}
	}
	return obj, nil
}
