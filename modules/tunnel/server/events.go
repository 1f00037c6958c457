package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/tmc-syncer/syncer/modules/engine/clients"
	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// EventSink is what the Event relay needs from the control plane, with the tunnel
// server's own identity. kcp's syncer virtual workspace serves no Events and kcp's
// install lets the syncer write nothing in a user's workspace; the relay writes the
// syncer's Events there for it, within the namespaces placed on its SyncTarget.
type EventSink interface {
	// Placed reports whether namespace of logical cluster cluster is placed on the
	// SyncTarget t (carries t's state label).
	Placed(ctx context.Context, t tunnel.Target, cluster, namespace string) (bool, error)
	// Client returns a clientset of logical cluster cluster.
	Client(cluster string) (kubernetes.Interface, error)
}

// Defaults of the Event relay.
const (
	// DefaultEventQPS and DefaultEventBurst bound the Events one SyncTarget relays.
	DefaultEventQPS   = 20
	DefaultEventBurst = 50

	maxRelayTargets   = 4096
	placedTTL         = 30 * time.Second
	notPlacedTTL      = 5 * time.Second
	maxEventMessage   = 1024
	maxReportingField = 128
	relayAnnotations  = "syncer.tmc.dev/"
)

// eventRelay holds the relay's bounded state; filled only after authorisation.
type eventRelay struct {
	sink     EventSink
	placed   *lru[string, bool]
	limiters *lru[tunnel.Target, *rate.Limiter]
	qps      rate.Limit
	burst    int
}

func newEventRelay(sink EventSink, maxTargets int, qps float64, burst int) *eventRelay {
	if sink == nil {
		return nil
	}
	if qps <= 0 {
		qps = DefaultEventQPS
	}
	if burst <= 0 {
		burst = DefaultEventBurst
	}
	return &eventRelay{
		sink: sink, placed: newLRU[string, bool](4 * maxTargets), limiters: newLRU[tunnel.Target, *rate.Limiter](maxTargets),
		qps: rate.Limit(qps), burst: burst,
	}
}

func (e *eventRelay) allow(t tunnel.Target) bool {
	l, ok := e.limiters.get(t, time.Time{})
	if !ok {
		l = rate.NewLimiter(e.qps, e.burst)
		e.limiters.add(t, l, time.Time{})
	}
	return l.Allow()
}

func (e *eventRelay) isPlaced(ctx context.Context, t tunnel.Target, p eventPath) (bool, error) {
	k := t.String() + "|" + p.cluster + "|" + p.namespace
	now := time.Now()
	if v, ok := e.placed.get(k, now); ok {
		return v, nil
	}
	ok, err := e.sink.Placed(ctx, t, p.cluster, p.namespace)
	if err != nil {
		return false, err
	}
	ttl := placedTTL
	if !ok {
		ttl = notPlacedTTL
	}
	e.placed.add(k, ok, now.Add(ttl))
	return ok, nil
}

// eventPath is a parsed relay path: /clusters/<cluster>/api/v1/namespaces/<ns>/events[/<name>].
type eventPath struct {
	cluster, namespace, name string
}

// parseEventPath accepts only the core v1 Event paths the relay serves.
func parseEventPath(p string) (eventPath, error) {
	if p == "" || path.Clean(p) != p {
		return eventPath{}, fmt.Errorf("event relay path %.128q is not clean", p)
	}
	seg := strings.Split(strings.TrimPrefix(p, "/"), "/")
	if (len(seg) != 7 && len(seg) != 8) || seg[0] != "clusters" || seg[2] != "api" || seg[3] != "v1" ||
		seg[4] != "namespaces" || seg[6] != "events" {
		return eventPath{}, fmt.Errorf("event relay path %.128q is not /clusters/<cluster>/api/v1/namespaces/<namespace>/events[/<name>]", p)
	}
	out := eventPath{cluster: seg[1], namespace: seg[5]}
	if !clients.ValidCluster(out.cluster) {
		return eventPath{}, fmt.Errorf("event relay path: %.64q is not a logical cluster name", out.cluster)
	}
	if errs := validation.IsDNS1123Label(out.namespace); len(errs) > 0 {
		return eventPath{}, fmt.Errorf("event relay path: namespace %.64q: %s", out.namespace, strings.Join(errs, "; "))
	}
	if len(seg) == 8 {
		out.name = seg[7]
		if errs := validation.IsDNS1123Subdomain(out.name); len(errs) > 0 {
			return eventPath{}, fmt.Errorf("event relay path: name %.64q: %s", out.name, strings.Join(errs, "; "))
		}
	}
	return out, nil
}

