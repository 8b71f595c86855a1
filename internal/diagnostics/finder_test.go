package diagnostics

import (
	"slices"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/hostprobe"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

func TestHintsNamePHPFPMAndPrivatePoolsOnlyWhenNothingElseAnswers(t *testing.T) {
	at := func(s string) hostprobe.Responder {
		a, err := fcgi.ParseAddr(s)
		if err != nil {
			t.Fatal(err)
		}
		return hostprobe.Responder{Addr: a}
	}
	system := namedResponder{at("unix:/run/php/php8.2-fpm.sock"), hostprobe.Holder{Pid: 10, Name: "php-fpm8.2", Cmdline: "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)"}, true}
	container := namedResponder{at("127.0.0.1:9000"), hostprobe.Holder{}, false}
	private := namedResponder{at("unix:/tmp/fs123/php-fpm.sock"), hostprobe.Holder{Pid: 20, Name: "php-fpm8.2", Cmdline: "php-fpm: master process (/tmp/fs123/php-fpm.conf)"}, true}
	privateTCP := namedResponder{at("127.0.0.1:41000"), hostprobe.Holder{Pid: 21, Name: "php-fpm8.2", Cmdline: "php-fpm: master process (/tmp/fs456/php-fpm.conf)"}, true}
	other := namedResponder{at("unix:/run/fcgiwrap.socket"), hostprobe.Holder{Pid: 30, Name: "fcgiwrap", Cmdline: "/usr/sbin/fcgiwrap"}, true}

	addrs := func(rs []hostprobe.Responder) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Addr.String())
		}
		return out
	}
	got := addrs(worthNaming([]namedResponder{system, container, private, privateTCP, other}))
	if !slices.Equal(got, []string{system.Addr.String(), container.Addr.String()}) {
		t.Errorf("with the system's php-fpm answering: %v", got)
	}
	got = addrs(worthNaming([]namedResponder{private, privateTCP, other}))
	if !slices.Equal(got, []string{private.Addr.String(), privateTCP.Addr.String()}) {
		t.Errorf("with only private pools answering: %v", got)
	}
}
