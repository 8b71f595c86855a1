package diagnostics

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
)

// Audience says which clients see the whole explanation of a failure:
// detail, hints, evidence, paths, addresses, stderr.
type Audience struct {
	Detail Detail
	// Trusted are the networks whose clients DetailLocal shows everything
	// to, besides loopback. Private addresses are not trusted by
	// default: in a cluster the client nginx sees is the ingress
	// controller, whose address is private for every visitor.
	Trusted []netip.Prefix
}

// Full reports whether a client at remote, an address with or without a
// port, sees the whole explanation.
func (a Audience) Full(remote string) bool {
	switch a.Detail {
	case DetailFull:
		return true
	case DetailMinimal:
		return false
	}
	addr, err := netip.ParseAddr(remote)
	if err != nil {
		ap, err := netip.ParseAddrPort(remote)
		if err != nil {
			return false
		}
		addr = ap.Addr()
	}
	addr = addr.Unmap()
	if addr.IsLoopback() {
		return true
	}
	for _, p := range a.Trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// ParseNetworks reads a comma-separated list of networks in CIDR notation
// ("10.0.0.0/8, 172.16.0.0/12"); a bare address is a network of one.
func ParseNetworks(s string) ([]netip.Prefix, error) {
	var nets []netip.Prefix
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if p, err := netip.ParsePrefix(item); err == nil {
			nets = append(nets, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a network (10.0.0.0/8) nor an address", item)
		}
		nets = append(nets, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return nets, nil
}

// Query parameter names whose values are hidden wherever fcgiscope shows
// a URI, case aside: names that contain one of secretParts
// ("user_password", "X-Api-Key") and names that are one of secretNames,
// words too short to look for inside others ("pin", but not "shipping").
var (
	secretParts = []string{"pass", "token", "secret", "apikey", "api_key", "api-key", "signature", "credential", "private"}
	secretNames = []string{"key", "sid", "code", "auth", "session", "sess", "pwd", "pin", "otp", "ticket", "jwt", "hash"}
)

// RedactQuery returns uri with the values of its secret-looking query
// parameters replaced by "REDACTED": "/login.php?user=ann&password=x"
// becomes "/login.php?user=ann&password=REDACTED". The rest of the URI is
// kept byte for byte.
func RedactQuery(uri string) string {
	path, query, ok := strings.Cut(uri, "?")
	if !ok || query == "" {
		return uri
	}
	parts := strings.Split(query, "&")
	changed := false
	for i, p := range parts {
		name, _, hasValue := strings.Cut(p, "=")
		if !hasValue {
			continue
		}
		if decoded, err := url.QueryUnescape(name); err == nil {
			name = decoded
		}
		if isSecret(name) {
			parts[i] = p[:strings.IndexByte(p, '=')] + "=REDACTED"
			changed = true
		}
	}
	if !changed {
		return uri
	}
	return path + "?" + strings.Join(parts, "&")
}

func isSecret(name string) bool {
	name = strings.ToLower(name)
	for _, s := range secretParts {
		if strings.Contains(name, s) {
			return true
		}
	}
	return slices.Contains(secretNames, name)
}
