// Package bench is the end-to-end benchmark harness of issue #11: it runs the
// scenarios P1–P11 on the integration test bed (two real clusters, the real syncer
// binary, the in-process tunnel server), each next to its reference measured in the
// same run, and renders a markdown table plus a JSON summary.
package bench
