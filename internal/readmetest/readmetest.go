// Package readmetest keeps the README's generated sections (the
// configuration table, the cause table) equal to the code they are made
// from.
package readmetest

import (
	"os"
	"strings"
	"testing"
)

// Check fails t when the section of the Markdown file at path between
// "<!-- name: ... -->" and "<!-- /name -->" is not want; with update set it
// rewrites the section instead. how is the command that updates it, for
// the failure message.
func Check(t *testing.T, path, name, want, how string, update bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "<!-- "+name+":")
	end := strings.Index(doc, "<!-- /"+name+" -->")
	if start < 0 || end < start {
		t.Fatalf("%s has no generated section between <!-- %s: ... --> and <!-- /%s -->", path, name, name)
	}
	start += strings.Index(doc[start:], "-->\n") + len("-->\n")
	got := doc[start:end]
	if got == want {
		return
	}
	if update {
		if err := os.WriteFile(path, []byte(doc[:start]+want+doc[end:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s's %s section differs from the code; run: %s\n--- %s\n%s\n--- code\n%s", path, name, how, path, got, want)
}