// serveEvents relays a syncer's Event write to a workspace placed on its SyncTarget: the
// caller must be the identity allowed to hold t's tunnel, the namespace must carry t's
// state label, and the Event is rebuilt from the fields an Event of a syncer has, its
// reporter forced to tmc-syncer/<t.Name>. Only the relay's own Events can be read or
// patched, and only their repeat fields.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request, t tunnel.Target, rest string) {
	if s.events == nil {
		s.refuseEvent(w, t, "the Event relay is not enabled on this tunnel server", http.StatusNotFound)
		return
	}
	p, err := parseEventPath(rest)
	if err != nil {
		s.refuseEvent(w, t, err.Error(), http.StatusNotFound)
		return
	}
	switch {
	case r.Method == http.MethodPost && p.name == "":
	case (r.Method == http.MethodGet || r.Method == http.MethodPatch) && p.name != "":
	default:
		s.refuseEvent(w, t, fmt.Sprintf("the Event relay serves create, get and merge-patch of Events, not %s %s", r.Method, rest), http.StatusMethodNotAllowed)
		return
	}
	if !limitBody(w, r, s.opts.Limits.MaxRequestBodyBytes) {
		return
	}
	user, code, err := s.authenticate(r, s.opts.SyncerAuthenticator, t.Cluster)
	if err != nil {
		if code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tmc-syncer-tunnel"`)
		}
		s.refuseEvent(w, t, err.Error(), code)
		return
	}
	// The holder of t's session here is allowed already; elsewhere (another replica holds
	// it, or it is reconnecting) the caller must be allowed to hold t's tunnel.
	if holder, ok := s.registry.holder(t); !ok || !sameIdentity(holder, user) {
		attrs := Attributes{User: user, Cluster: t.Cluster, Verb: s.opts.TunnelVerb,
			Group: "workload.kcp.io", Resource: "synctargets", Subresource: "tunnel", Name: t.Name}
		if code, err := s.authorize(r.Context(), attrs); err != nil {
			s.refuseEvent(w, t, err.Error(), code)
			return
		}
	}
	if !s.events.allow(t) {
		w.Header().Set("Retry-After", "1")
		s.refuseEvent(w, t, fmt.Sprintf("too many Events relayed for %s (%g/s)", t, float64(s.events.qps)), http.StatusTooManyRequests)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	placed, err := s.events.isPlaced(ctx, t, p)
	if err != nil {
		s.refuseEvent(w, t, fmt.Sprintf("cannot tell whether namespace %s of %s is placed on %s: %v", p.namespace, p.cluster, t, err), http.StatusServiceUnavailable)
		return
	}
	if !placed {
		s.refuseEvent(w, t, fmt.Sprintf("namespace %s of %s is not placed on sync target %s", p.namespace, p.cluster, t), http.StatusForbidden)
		return
	}
	kube, err := s.events.sink.Client(p.cluster)
	if err != nil {
		s.refuseEvent(w, t, err.Error(), http.StatusServiceUnavailable)
		return
	}
	events := kube.CoreV1().Events(p.namespace)
	reporter := "tmc-syncer/" + t.Name
	s.log.V(4).Info("relaying Event", "syncTarget", t.String(), "cluster", p.cluster, "namespace", p.namespace, "name", p.name, "method", r.Method)
	switch r.Method {
	case http.MethodPost:
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			s.refuseEvent(w, t, fmt.Sprintf("the Event relay reads application/json, not %.64q", ct), http.StatusUnsupportedMediaType)
			return
		}
		in, err := decodeEvent(r.Body, p, reporter)
		if err != nil {
			s.refuseEvent(w, t, err.Error(), http.StatusBadRequest)
			return
		}
		out, err := events.Create(ctx, in, metav1.CreateOptions{FieldManager: "tmc-syncer"})
		writeEvent(w, http.StatusCreated, out, err)
	case http.MethodGet:
		out, err := ownEvent(ctx, events, p, reporter)
		writeEvent(w, http.StatusOK, out, err)
	case http.MethodPatch:
		patch, err := decodeRepeatPatch(r)
		if err != nil {
			s.refuseEvent(w, t, err.Error(), http.StatusBadRequest)
			return
		}
		if _, err := ownEvent(ctx, events, p, reporter); err != nil {
			writeEvent(w, 0, nil, err)
			return
		}
		out, err := events.Patch(ctx, p.name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "tmc-syncer"})
		writeEvent(w, http.StatusOK, out, err)
	}
}

