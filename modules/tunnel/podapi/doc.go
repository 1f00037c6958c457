// Package podapi lets the pods of synced workloads reach their workspace's API through the
// syncer's tunnel, for physical clusters that cannot reach the control plane themselves:
// the syncer serves HTTPS inside the physical cluster (a Service in its namespace), with a
// certificate of a CA it keeps in a Secret there, and forwards each request, with the pod's
// own Authorization header and nothing of the syncer's, over the tunnel to the control
// plane's API.
package podapi
