package diagnostics

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// completedWithProblem names the problems of responses php-fpm completed
// itself: they pass through unchanged and are only logged.
func completedWithProblem(t *outcome.Trace) *Diagnosis {
	stderr := t.Stderr
	ev := map[string]string{"script": t.Script}
	switch {
	case bytes.Contains(stderr, []byte("Primary script unknown")):
		return &Diagnosis{Cause: CauseScriptNotFound, Evidence: ev,
			Detail: fmt.Sprintf("php-fpm found no file at SCRIPT_FILENAME %q and answered 404 \"File not found.\".", t.Script),
			Hints:  []string{"Check the root and SCRIPT_FILENAME in nginx (fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;) against where the file is, as php-fpm's user and chroot see it."}}
	case bytes.Contains(stderr, []byte("has been denied (see security.limit_extensions)")):
		return &Diagnosis{Cause: CauseScriptDenied, Evidence: ev,
			Detail: fmt.Sprintf("php-fpm refused to run %q: its extension is not in security.limit_extensions.", t.Script),
			Hints:  []string{"Send only .php files to php-fpm (location ~ \\.php$), or add the extension to security.limit_extensions in the pool."}}
	case bytes.Contains(stderr, []byte("Unable to open primary script")):
		return &Diagnosis{Cause: CauseScriptDenied, Evidence: ev,
			Detail: fmt.Sprintf("php-fpm could not open %q: %s", t.Script, firstLine(stderr, "Unable to open primary script")),
			Hints:  []string{"Give the pool's user (user = ... in the pool) read access to the script and execute access to every directory above it."}}
	case bytes.Contains(stderr, []byte("Allowed memory size of")):
		return &Diagnosis{Cause: CauseMemory, Evidence: ev,
			Detail: "The script hit PHP's memory_limit: " + firstLine(stderr, "Allowed memory size of"),
			Hints:  []string{"Find what the script loads into memory (large arrays, whole files, ORM result sets), or raise memory_limit for it."}}
	case bytes.Contains(stderr, []byte("PHP Fatal error")):
		return &Diagnosis{Cause: CausePHPFatal, Evidence: ev,
			Detail: "The script stopped with a fatal error: " + firstLine(stderr, "PHP Fatal error"),
			Hints:  []string{"Fix the error at the file and line it names; with display_errors off the client sees an empty 500."}}
	}
	return nil
}

// firstLine returns the line of b that contains marker, trimmed.
func firstLine(b []byte, marker string) string {
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		return ""
	}
	line := b[i:]
	if j := bytes.IndexAny(line, "\r\n"); j >= 0 {
		line = line[:j]
	}
	return strings.TrimSpace(string(line))
}