// eventGetter is the one call ownEvent needs.
type eventGetter interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Event, error)
}

// ownEvent reads the Event at p and answers NotFound for one the relay did not write for
// reporter, so no syncer reads or changes another component's Events.
func ownEvent(ctx context.Context, events eventGetter, p eventPath, reporter string) (*corev1.Event, error) {
	ev, err := events.Get(ctx, p.name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if ev.ReportingController != reporter {
		return nil, apierrors.NewNotFound(corev1.Resource("events"), p.name)
	}
	return ev, nil
}

// decodeEvent reads a syncer's Event and keeps only what such an Event has: its name,
// the relay's annotations, the object it is about (in the request's namespace), reason,
// message, type, count and timestamps. The reporter is forced, so a syncer cannot pass
// its Events off as another component's.
func decodeEvent(body io.Reader, p eventPath, reporter string) (*corev1.Event, error) {
	var in corev1.Event
	if err := json.NewDecoder(body).Decode(&in); err != nil {
		return nil, fmt.Errorf("decode Event: %w", err)
	}
	if in.Namespace != "" && in.Namespace != p.namespace {
		return nil, fmt.Errorf("the Event's namespace %.64q is not the request's %s", in.Namespace, p.namespace)
	}
	if errs := validation.IsDNS1123Subdomain(in.Name); len(errs) > 0 {
		return nil, fmt.Errorf("event name %.64q: %s", in.Name, strings.Join(errs, "; "))
	}
	if in.InvolvedObject.Namespace != p.namespace {
		return nil, fmt.Errorf("the Event is about an object in namespace %.64q, not in %s", in.InvolvedObject.Namespace, p.namespace)
	}
	if in.InvolvedObject.Name == "" || in.InvolvedObject.Kind == "" {
		return nil, errors.New("the Event names no object (involvedObject kind and name)")
	}
	if in.Type != corev1.EventTypeNormal && in.Type != corev1.EventTypeWarning {
		return nil, fmt.Errorf("event type %.32q is neither Normal nor Warning", in.Type)
	}
	msg := in.Message
	if len(msg) > maxEventMessage {
		msg = msg[:maxEventMessage]
	}
	instance := in.ReportingInstance
	if len(instance) > maxReportingField {
		instance = instance[:maxReportingField]
	}
	out := &corev1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: in.Name, Namespace: p.namespace},
		InvolvedObject:      in.InvolvedObject,
		Reason:              in.Reason,
		Message:             msg,
		Type:                in.Type,
		Count:               in.Count,
		FirstTimestamp:      in.FirstTimestamp,
		LastTimestamp:       in.LastTimestamp,
		Source:              corev1.EventSource{Component: reporter},
		ReportingController: reporter,
		ReportingInstance:   instance,
	}
	for k, v := range in.Annotations {
		if strings.HasPrefix(k, relayAnnotations) {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	return out, nil
}

// decodeRepeatPatch reads a merge patch that changes only an Event's repeat fields.
func decodeRepeatPatch(r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, string(types.MergePatchType)) {
		return nil, fmt.Errorf("the Event relay takes merge patches (%s), not %.64q", types.MergePatchType, ct)
	}
	var in map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		return nil, fmt.Errorf("decode patch: %w", err)
	}
	out := map[string]any{}
	for k, v := range in {
		switch k {
		case "count":
			var n int32
			if err := json.Unmarshal(v, &n); err != nil {
				return nil, fmt.Errorf("patch count: %w", err)
			}
			out[k] = n
		case "lastTimestamp":
			var ts metav1.Time
			if err := json.Unmarshal(v, &ts); err != nil {
				return nil, fmt.Errorf("patch lastTimestamp: %w", err)
			}
			out[k] = ts
		case "message":
			var m string
			if err := json.Unmarshal(v, &m); err != nil {
				return nil, fmt.Errorf("patch message: %w", err)
			}
			if len(m) > maxEventMessage {
				m = m[:maxEventMessage]
			}
			out[k] = m
		default:
			return nil, fmt.Errorf("the Event relay patches count, lastTimestamp and message only, not %.64q", k)
		}
	}
	return json.Marshal(out)
}

