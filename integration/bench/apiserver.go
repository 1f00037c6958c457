package bench

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"k8s.io/client-go/kubernetes"
)

// requestCounts is apiserver_request_total of one kube-apiserver, keyed by
// "VERB resource[/subresource]".
type requestCounts map[string]float64

// scrapeRequests reads apiserver_request_total from the server's /metrics.
func scrapeRequests(ctx context.Context, kube kubernetes.Interface) (requestCounts, error) {
	raw, err := kube.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("scrape /metrics: %w", err)
	}
	out := requestCounts{}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		end := strings.LastIndex(line, "}")
		if end < 0 {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
		if err != nil {
			continue
		}
		labels := parseLabels(line[len("apiserver_request_total{"):end])
		key := labels["verb"] + " " + labels["resource"]
		if labels["subresource"] != "" {
			key += "/" + labels["subresource"]
		}
		out[key] += v
	}
	return out, nil
}

func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		eq := strings.Index(s, `="`)
		if eq < 0 {
			break
		}
		name := strings.TrimLeft(s[:eq], ",")
		rest := s[eq+2:]
		end := strings.Index(rest, `"`)
		if end < 0 {
			break
		}
		out[name] = rest[:end]
		s = rest[end+1:]
	}
	return out
}

// delta is c (after) − before, without zeroes.
func (c requestCounts) delta(before requestCounts) requestCounts {
	out := requestCounts{}
	for k, v := range c {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// total counts every request except WATCH (an open watch is one request for its lifetime).
func (c requestCounts) total() float64 {
	sum := 0.0
	for k, v := range c {
		if !strings.HasPrefix(k, "WATCH ") {
			sum += v
		}
	}
	return sum
}

// without drops the keys whose resource is one of resources.
func (c requestCounts) without(resources ...string) requestCounts {
	out := requestCounts{}
	for k, v := range c {
		drop := false
		for _, r := range resources {
			if strings.HasSuffix(k, " "+r) || strings.Contains(k, " "+r+"/") {
				drop = true
			}
		}
		if !drop {
			out[k] = v
		}
	}
	return out
}

// top lists the largest counts, for the table's notes.
func (c requestCounts) top(n int) string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return c[keys[i]] > c[keys[j]] })
	var parts []string
	for i, k := range keys {
		if i == n {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.0f", k, c[k]))
	}
	return strings.Join(parts, ", ")
}
