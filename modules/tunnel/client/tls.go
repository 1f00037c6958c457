package client

import "crypto/tls"

// secureTLS returns a copy of cfg (or a new config) that negotiates at least TLS 1.2. The
// server certificate is always verified: cfg.RootCAs, or the system pool when nil.
func secureTLS(cfg *tls.Config) *tls.Config {
	if cfg == nil {
		cfg = &tls.Config{}
	} else {
		cfg = cfg.Clone()
	}
	cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS12)
	return cfg
}
