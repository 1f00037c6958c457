package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Markdown renders the report as the table of docs/benchmarks.md.
func (rep *Report) Markdown(command string) string {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "# Benchmark run %s (%s mode)\n\n", rep.Started.Format("2006-01-02 15:04 UTC"), rep.Config.Mode)
	fmt.Fprintf(&b, "Command: `%s`. Duration %s.\n\n", command, rep.Duration)
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %.1f GiB memory, %s, kernel %s, commit %s; load average %s at start, %s at the end (the machine is shared).\n\n",
		m.CPUs, m.CPUModel, m.MemoryGiB, m.GoVersion, m.Kernel, m.GitCommit, m.LoadAvgStart, m.LoadAvgEnd)
	c := rep.Config
	fmt.Fprintf(&b, "Sizes: P1 %d objects, P2 %d objects at %d/s for %s (reference %s), P3 %d updates, P4 %d edits (during P2), P5/P10 %d objects over %s, P7 %d restarts, P8 %d sessions, P9 %d objects and %s, K1/K5 %d objects, K2 %s; syncer --qps %d --burst %d --workers %d.\n\n",
		c.P1Objects, c.P2Objects, c.P2Rate, c.P2Duration, c.RefDuration, c.StatusUpdates, c.DriftEdits, c.IdleObjects, c.IdleWindow, c.Reconnects, c.Sessions, c.P9Objects, c.P9Duration, c.KCPObjects, c.KCPDuration, c.QPS, c.Burst, c.Workers)
	if len(rep.Skipped) > 0 {
		fmt.Fprintf(&b, "Skipped in this mode: %s.\n\n", strings.Join(rep.Skipped, ", "))
	}
	b.WriteString("| id | what | measured | reference (same run) | ratio / detail | goal | met? |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rep.Rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.ID, esc(r.What), esc(r.Measured), esc(r.Reference), esc(r.Ratio), esc(r.Goal), r.Met)
	}
	notes := false
	for _, r := range rep.Rows {
		if r.Notes == "" {
			continue
		}
		if !notes {
			b.WriteString("\nNotes:\n\n")
			notes = true
		}
		fmt.Fprintf(&b, "- %s (%s): %s\n", r.ID, r.What, r.Notes)
	}
	return b.String()
}

func esc(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Write saves <dir>/<UTC timestamp>.md and .json and returns the markdown path.
func (rep *Report) Write(dir, command string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	base := filepath.Join(dir, rep.Started.Format("20060102T150405Z"))
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(base+".json", append(raw, '\n'), 0o644); err != nil {
		return "", err
	}
	return base + ".md", os.WriteFile(base+".md", []byte(rep.Markdown(command)), 0o644)
}
