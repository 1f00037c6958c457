package tunneltest

import "github.com/tmc-syncer/syncer/modules/tunnel/server"

// AskedSoFar returns a copy of the questions the Authorizer was asked.
func (a *Auth) AskedSoFar() []server.Attributes {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]server.Attributes(nil), a.Asked...)
}

// ReviewedInSoFar returns a copy of the clusters of the token reviews so far.
func (a *Auth) ReviewedInSoFar() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.ReviewedIn...)
}
