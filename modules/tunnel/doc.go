// Package tunnel holds the pieces shared by the syncer side (package client)
// and the control-plane side (package server) of the WebSocket tunnel: the
// SyncTarget identity and endpoint paths, the yamux session set-up over a
// WebSocket, the keepalive pinger and the Observer hooks.
//
// One WebSocket carries a yamux session. Streams opened by the client carry
// the syncer's upstream API traffic (raw TCP bytes, TLS end to end, to the one
// upstream address configured on the server). Streams opened by the server
// carry HTTP/1.1 requests from the control plane to the physical cluster.
package tunnel
