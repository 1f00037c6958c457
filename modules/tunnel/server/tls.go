package server

import "crypto/tls"

// atLeastTLS12 raises a caller-supplied serving configuration to TLS 1.2 at least.
func atLeastTLS12(cfg *tls.Config) *tls.Config {
	cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS12)
	return cfg
}
