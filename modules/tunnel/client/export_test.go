package client

// SetRand replaces the jitter source, for deterministic backoff tests.
func SetRand(c *Client, f func() float64) { c.rnd = f }
