package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// credential is what a session was authenticated with, kept to check it again.
type credential struct {
	token        string    // bearer token, "" for a client certificate
	certNotAfter time.Time // expiry of the client certificate, zero for a token
}

func credentialOf(r *http.Request) credential {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		return credential{certNotAfter: r.TLS.VerifiedChains[0][0].NotAfter}
	}
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return credential{token: strings.TrimSpace(token)}
}

// reviewTimeout bounds one re-check of a session.
const reviewTimeout = 10 * time.Second

// reauthorizeConcurrency bounds the re-checks in flight, so that a server with many
// sessions does not burst its review budget every period.
const reauthorizeConcurrency = 4

// reauthorizeLoop checks every session's identity each ReauthorizePeriod, until the
// server closes. One loop for all sessions: a session costs no goroutine or timer of its
// own.
func (s *Server) reauthorizeLoop() {
	if s.opts.ReauthorizePeriod < 0 {
		return
	}
	timer := time.NewTimer(s.opts.ReauthorizePeriod)
	defer timer.Stop()
	for {
		select {
		case <-s.baseCtx.Done():
			return
		case <-timer.C:
		}
		var g errgroup.Group
		g.SetLimit(reauthorizeConcurrency)
		for _, sess := range s.registry.all() {
			g.Go(func() error {
				s.reauthorize(sess)
				return nil
			})
		}
		_ = g.Wait()
		timer.Reset(s.opts.ReauthorizePeriod)
	}
}

// reauthorize closes sess (reason revoked) when its identity no longer holds. A backend
// that cannot decide keeps the session: an API server restart must not drop every tunnel.
func (s *Server) reauthorize(sess *Session) {
	ctx, cancel := context.WithTimeout(s.baseCtx, reviewTimeout)
	defer cancel()
	log := s.log.WithValues("syncTarget", sess.Target().String(), "user", sess.User.Name, "remote", sess.RemoteAddr)
	err := s.stillAuthorized(ctx, sess.cred, sess.attrs)
	if err == nil {
		return
	}
	var revoked revokedError
	if !errors.As(err, &revoked) {
		log.Info("tunnel re-authorization undecided, session kept", "err", err.Error())
		return
	}
	log.Info("tunnel closed: authorization revoked", "err", err.Error())
	sess.Close(tunnel.ReasonRevoked)
}

// revokedError is a definite no from the re-check.
type revokedError struct{ msg string }

func (e revokedError) Error() string { return e.msg }

// stillAuthorized returns nil, a revokedError, or another error when it cannot decide.
func (s *Server) stillAuthorized(ctx context.Context, cred credential, attrs Attributes) error {
	if cred.token != "" {
		u, ok, err := s.opts.SyncerAuthenticator.AuthenticateToken(ctx, attrs.Cluster, cred.token)
		if err != nil {
			return fmt.Errorf("token review: %w", err)
		}
		if !ok {
			return revokedError{"the token is no longer valid"}
		}
		if !sameIdentity(u, attrs.User) {
			return revokedError{fmt.Sprintf("the token now authenticates %q", u.Name)}
		}
	} else if !cred.certNotAfter.IsZero() && time.Now().After(cred.certNotAfter) {
		return revokedError{"the client certificate expired"}
	}
	ok, reason, err := s.opts.Authorizer.Authorize(ctx, attrs)
	if err != nil {
		return fmt.Errorf("subject access review: %w", err)
	}
	if !ok {
		return revokedError{fmt.Sprintf("user %q may no longer %s: %s", attrs.User.Name, attrs, reason)}
	}
	return nil
}
