// Package browsertest runs pages in a real headless browser (Debian's chromium) for
// tests, and reads the DOM it built. Tests that need it skip when no browser is
// installed; CI installs one.
package browsertest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// Chromium returns the headless browser binary ($CHROMIUM, chromium, …), or skips
// the test.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("headless browser test skipped: chromium not found (Debian: apt-get install -y chromium; or set CHROMIUM=/path/to/chrome)")
	return ""
}

// Browse runs headless chromium on url with extra flags (--dump-dom,
// --screenshot=…) and returns its stdout. The flags keep it off the network
// (this machine has none) and out of the user's profile.
func Browse(t testing.TB, bin, url string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
		"--hide-scrollbars", "--user-data-dir=" + t.TempDir()}, extra...)
	out, err := exec.CommandContext(ctx, bin, append(args, url)...).Output()
	if err != nil {
		var stderr string
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("chromium %s: %v: %s", url, err, stderr)
	}
	return string(out)
}

// FindAll returns the elements under n that match, in document order.
func FindAll(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	if n.Type == html.ElementNode && match(n) {
		out = append(out, n)
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		out = append(out, FindAll(c, match)...)
	}
	return out
}

// Attr returns the value of n's attribute key, or "".
func Attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// Text returns the text under n, each text node followed by a space.
func Text(n *html.Node) string {
	if n.Type == html.TextNode {
		return n.Data + " "
	}
	var b strings.Builder
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		b.WriteString(Text(c))
	}
	return b.String()
}
