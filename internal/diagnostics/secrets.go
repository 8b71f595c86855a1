package diagnostics

import (
	"bytes"
	"encoding/json"
	"mime"
	"strings"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// credentialParams are the params that carry a client's credentials
// whatever their value looks like: its cookies, its Authorization header
// and what PHP makes of it.
var credentialParams = map[string]bool{
	"HTTP_COOKIE":              true,
	"HTTP_AUTHORIZATION":       true,
	"HTTP_PROXY_AUTHORIZATION": true,
	"PHP_AUTH_PW":              true,
	"PHP_AUTH_DIGEST":          true,
}

// RedactParams returns the FastCGI params of a request without its secrets,
// for keeping and replaying it: the client's credentials (cookies,
// Authorization, and headers whose name looks secret, such as
// X-Api-Key) are left out, and the secret-looking query parameters of
// REQUEST_URI and QUERY_STRING are replaced as RedactQuery does. It also
// returns the names of the params it changed or left out.
func RedactParams(params []fcgi.Pair) (kept []fcgi.Pair, redacted []string) {
	kept = make([]fcgi.Pair, 0, len(params))
	for _, p := range params {
		switch {
		case credentialParams[p.Name],
			strings.HasPrefix(p.Name, "HTTP_") && isSecret(p.Name[len("HTTP_"):]):
			redacted = append(redacted, p.Name)
			continue
		case p.Name == "REQUEST_URI":
			if r := RedactQuery(p.Value); r != p.Value {
				p.Value = r
				redacted = append(redacted, p.Name)
			}
		case p.Name == "QUERY_STRING":
			if r := RedactQuery("?" + p.Value)[1:]; r != p.Value {
				p.Value = r
				redacted = append(redacted, p.Name)
			}
		}
		kept = append(kept, p)
	}
	return kept, redacted
}

// RedactBody returns a request body without the values of its
// secret-looking fields, for the bodies PHP reads by name: a URL-encoded
// form (password=..., token=...) and a JSON document's object members at
// any depth. Other bodies come back as they are. changed reports whether
// anything was replaced; the result is then a new slice.
func RedactBody(contentType string, body []byte) (out []byte, changed bool) {
	mt, _, _ := mime.ParseMediaType(contentType)
	switch {
	case mt == "application/x-www-form-urlencoded":
		r := RedactQuery("?" + string(body))[1:]
		return []byte(r), r != string(body)
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		var doc any
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if dec.Decode(&doc) != nil || !redactJSON(doc) {
			return body, false
		}
		b, err := json.Marshal(doc)
		if err != nil {
			return body, false
		}
		return b, true
	}
	return body, false
}

// redactJSON replaces the values of secret-looking members in v, and
// reports whether it replaced any.
func redactJSON(v any) bool {
	changed := false
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if isSecret(k) {
				v[k] = "REDACTED"
				changed = true
				continue
			}
			changed = redactJSON(x) || changed
		}
	case []any:
		for _, x := range v {
			changed = redactJSON(x) || changed
		}
	}
	return changed
}
