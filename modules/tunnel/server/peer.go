package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"time"

	"github.com/go-logr/logr"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// ForwardedUserHeader carries the identity a replica authenticated and authorised when
// it forwards a user's request to the replica holding the session. The holder reads it
// only on its peer listener, from a connection whose client certificate the replica CA
// signed; anywhere else it is ignored.
const ForwardedUserHeader = "X-Tmc-Syncer-Forwarded-User"

// DefaultPeerServerName is the name replicas' certificates carry and are verified for.
const DefaultPeerServerName = "tmc-syncer-tunnel-replica"

// PeerTLS is the mutual TLS between replicas: every replica presents a certificate
// signed by a replica CA (used for nothing else), valid for ServerName, as server and as
// client.
type PeerTLS struct {
	// Server configures the peer listener (client certificate required and verified).
	Server *tls.Config
	// Client configures forwarding to another replica (its certificate verified for
	// ServerName, whatever address the Lease names).
	Client *tls.Config
	// ServerName is the DNS name every replica certificate holds.
	ServerName string
}

// LoadPeerTLS reads the replica certificate, key and CA; serverName "" means
// DefaultPeerServerName.
func LoadPeerTLS(certFile, keyFile, caFile, serverName string) (*PeerTLS, error) {
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, errors.New("replica TLS: certificate, key and CA files are required")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("replica TLS: %w", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("replica TLS: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("replica TLS: %s holds no certificate", caFile)
	}
	return NewPeerTLS(cert, pool, serverName), nil
}

// NewPeerTLS builds the replica TLS from a certificate and the replica CA pool.
func NewPeerTLS(cert tls.Certificate, ca *x509.CertPool, serverName string) *PeerTLS {
	if serverName == "" {
		serverName = DefaultPeerServerName
	}
	return &PeerTLS{
		ServerName: serverName,
		Server: &tls.Config{
			Certificates: []tls.Certificate{cert}, ClientCAs: ca, ClientAuth: tls.RequireAndVerifyClientCert,
			MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"},
		},
		Client: &tls.Config{
			Certificates: []tls.Certificate{cert}, RootCAs: ca, ServerName: serverName,
			MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"},
		},
	}
}

type peerKey struct{}

// withPeerConn is the peer listener's ConnContext: requests on it may carry a forwarded
// identity.
func withPeerConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(withConn(ctx, c), peerKey{}, true)
}

func isPeerRequest(r *http.Request) bool {
	v, _ := r.Context().Value(peerKey{}).(bool)
	return v
}

// ServePeer serves the requests other replicas forward (users' pod logs, exec,
// port-forward and reads for the sessions this replica holds) on ln with mutual TLS,
// until ctx ends. It needs Options.Replicas with Peer TLS.
func (s *Server) ServePeer(ctx context.Context, ln net.Listener) error {
	rep := s.opts.Replicas
	if rep == nil || rep.opts.Peer == nil {
		_ = ln.Close()
		return errors.New("tunnel server: ServePeer needs Replicas with Peer TLS")
	}
	srv := &http.Server{
		Handler:           s,
		ConnContext:       withPeerConn,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    s.opts.Limits.MaxHeaderBytes,
		ErrorLog:          stdlog.New(logWriter{s.log}, "", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tls.NewListener(ln, rep.opts.Peer.Server)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("tunnel server peer listener: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("tunnel server peer listener shutdown: %w", err)
	}
	return nil
}

// forwardedUser returns the identity a replica forwarded with r. Only a request on the
// peer listener whose client certificate the replica CA signed for the replica name may
// carry one.
func (s *Server) forwardedUser(r *http.Request) (UserInfo, error) {
	rep := s.opts.Replicas
	if rep == nil || rep.opts.Peer == nil || !isPeerRequest(r) {
		return UserInfo{}, errors.New("not a replica connection")
	}
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return UserInfo{}, errors.New("no verified replica certificate")
	}
	if err := r.TLS.VerifiedChains[0][0].VerifyHostname(rep.opts.Peer.ServerName); err != nil {
		return UserInfo{}, fmt.Errorf("client certificate is not a replica's: %w", err)
	}
	v := r.Header.Get(ForwardedUserHeader)
	if v == "" || len(v) > 32<<10 {
		return UserInfo{}, errors.New("no forwarded identity")
	}
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return UserInfo{}, fmt.Errorf("forwarded identity: %w", err)
	}
	var u forwardedIdentity
	if err := json.Unmarshal(b, &u); err != nil || u.Name == "" {
		return UserInfo{}, errors.New("forwarded identity: not a user")
	}
	return UserInfo(u), nil
}

type forwardedIdentity struct {
	Name   string              `json:"name"`
	UID    string              `json:"uid,omitempty"`
	Groups []string            `json:"groups,omitempty"`
	Extra  map[string][]string `json:"extra,omitempty"`
}

func encodeForwardedUser(u UserInfo) string {
	b, _ := json.Marshal(forwardedIdentity(u)) //nolint:errchkjson // strings only
	return base64.RawURLEncoding.EncodeToString(b)
}

type forwardKey struct{}

type forwardTo struct {
	holder string
	user   UserInfo
}

// forwarder sends a user's request, already authorised, to the replica holding the
// session, over mutual TLS.
type forwarder struct {
	tr *http.Transport
	rp *httputil.ReverseProxy
}

func newForwarder(peer *PeerTLS, log logr.Logger) *forwarder {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
		TLSClientConfig:       peer.Client,
		TLSHandshakeTimeout:   5 * time.Second,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ResponseHeaderTimeout: 0, // exec and follow=true may wait long
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			to, _ := pr.In.Context().Value(forwardKey{}).(forwardTo)
			pr.Out.URL.Scheme = "https"
			pr.Out.URL.Host = to.holder
			pr.Out.Host = to.holder
			tunnel.StripCredentials(pr.Out.Header)
			pr.Out.Header.Set(ForwardedUserHeader, encodeForwardedUser(to.user))
		},
		Transport:     tr,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			to, _ := r.Context().Value(forwardKey{}).(forwardTo)
			log.Info("forwarding to the replica holding the session failed", "replica", to.holder, "path", r.URL.Path, "err", err.Error())
			http.Error(w, "the tunnel server replica holding this sync target's session is unreachable", http.StatusServiceUnavailable)
		},
	}
	return &forwarder{tr: tr, rp: rp}
}

// forward sends r (authorised for user) to the replica holding t's session and reports
// whether there was one to send it to.
func (r *Replicas) forwardRequest(w http.ResponseWriter, req *http.Request, t tunnel.Target, user UserInfo) bool {
	if r.forward == nil {
		return false
	}
	holder := r.Holder(t)
	if holder == "" || holder == r.opts.Self {
		return false
	}
	r.log.V(2).Info("forwarding request to the replica holding the session", "syncTarget", t.String(), "replica", holder, "user", user.Name)
	ctx := context.WithValue(req.Context(), forwardKey{}, forwardTo{holder: holder, user: user})
	r.forward.rp.ServeHTTP(w, req.WithContext(ctx))
	return true
}
