package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// acquireLease takes t's session Lease for this replica (several replicas only).
func (s *Server) acquireLease(ctx context.Context, t tunnel.Target, user UserInfo, remote string) (int, error) {
	if s.opts.Replicas == nil {
		return 0, nil
	}
	err := s.opts.Replicas.acquire(ctx, t, user, remote, true)
	switch {
	case err == nil:
		return 0, nil
	case errors.Is(err, errHeldByAnother):
		return http.StatusConflict, fmt.Errorf("sync target %s is connected with another identity (%w)", t, err)
	default:
		return http.StatusServiceUnavailable, fmt.Errorf("sync target %s: cannot record the session: %w", t, err)
	}
}

func (s *Server) holdLease(sess *Session) {
	if s.opts.Replicas != nil {
		s.opts.Replicas.hold(sess)
	}
}

// releaseLease gives t's Lease up if this replica holds it for sess (nil: for a session
// that never started). It runs after the session ended, also at shutdown.
func (s *Server) releaseLease(t tunnel.Target, sess *Session) {
	if s.opts.Replicas == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.opts.Replicas.release(ctx, t, sess)
}

// proxyCaller returns who asks for a control plane → cluster request: on the replica
// port, the identity the forwarding replica authorised (trusted only there, from a
// replica certificate); anywhere else the caller authenticated and authorised here, in
// cluster (t's own, or the workspace the request names under kcp).
func (s *Server) proxyCaller(w http.ResponseWriter, r *http.Request, cluster string, req tunnel.APIRequest, verb string) (UserInfo, bool) {
	if isPeerRequest(r) {
		user, err := s.forwardedUser(r)
		if err != nil {
			http.Error(w, "forwarded request refused: "+err.Error(), http.StatusForbidden)
			return UserInfo{}, false
		}
		r.Header.Del(ForwardedUserHeader)
		return user, true
	}
	r.Header.Del(ForwardedUserHeader)
	user, code, err := s.authenticate(r, s.opts.Authenticator, cluster)
	if err != nil {
		refuseAuthentication(w, code, err)
		return UserInfo{}, false
	}
	attrs := Attributes{
		User: user, Cluster: cluster, Verb: verb, Group: req.Group, Resource: req.Resource,
		Subresource: req.Subresource, Namespace: req.Namespace, Name: req.Name,
	}
	if code, err := s.authorize(r.Context(), attrs); err != nil {
		http.Error(w, err.Error(), code)
		return UserInfo{}, false
	}
	return user, true
}
