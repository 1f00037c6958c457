// Package statuspage serves the tunnel server's status page: /status (HTML,
// self-contained, no external assets) and /status.json, one row per
// SyncTarget with its readiness, tunnel session (connected since, ping RTT),
// last heartbeat age, synced object counts and recent errors.
package statuspage

import (
	"context"
	"encoding/json"
	"html/template"
	"net/http"
	"sort"
	"strings"
	"time"

	_ "embed"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// Targets lists the known SyncTargets; *monitor.Monitor implements it.
type Targets interface {
	SyncTargets() []*workloadv1alpha1.SyncTarget
	TargetOf(st *workloadv1alpha1.SyncTarget) tunnel.Target
}

// Sessions lists live tunnel sessions; *server.Registry implements it.
type Sessions interface {
	List() []server.SessionInfo
}

// Counter returns the synced object counts of a target by resource
// (e.g. "deployments.apps" → 12). Nil maps show as "—"; *UpstreamCounter implements it.
type Counter interface {
	SyncedObjects(ctx context.Context, t tunnel.Target) map[string]int
}

// Errors returns the recent errors of a target, newest first; *ErrorLog implements it.
type Errors interface {
	RecentErrors(t tunnel.Target) []ErrorEntry
}

// Options configure the page. Every source is optional.
type Options struct {
	Targets  Targets
	Sessions Sessions
	Counter  Counter
	Errors   Errors
	// Threshold is the heartbeat age shown as stale. Default 40 s.
	Threshold time.Duration
	// Clock is the time source. Default real time.
	Clock clock.PassiveClock
}

// Page is the content of /status.json.
type Page struct {
	GeneratedAt      time.Time `json:"generatedAt"`
	ThresholdSeconds float64   `json:"heartbeatThresholdSeconds"`
	Targets          []Row     `json:"targets"`
}

// Row describes one SyncTarget.
type Row struct {
	Cluster string `json:"cluster"`
	Name    string `json:"name"`
	// Known is false for a live session without a SyncTarget in the cache.
	Known        bool   `json:"known"`
	Ready        string `json:"ready"` // True, False or Unknown
	ReadyReason  string `json:"readyReason,omitempty"`
	ReadyMessage string `json:"readyMessage,omitempty"`

	Connected      bool       `json:"connected"`
	ConnectedSince *time.Time `json:"connectedSince,omitempty"`
	RemoteAddr     string     `json:"remoteAddr,omitempty"`
	PingRTTSeconds *float64   `json:"pingRTTSeconds,omitempty"`
	OpenStreams    int        `json:"openStreams"`

	LastHeartbeat       *time.Time `json:"lastHeartbeat,omitempty"`
	HeartbeatAgeSeconds *float64   `json:"heartbeatAgeSeconds,omitempty"`
	HeartbeatStale      bool       `json:"heartbeatStale"`

	Conditions    []Condition    `json:"conditions,omitempty"`
	SyncedObjects map[string]int `json:"syncedObjects,omitempty"`
	Errors        []ErrorEntry   `json:"errors,omitempty"`
}

// Condition is a condition as shown on the page.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// Handler serves /status and /status.json.
type Handler struct {
	opts Options
	tmpl *template.Template
}

var _ http.Handler = (*Handler)(nil)

//go:embed status.html
var pageHTML string

// New returns the status page handler.
func New(opts Options) *Handler {
	if opts.Threshold <= 0 {
		opts.Threshold = 40 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	funcs := template.FuncMap{
		"seconds": humanSeconds,
		"ms":      func(s float64) string { return strings.TrimSuffix(trimFloat(s*1000), ".0") + " ms" },
		"rfc3339": rfc3339,
		"lower":   strings.ToLower,
		"sortedKeys": func(m map[string]int) []string {
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			return keys
		},
	}
	return &Handler{opts: opts, tmpl: template.Must(template.New("status").Funcs(funcs).Parse(pageHTML))}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	switch r.URL.Path {
	case "/status.json":
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(h.Snapshot(r.Context()))
	case "/status", "/status/":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		// Everything is inline: no script, no external resource.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		if err := h.tmpl.Execute(w, h.Snapshot(r.Context())); err != nil {
			http.Error(w, "render status page: "+err.Error(), http.StatusInternalServerError)
		}
	default:
		http.NotFound(w, r)
	}
}

// Snapshot builds the page content now.
func (h *Handler) Snapshot(ctx context.Context) Page {
	now := h.opts.Clock.Now()
	page := Page{GeneratedAt: now.UTC(), ThresholdSeconds: h.opts.Threshold.Seconds(), Targets: []Row{}}
	sessions := map[tunnel.Target]server.SessionInfo{}
	if h.opts.Sessions != nil {
		for _, s := range h.opts.Sessions.List() {
			sessions[s.Target] = s
		}
	}
	seen := map[tunnel.Target]bool{}
	if h.opts.Targets != nil {
		for _, st := range h.opts.Targets.SyncTargets() {
			t := h.opts.Targets.TargetOf(st)
			seen[t] = true
			row := Row{Cluster: t.Cluster, Name: t.Name, Known: true, Ready: "Unknown"}
			if c := st.Status.Conditions.Get(workloadv1alpha1.ReadyCondition); c != nil {
				row.Ready, row.ReadyReason, row.ReadyMessage = string(c.Status), c.Reason, c.Message
			}
			for _, c := range st.Status.Conditions {
				row.Conditions = append(row.Conditions, Condition{Type: string(c.Type), Status: string(c.Status), Reason: c.Reason, Message: c.Message})
				if c.Status == corev1.ConditionFalse && c.Message != "" && c.Type != workloadv1alpha1.ReadyCondition {
					row.Errors = append(row.Errors, ErrorEntry{Time: c.LastTransitionTime.UTC(), Message: string(c.Type) + ": " + c.Message})
				}
			}
			if hb := st.Status.LastSyncerHeartbeatTime; hb != nil {
				at := hb.UTC()
				age := max(now.Sub(at).Seconds(), 0)
				row.LastHeartbeat, row.HeartbeatAgeSeconds = &at, &age
				row.HeartbeatStale = now.Sub(at) > h.opts.Threshold
			}
			page.Targets = append(page.Targets, h.fill(ctx, row, t, sessions))
		}
	}
	for t := range sessions {
		if !seen[t] {
			page.Targets = append(page.Targets, h.fill(ctx, Row{Cluster: t.Cluster, Name: t.Name, Ready: "Unknown"}, t, sessions))
		}
	}
	sort.Slice(page.Targets, func(i, j int) bool {
		a, b := page.Targets[i], page.Targets[j]
		if a.Cluster != b.Cluster {
			return a.Cluster < b.Cluster
		}
		return a.Name < b.Name
	})
	return page
}

// fill adds the session, counts and logged errors of t to row.
func (h *Handler) fill(ctx context.Context, row Row, t tunnel.Target, sessions map[tunnel.Target]server.SessionInfo) Row {
	if s, ok := sessions[t]; ok {
		since := s.ConnectedAt.UTC()
		row.Connected, row.ConnectedSince, row.RemoteAddr, row.OpenStreams = true, &since, s.RemoteAddr, s.Streams
		if s.PingRTT > 0 {
			rtt := s.PingRTT.Seconds()
			row.PingRTTSeconds = &rtt
		}
	}
	if h.opts.Counter != nil {
		row.SyncedObjects = h.opts.Counter.SyncedObjects(ctx, t)
	}
	if h.opts.Errors != nil {
		row.Errors = append(row.Errors, h.opts.Errors.RecentErrors(t)...)
	}
	sort.SliceStable(row.Errors, func(i, j int) bool { return row.Errors[i].Time.After(row.Errors[j].Time) })
	return row
}

func rfc3339(v any) string {
	switch t := v.(type) {
	case time.Time:
		return t.UTC().Format(time.RFC3339)
	case *time.Time:
		if t != nil {
			return t.UTC().Format(time.RFC3339)
		}
	}
	return ""
}
