// Package queue runs syncer controllers: a typed rate-limited work queue per
// controller, workers that call Reconcile, retries with per-item exponential
// backoff under an overall token bucket, panic recovery and drain on shutdown.
//
// It follows client-go's sample-controller: informer handlers enqueue keys,
// never objects, and Reconcile re-reads state from the caches.
package queue
