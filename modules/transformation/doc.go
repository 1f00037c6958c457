// Package transformation turns an upstream object into the object a physical cluster should
// hold, and a downstream object's status into what goes back upstream, the way kcp's TMC
// syncer does.
//
// Everything here is a pure function over unstructured.Unstructured and a small Context: no
// clients, no I/O, no package-level state. That keeps the pipeline fast, deterministic (same
// input, byte-identical JSON output) and fuzzable. Sub-packages hold the pieces other modules
// reuse on their own: kcp (label and annotation names), namespace (downstream namespace
// names, locators, collisions), rename (kube-root-ca.crt and default-token-* renames) and
// ownership (the syncer.tmc.dev/ annotations naming the upstream object).
package transformation
