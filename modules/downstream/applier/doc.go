// Package applier writes downstream objects: server-side apply under one field manager,
// skipping the write when the desired object equals what was last applied and the live
// object has not drifted, deletes with a UID precondition, and a classification of API
// errors into retriable, permanent and immutable-field ones.
package applier
