package diagnostics

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestAudienceTrustsLoopbackAndTheTrustedNetworksOnly(t *testing.T) {
	local := Audience{Detail: DetailLocal}
	trusting := Audience{Detail: DetailLocal, Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	for _, tt := range []struct {
		a      Audience
		remote string
		want   bool
	}{
		{local, "127.0.0.1", true},
		{local, "::1", true},
		{local, "[::1]:443", true},
		{local, "10.1.2.3", false}, // an ingress controller, for every visitor
		{local, "192.168.1.1", false},
		{local, "203.0.113.9", false},
		{local, "not an address", false},
		{trusting, "10.1.2.3", true},
		{trusting, "::ffff:10.1.2.3", true},
		{trusting, "10.1.2.3:5000", true},
		{trusting, "192.168.1.1", false},
		{Audience{Detail: DetailFull}, "203.0.113.9", true},
		{Audience{Detail: DetailMinimal}, "127.0.0.1", false},
	} {
		if got := tt.a.Full(tt.remote); got != tt.want {
			t.Errorf("%+v: Full(%q) = %v, want %v", tt.a, tt.remote, got, tt.want)
		}
	}
}

func TestParseNetworks(t *testing.T) {
	nets, err := ParseNetworks(" 10.0.0.0/8, 172.16.0.0/12 ,fd00::/8, 192.0.2.7")
	if err != nil || len(nets) != 4 || nets[3].String() != "192.0.2.7/32" {
		t.Errorf("%v %v", nets, err)
	}
	if nets, err := ParseNetworks(""); err != nil || nets != nil {
		t.Errorf("empty: %v %v", nets, err)
	}
	if _, err := ParseNetworks("10.0.0.0/8, intranet"); err == nil || !strings.Contains(err.Error(), `"intranet"`) {
		t.Errorf("a bad item: %v", err)
	}
}

func TestRedactQueryHidesSecretsAndKeepsTheRest(t *testing.T) {
	for in, want := range map[string]string{
		"/login.php?user=ann&password=hunter2":     "/login.php?user=ann&password=REDACTED",
		"/api?api_key=abc&X-Api-Key=def&page=2":    "/api?api_key=REDACTED&X-Api-Key=REDACTED&page=2",
		"/cb?code=xyz&state=1":                     "/cb?code=REDACTED&state=1",
		"/crash.php?sig=9&pin=1234&shipping=1":     "/crash.php?sig=9&pin=REDACTED&shipping=1",
		"/x?access_token=t&user%5Fpassword=p&flag": "/x?access_token=REDACTED&user%5Fpassword=REDACTED&flag",
		"/plain.php":                    "/plain.php",
		"/q.php?search=keyboard&keys=1": "/q.php?search=keyboard&keys=1",
		"/reset?token=a%26b&next=%2Fhome%3Fpassword%3Dno": "/reset?token=REDACTED&next=%2Fhome%3Fpassword%3Dno",
	} {
		if got := RedactQuery(in); got != want {
			t.Errorf("RedactQuery(%q) = %q, want %q", in, got, want)
		}
	}
}

// A client the ingress controller's private address stands for gets the
// minimal page with default settings, without paths or query strings.
func TestPrivateClientGetsMinimalDetailByDefault(t *testing.T) {
	tr := workerDeath(time.Second)
	tr.URI, tr.RemoteAddr, tr.Accept = "/api.php?password=hunter2", "10.42.0.17", "application/problem+json"
	_, body, _ := reply(t, &Explainer{}, tr)
	for _, secret := range []string{"hunter2", "/srv/api.php", "/run/php.sock", "END_REQUEST"} {
		if strings.Contains(body, secret) {
			t.Errorf("a 10.x client sees %q:\n%s", secret, body)
		}
	}
	_, body, _ = reply(t, &Explainer{Trusted: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}}, tr)
	if !strings.Contains(body, "END_REQUEST") || strings.Contains(body, "hunter2") {
		t.Errorf("a trusted client must see the detail, with the password redacted:\n%s", body)
	}
}
