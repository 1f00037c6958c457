package tunneltest

import "github.com/tmc-syncer/syncer/modules/tunnel/server"

// AskedSoFar returns a copy of the questions the Authorizer was asked.
func (a *Auth) AskedSoFar() []server.Attributes {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]server.Attributes(nil), a.Asked...)
}

// LastReview returns the number of token reviews so far and the cluster of the last one.
func (a *Auth) LastReview() (int, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.Reviews, a.LastReviewedIn
}
