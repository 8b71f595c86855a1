package fcgi

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseAddrAccepts(t *testing.T) {
	tests := []struct {
		in         string
		want       Addr
		nginx      string // String(): nginx's fastcgi_pass syntax
		roundTrips bool   // String() == in
	}{
		{"127.0.0.1:9000", Addr{"tcp", "127.0.0.1:9000"}, "127.0.0.1:9000", true},
		{"[::1]:9000", Addr{"tcp", "[::1]:9000"}, "[::1]:9000", true},
		{"localhost:9000", Addr{"tcp", "localhost:9000"}, "localhost:9000", true},
		{"php-fpm:9000", Addr{"tcp", "php-fpm:9000"}, "php-fpm:9000", true},
		{"0.0.0.0:1", Addr{"tcp", "0.0.0.0:1"}, "0.0.0.0:1", true},
		{"host:65535", Addr{"tcp", "host:65535"}, "host:65535", true},
		{"[fe80::1%eth0]:9000", Addr{"tcp", "[fe80::1%eth0]:9000"}, "[fe80::1%eth0]:9000", true},
		{"unix:/run/php/php8.2-fpm.sock", Addr{"unix", "/run/php/php8.2-fpm.sock"}, "unix:/run/php/php8.2-fpm.sock", true},
		{"unix:@php-fpm", Addr{"unix", "@php-fpm"}, "unix:@php-fpm", true},
		{"tcp://127.0.0.1:9000", Addr{"tcp", "127.0.0.1:9000"}, "127.0.0.1:9000", false},
		{"tcp://[::1]:9000", Addr{"tcp", "[::1]:9000"}, "[::1]:9000", false},
		{"unix:///tmp/x.sock", Addr{"unix", "/tmp/x.sock"}, "unix:/tmp/x.sock", false},
		{"  127.0.0.1:9000\n", Addr{"tcp", "127.0.0.1:9000"}, "127.0.0.1:9000", false},
		{"\tunix:/tmp/x.sock ", Addr{"unix", "/tmp/x.sock"}, "unix:/tmp/x.sock", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAddr(tt.in)
			if err != nil {
				t.Fatalf("ParseAddr(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseAddr(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
			if got.IsZero() {
				t.Error("IsZero on a parsed address")
			}
			s := got.String()
			if s != tt.nginx {
				t.Errorf("String() = %q, want nginx syntax %q", s, tt.nginx)
			}
			if tt.roundTrips && s != tt.in {
				t.Errorf("String() = %q, want the input back", s)
			}
			again, err := ParseAddr(s)
			if err != nil || again != got {
				t.Errorf("ParseAddr(String()) = %#v, %v; want %#v", again, err, got)
			}
		})
	}
}

func TestParseAddrRejects(t *testing.T) {
	tests := []struct {
		in      string
		mention []string // what the message must say besides the accepted forms
	}{
		{"", []string{"empty"}},
		{"   ", []string{"empty"}},
		{"9000", []string{"127.0.0.1:9000", "port alone"}},
		{"/tmp/x.sock", []string{"unix:/tmp/x.sock"}},
		{"/run/php/php8.2-fpm.sock", []string{"unix:/run/php/php8.2-fpm.sock"}},
		{"unix:", []string{"path is empty"}},
		{"unix://", []string{"path is empty"}},
		{"unix:relative", []string{"absolute"}},
		{"unix:run/php.sock", []string{"absolute"}},
		{"unix://tmp/x.sock", []string{"absolute"}},
		{"http://x:1", []string{"scheme"}},
		{"https://x:443", []string{"scheme"}},
		{"fastcgi://x:9000", []string{"scheme"}},
		{"host:0", []string{"1 to 65535"}},
		{"host:70000", []string{"1 to 65535"}},
		{"host:65536", []string{"1 to 65535"}},
		{"host:-1", []string{"1 to 65535"}},
		{"host:abc", []string{"1 to 65535"}},
		{"host:", []string{"1 to 65535"}},
		{":9000", []string{"host is empty", "127.0.0.1"}},
		{"localhost", []string{"no port"}},
		{"::1", []string{"no port"}},
		{"tcp://", []string{"no port"}},
		{"tcp://:9000", []string{"host is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAddr(tt.in)
			if err == nil {
				t.Fatalf("ParseAddr(%q) = %#v, want an error", tt.in, got)
			}
			if !got.IsZero() {
				t.Errorf("failed ParseAddr returned %#v, want the zero Addr", got)
			}
			msg := err.Error()
			if !strings.Contains(msg, fmt.Sprintf("%q", tt.in)) {
				t.Errorf("message %q does not quote the input", msg)
			}
			for _, m := range tt.mention {
				if !strings.Contains(msg, m) {
					t.Errorf("message %q does not mention %q", msg, m)
				}
			}
			if !strings.Contains(msg, addrForms) {
				t.Errorf("message %q does not list the accepted forms", msg)
			}
		})
	}
}

func TestAddrFormsNamesEveryForm(t *testing.T) {
	for _, f := range []string{"127.0.0.1:9000", "[::1]:9000", "localhost:9000", "unix:/", "tcp://", "unix:///"} {
		if !strings.Contains(addrForms, f) {
			t.Errorf("addrForms %q does not show %q", addrForms, f)
		}
	}
}

func TestAddrStringAndIsZero(t *testing.T) {
	var zero Addr
	if !zero.IsZero() {
		t.Error("zero Addr: IsZero false")
	}
	if zero.String() != "" {
		t.Errorf("zero Addr String = %q", zero.String())
	}
	if (Addr{Network: "unix"}).IsZero() {
		t.Error("Addr with a network: IsZero true")
	}
	if s := (Addr{"unix", "/a.sock"}).String(); s != "unix:/a.sock" {
		t.Errorf("unix String = %q", s)
	}
	if s := (Addr{"tcp", "h:1"}).String(); s != "h:1" {
		t.Errorf("tcp String = %q", s)
	}
}

// TestParseAddrTCPURLStringRoundTrip shows that a tcp:// address whose host
// part ParseAddr does not check gives an Addr whose String() is not nginx
// syntax: ParseAddr refuses it, or reads it as another address.
func TestParseAddrTCPURLStringRoundTrip(t *testing.T) {
	for _, in := range []string{
		"tcp:///x:1",
		"tcp://unix:1",
		"tcp:// x:1",
		"[ x]:1",
		"[/x]:1",
		"[unix]:1",
		"tcp://[a://b]:1",
	} {
		a, err := ParseAddr(in)
		if err != nil {
			continue // rejecting is fine
		}
		again, err := ParseAddr(a.String())
		if err != nil || again != a {
			t.Errorf("ParseAddr(%q) = %#v; ParseAddr(String() = %q) = %#v, %v", in, a, a.String(), again, err)
		}
	}
}

// TestParseAddrUnixDoubleSlashStringRoundTrip: a unix socket path may start
// with "//" (nginx reads "unix:////run/x.sock" as the path "//run/x.sock"),
// and String() must give something ParseAddr reads back as the same Addr.
// Found by FuzzParseAddr (testdata/fuzz/FuzzParseAddr/a490241e7c981bbe).
func TestParseAddrUnixDoubleSlashStringRoundTrip(t *testing.T) {
	for _, in := range []string{"unix:////0", "unix:////run/php/php-fpm.sock", "unix:////tmp/x.sock", "unix://///tmp/x.sock"} {
		a, err := ParseAddr(in)
		if err != nil {
			t.Errorf("ParseAddr(%q): %v", in, err)
			continue
		}
		again, err := ParseAddr(a.String())
		if err != nil || again != a {
			t.Errorf("ParseAddr(%q) = %#v; ParseAddr(String() = %q) = %#v, %v", in, a, a.String(), again, err)
		}
	}
}
