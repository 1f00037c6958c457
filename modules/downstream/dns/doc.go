// Package dns is the per-workspace DNS of the syncer, kcp-compatible: a Controller that
// deploys, for every logical cluster (workspace) with a downstream namespace, a DNS server
// into the syncer's own namespace (ServiceAccount, Role, RoleBinding, Deployment, Service,
// NetworkPolicy, all named ID) and keeps its table ConfigMap current; and the Server that
// Deployment runs (`syncer dns`), which answers `<service>.<upstream namespace>` and
// `<service>.<upstream namespace>.svc.<cluster domain>` with the ClusterIP of the workspace's
// downstream Service and forwards every other query.
//
// The table ConfigMap keeps kcp's format (upstream namespace → downstream namespace) and adds
// one key per Service, `<service>.<upstream namespace>` → its ClusterIPs (comma-separated,
// empty for a Service without one). Namespace and Service names are DNS labels, so a key with
// a dot is always a Service: kcp's own DNS image reading this ConfigMap ignores them.
package dns
