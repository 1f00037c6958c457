// Package framework runs the integration test bed: isolated Kubernetes control
// planes (etcd, kube-apiserver, kube-controller-manager built from the Go module
// proxy) on loopback ports, one standing for "kcp" and one for a physical cluster.
package framework
