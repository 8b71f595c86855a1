package main

import (
	"flag"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/readmetest"
)

var updateREADME = flag.Bool("update-readme", false, "rewrite the README's configuration table from the code")

// TestREADMEConfigTable fails when the README's configuration table and the
// code disagree; -update-readme rewrites the table.
func TestREADMEConfigTable(t *testing.T) {
	readmetest.Check(t, "../../README.md", "serve-config", configTable(&serveConfig{}),
		"go test ./cmd/fcgiscope -run TestREADMEConfigTable -update-readme", *updateREADME)
}
