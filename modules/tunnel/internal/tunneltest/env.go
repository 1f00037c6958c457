package tunneltest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// Target is the SyncTarget the helpers use.
var Target = tunnel.Target{Cluster: "root:org:ws", Name: "cluster-1"}

// Workspace is a kcp workspace whose namespaces "team*" are placed on Target.
const Workspace = "root:org:team"

// Tokens maps bearer tokens to users.
const (
	// SyncerToken authenticates the syncer, which may update synctargets/tunnel.
	SyncerToken = "syncer-token"
	// UserToken authenticates "alice", who may do anything in namespaces "team*".
	UserToken = "alice-token"
	// BobToken authenticates "bob", who may do what alice may.
	BobToken = "bob-token"
	// OtherToken authenticates "mallory", who may do nothing.
	OtherToken = "mallory-token"
	// BrokenToken makes the authenticator fail.
	BrokenToken = "broken-token"
	// IntruderToken authenticates another service account that RBAC also lets update
	// the Target's tunnel.
	IntruderToken = "intruder-token"
	// WorkspaceUserToken authenticates "carol", a user of Workspace (not of the Target's
	// cluster) who may do anything in its namespaces "team*".
	WorkspaceUserToken = "carol-token"
	// SyncerUser is the identity of SyncerToken.
	SyncerUser = "system:serviceaccount:default:syncer"
)

// Auth is a fake Authenticator and Authorizer.
type Auth struct {
	mu      sync.Mutex
	Denied  bool // deny every question
	Asked   []server.Attributes
	Reviews int
	// LastReviewedIn is the cluster of the last token review (only the last: hostile tests
	// send tens of thousands).
	LastReviewedIn string
	revoked        map[string]bool
	broken         bool
}

// SetBroken makes every token review fail (true) or work again.
func (a *Auth) SetBroken(b bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.broken = b
}

// Revoke makes token invalid from now on.
func (a *Auth) Revoke(token string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.revoked == nil {
		a.revoked = map[string]bool{}
	}
	a.revoked[token] = true
}

// AuthenticateToken implements server.Authenticator.
func (a *Auth) AuthenticateToken(_ context.Context, cluster string, token string) (server.UserInfo, bool, error) {
	a.mu.Lock()
	a.Reviews++
	a.LastReviewedIn = cluster
	revoked, broken := a.revoked[token], a.broken
	a.mu.Unlock()
	if broken {
		return server.UserInfo{}, false, errors.New("token review backend down")
	}
	if revoked {
		return server.UserInfo{}, false, nil
	}
	switch token {
	case SyncerToken:
		return server.UserInfo{Name: SyncerUser, UID: "uid-syncer", Groups: []string{"system:serviceaccounts"}}, true, nil
	case IntruderToken:
		return server.UserInfo{Name: "system:serviceaccount:other:intruder", UID: "uid-intruder"}, true, nil
	case UserToken:
		return server.UserInfo{Name: "alice"}, true, nil
	case BobToken:
		return server.UserInfo{Name: "bob"}, true, nil
	case OtherToken:
		return server.UserInfo{Name: "mallory"}, true, nil
	case WorkspaceUserToken:
		return server.UserInfo{Name: "carol"}, true, nil
	case BrokenToken:
		return server.UserInfo{}, false, errors.New("token review backend down")
	}
	return server.UserInfo{}, false, nil
}

// Authorize implements server.Authorizer.
func (a *Auth) Authorize(_ context.Context, at server.Attributes) (bool, string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.Asked = append(a.Asked, at)
	if a.Denied {
		return false, "denied by test", nil
	}
	switch at.User.Name {
	case SyncerUser, "system:serviceaccount:other:intruder":
		return at.Verb == "update" && at.Resource == "synctargets" && at.Subresource == "tunnel" &&
			at.Group == "workload.kcp.io" && at.Name == Target.Name && at.Cluster == Target.Cluster, "", nil
	case "alice", "bob", "cert-user":
		return strings.HasPrefix(at.Namespace, "team") && at.Cluster == Target.Cluster, "", nil
	case "carol":
		return strings.HasPrefix(at.Namespace, "team") && at.Cluster == Workspace, "", nil
	}
	return false, "no RBAC", nil
}

// SetDenied switches denial of every question.
func (a *Auth) SetDenied(d bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.Denied = d
}

// MapNamespace maps "team*" to "kcp-team*" and refuses others and "team-gone".
func MapNamespace(_ context.Context, t tunnel.Target, ns string) (string, error) {
	if t != Target {
		return "", errors.New("unknown target")
	}
	if strings.HasPrefix(ns, "team") && ns != "team-gone" {
		return "kcp-" + ns, nil
	}
	return "", errors.New("namespace not synced")
}

// MapWorkspaceNamespace maps "team*" of Workspace to "kcp-ws-team*" and refuses other
// workspaces and namespaces and "team-unplaced" (not placed on Target).
func MapWorkspaceNamespace(_ context.Context, t tunnel.Target, workspace, ns string) (string, error) {
	if t != Target {
		return "", errors.New("unknown target")
	}
	if workspace == Workspace && strings.HasPrefix(ns, "team") && ns != "team-unplaced" {
		return "kcp-ws-" + ns, nil
	}
	return "", errors.New("namespace not placed on the target")
}

// Server is a tunnel server on a loopback listener that can be stopped and
// restarted on the same address.
type Server struct {
	t      testing.TB
	opts   server.Options
	Addr   string
	URL    string
	Auth   *Auth
	srv    *server.Server
	cancel context.CancelFunc
	done   chan error
}

// NewServer starts a tunnel server; opts may be tweaked by mutate. With pki
// nil the server is insecure.
func NewServer(t testing.TB, pki *PKI, upstream string, mutate func(*server.Options)) *Server {
	t.Helper()
	auth := &Auth{}
	opts := server.Options{
		UpstreamAddress: upstream,
		Authenticator:   auth,
		Authorizer:      auth,
		NamespaceMapper: MapNamespace,
		Logger:          logr.Discard(),
		Registry:        server.NewRegistry(),
	}
	scheme := "http"
	if pki == nil {
		opts.Insecure = true
	} else {
		opts.TLSConfig = pki.ServerTLS()
		scheme = "https"
	}
	if mutate != nil {
		mutate(&opts)
	}
	s := &Server{t: t, opts: opts, Auth: auth}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	s.URL = scheme + "://" + s.Addr
	s.start(ln)
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start(ln net.Listener) {
	srv, err := server.New(s.opts)
	if err != nil {
		s.t.Fatal(err)
	}
	s.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done = make(chan error, 1)
	go func() { s.done <- srv.Serve(ctx, ln) }()
}

// Server returns the running server.
func (s *Server) Server() *server.Server { return s.srv }

// Registry returns the session registry (shared across restarts).
func (s *Server) Registry() *server.Registry { return s.opts.Registry }

// Stop stops the server and closes every session. It is idempotent.
func (s *Server) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	if err := <-s.done; err != nil {
		s.t.Errorf("tunnel server: %v", err)
	}
	s.cancel = nil
}

// Restart starts the server again on the same address.
func (s *Server) Restart() {
	s.t.Helper()
	var ln net.Listener
	var err error
	for range 50 {
		ln, err = net.Listen("tcp", s.Addr)
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	s.start(ln)
}

// EchoServer starts a loopback TCP echo server and returns its address.
func EchoServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer func() { _ = c.Close() }()
				_, _ = io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// Eventually polls cond every 10 ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %s", timeout, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BearerRequest builds a request with a bearer token.
func BearerRequest(ctx context.Context, t testing.TB, method, url, token string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req
}