// writeEvent answers like kube-apiserver: the Event, or the Status of err.
func writeEvent(w http.ResponseWriter, code int, ev *corev1.Event, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		var st apierrors.APIStatus
		status := metav1.Status{Status: metav1.StatusFailure, Code: http.StatusBadGateway, Message: err.Error()}
		if errors.As(err, &st) {
			status = st.Status()
		}
		status.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
		if status.Code == 0 {
			status.Code = http.StatusInternalServerError
		}
		w.WriteHeader(int(status.Code))
		_ = json.NewEncoder(w).Encode(status)
		return
	}
	out := ev.DeepCopy()
	out.TypeMeta = metav1.TypeMeta{Kind: "Event", APIVersion: "v1"}
	out.ManagedFields = nil
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(out)
}

// refuseEvent logs and answers a refused relay request.
func (s *Server) refuseEvent(w http.ResponseWriter, t tunnel.Target, msg string, code int) {
	s.log.V(2).Info("Event relay refused", "syncTarget", t.String(), "code", code, "reason", msg)
	relayError(w, msg, code)
}

// relayError answers with a kube-apiserver Status, so that the syncer's client-go reads
// the reason (Forbidden, NotFound, TooManyRequests…) rather than an unknown error.
func relayError(w http.ResponseWriter, msg string, code int) {
	writeEvent(w, 0, nil, &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: int32(code), Reason: reasonFor(code), Message: msg,
	}})
}

func reasonFor(code int) metav1.StatusReason {
	switch code {
	case http.StatusBadRequest:
		return metav1.StatusReasonBadRequest
	case http.StatusUnauthorized:
		return metav1.StatusReasonUnauthorized
	case http.StatusForbidden:
		return metav1.StatusReasonForbidden
	case http.StatusNotFound:
		return metav1.StatusReasonNotFound
	case http.StatusMethodNotAllowed:
		return metav1.StatusReasonMethodNotAllowed
	case http.StatusRequestEntityTooLarge:
		return metav1.StatusReasonRequestEntityTooLarge
	case http.StatusTooManyRequests:
		return metav1.StatusReasonTooManyRequests
	case http.StatusUnsupportedMediaType:
		return metav1.StatusReasonUnsupportedMediaType
	case http.StatusServiceUnavailable:
		return metav1.StatusReasonServiceUnavailable
	}
	return metav1.StatusReasonUnknown
}
