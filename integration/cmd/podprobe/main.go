// Command podprobe is a workload for end-to-end tests of the pod mutator: started the way
// a kubelet starts a container, it does what an in-cluster client does (client-go's
// rest.InClusterConfig: KUBERNETES_SERVICE_HOST/_PORT, and the token, namespace and CA at
// the service-account path) and lists the ConfigMaps of its namespace. It prints
// "namespace <ns>", then "configmap <name> <kcp.io/cluster annotation>" per ConfigMap, and
// exits 1 with the error when the request fails.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const namespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "podprobe:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return err
	}
	cfg.Timeout = 30 * time.Second
	ns, err := os.ReadFile(namespaceFile)
	if err != nil {
		return err
	}
	namespace := strings.TrimSpace(string(ns))
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	list, err := kube.CoreV1().ConfigMaps(namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list ConfigMaps of %s at %s: %w", namespace, cfg.Host, err)
	}
	fmt.Println("server", cfg.Host)
	fmt.Println("namespace", namespace)
	for _, cm := range list.Items {
		fmt.Println("configmap", cm.Name, cm.Annotations["kcp.io/cluster"])
	}
	return nil
}
