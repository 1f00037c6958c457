// Package apiimport is the syncer's API importer for kcp: every poll interval (kcp's
// --api-import-poll-interval, 1 m) it reads the physical cluster's schemas of the synced
// resources and publishes them as kcp APIResourceImports (apiresource.kcp.io/v1alpha1)
// in the SyncTarget's workspace, named and filled as kcp v0.11's own syncer does; kcp's
// controllers then compare them with the compute APIExport's schemas and set the
// SyncTarget's status.syncedResources. It also sets the SyncTarget's SyncerAuthorized
// condition (SelfSubjectAccessReviews in the physical cluster) and APIImporterReady.
// It never writes status.syncedResources: under kcp, kcp is the one writer.
//
// # What is imported
//
// The resources of Options.Resources and of every status.syncedResources entry, at the
// version the physical cluster prefers; not those every kcp workspace serves itself
// (configmaps, secrets, serviceaccounts, namespaces, events, RBAC, …). A custom
// resource's schema is its CRD's, as written; a built-in's comes from the cluster's
// OpenAPI v3 document of its group-version (read again only when the document's hash
// changes), converted to a structural schema with kcp's conventions: references
// resolved, the top-level metadata reduced to {type: object}, nested ObjectMeta kept
// whole, Quantity and IntOrString written as int-or-string, list types taken from
// x-kubernetes-list-type or derived from the strategic-merge-patch markers, and only
// the JSON-schema words kcp's importer writes.
//
// # Schema compatibility with kcp v0.11 (Baseline)
//
// kcp v0.11's compute APIExport bundles Kubernetes v1.24 schemas of deployments, pods,
// services and ingresses, and its schemacompat rejects an import whose list markers
// differ from them in any way, "no list type" → "atomic" included. Kubernetes has
// since written x-kubernetes-list-type: atomic on most lists that had no marker (a
// v1.37 Deployment has 106 such changes, a Pod 107, a Service 3, an Ingress 1), so kcp
// marks all four Incompatible with a v1.37 cluster, with kcp's own syncer too. The
// default Baseline, KCPv011, drops x-kubernetes-list-type: atomic from every list of
// Kubernetes' own types that v1.24 did not mark atomic (the list then gets the type
// kcp derives from its patch markers, as a v1.24 import did); map and set lists and
// every other word are kept; custom resources' schemas are not touched. With it all
// four come out compatible under kcp v0.11's rules (checked against kcp v0.11's bundled
// schemas by this package's tests when kcp's module is in the module cache).
//
// Why this is safe:
//
//   - Nothing changes in meaning. A list with no list type is atomic for
//     server-side apply and for validation; "atomic" only says so out loud.
//   - kcp uses an import for: the compatibility check that sets
//     status.syncedResources; the NegotiatedAPIResource it computes from the imports
//     of one workspace (kcp v0.11 ignores --auto-publish-apis, so no CRD is made from
//     it unless someone sets spec.publish); and, only in a workspace that holds its own
//     "kubernetes" APIExport, that export's schemas. In the usual layout users'
//     objects are validated by root:compute's bundled schemas, never by an import; in
//     the last case an adjusted list still means what it meant (see the first point).
//   - The physical cluster validates, defaults and merges every object it is given
//     with its own, real schema; a difference between the import and the cluster
//     cannot let a bad object in.
//
// AsPublished turns the adjustment off (for a control plane whose schemas are as new
// as the physical cluster's).
//
// # Conditions
//
// SyncerAuthorized: a SelfSubjectAccessReview in the physical cluster per verb
// (Options.Verbs; kcp checks "*") on configmaps, secrets and each version of every
// Accepted synced resource; False, severity Error, reason SyncerUnauthorized, message
// "SSAR check failed for gvrs: <gvr>;<gvr>" as kcp writes it. APIImporterReady: True
// when every wanted resource the physical cluster serves has a current import; False,
// reason APIImportFailed, naming each failure (severity Error when nothing is
// imported, Warning otherwise). Both keep their lastTransitionTime while the status
// holds and are written only when they change, with the engine's condition helpers
// (kcp's shape: type, status, severity, lastTransitionTime, reason, message).
package apiimport
