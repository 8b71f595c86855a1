package main

import (
	"fmt"
	"strings"
)

// configTable renders the settings of cfg (a pointer to a config struct) as
// the Markdown table the README shows, so that the README is made from the
// code and cannot drift from it.
func configTable(cfg any) string {
	var b strings.Builder
	b.WriteString("| variable | flag | default | meaning |\n|---|---|---|---|\n")
	for _, f := range configFields(cfg) {
		env := f.Tag.Get("env")
		def, ok := f.Tag.Lookup("envDefault")
		switch {
		case !ok || def == "":
			def = "(none)"
		default:
			def = "`" + def + "`"
		}
		fmt.Fprintf(&b, "| `%s` | `--%s` | %s | %s |\n", env, flagName(env), def, strings.ReplaceAll(f.Tag.Get("help"), "|", "\\|"))
	}
	return b.String()
}
