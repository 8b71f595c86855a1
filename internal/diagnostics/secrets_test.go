package diagnostics

import (
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

func TestRedactBody(t *testing.T) {
	for _, tt := range []struct {
		name, contentType, body, want string
		changed                       bool
	}{
		{"form", "application/x-www-form-urlencoded", "user=ann&password=hunter2&remember=1", "user=ann&password=REDACTED&remember=1", true},
		{"form with charset", "application/x-www-form-urlencoded; charset=UTF-8", "api_key=abc", "api_key=REDACTED", true},
		{"nested JSON", "application/json", `{"user":{"name":"ann","token":"t1"},"items":[{"secret":"s"}]}`, `{"items":[{"secret":"REDACTED"}],"user":{"name":"ann","token":"REDACTED"}}`, true},
		{"JSON without secrets is left byte for byte", "application/json", `{ "a": 1.50 }`, `{ "a": 1.50 }`, false},
		{"not JSON after all", "application/json", `{"password":`, `{"password":`, false},
		{"plain text", "text/plain", "password=hunter2", "password=hunter2", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := RedactBody(tt.contentType, []byte(tt.body))
			if string(got) != tt.want || changed != tt.changed {
				t.Errorf("RedactBody = %s, %v; want %s, %v", got, changed, tt.want, tt.changed)
			}
		})
	}
}

func TestRedactParamsKeepsWhatIsNotSecret(t *testing.T) {
	in := []fcgi.Pair{
		{Name: "SCRIPT_FILENAME", Value: "/srv/www/index.php"},
		{Name: "HTTP_X_AUTH_TOKEN", Value: "t"},
		{Name: "PHP_AUTH_PW", Value: "p"},
		{Name: "HTTP_USER_AGENT", Value: "curl/8"},
		{Name: "QUERY_STRING", Value: "page=2"},
	}
	kept, redacted := RedactParams(in)
	if len(kept) != 3 || kept[0] != in[0] || kept[1] != in[3] || kept[2] != in[4] {
		t.Errorf("kept %v", kept)
	}
	if len(redacted) != 2 || redacted[0] != "HTTP_X_AUTH_TOKEN" || redacted[1] != "PHP_AUTH_PW" {
		t.Errorf("redacted %v", redacted)
	}
}
