// Package namespaces owns the downstream namespaces of a sync target: Ensurer creates the
// namespace of an upstream (logical cluster, namespace) on first use, refusing one that
// belongs to someone else; Controller deletes a namespace the syncer created once nothing
// upstream is assigned to the target there and nothing of ours is left in it, after a delay
// and a last check against the API servers.
package namespaces
