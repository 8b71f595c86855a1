package main

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var updateREADME = flag.Bool("update-readme", false, "rewrite the README's configuration table from the code")

const (
	tableStart = "<!-- serve-config: generated from cmd/fcgiscope/config.go; go test ./cmd/fcgiscope -run TestREADMEConfigTable -update-readme -->\n"
	tableEnd   = "<!-- /serve-config -->"
)

// TestREADMEConfigTable fails when the README's configuration table and the
// code disagree; -update-readme rewrites the table.
func TestREADMEConfigTable(t *testing.T) {
	const path = "../../README.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i := strings.Index(readme, tableStart)
	j := strings.Index(readme, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md has no generated configuration table between %q and %q", strings.TrimSpace(tableStart), tableEnd)
	}
	want := configTable(&serveConfig{})
	got := readme[i+len(tableStart) : j]
	if got == want {
		return
	}
	if *updateREADME {
		if err := os.WriteFile(path, []byte(readme[:i+len(tableStart)]+want+readme[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md's configuration table differs from the code; run: go test ./cmd/fcgiscope -run TestREADMEConfigTable -update-readme\n--- README\n%s\n--- code\n%s", got, want)
}
