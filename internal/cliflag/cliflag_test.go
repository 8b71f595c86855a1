package cliflag

import (
	"bytes"
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"
)

// errNotAPort is what the test's port flag rejects values with.
var errNotAPort = errors.New("not a port")

// portValue is a flag.Value of the caller's own, whose Set errors Parse
// passes on as they are.
type portValue struct{ n int }

func (p *portValue) String() string { return "" }

func (p *portValue) Set(s string) error {
	if s != "80" {
		return errNotAPort
	}
	p.n = 80
	return nil
}

// testFlags is what newFlagSet defines.
type testFlags struct {
	upstream string
	timeout  time.Duration
	root     string
	verbose  bool
	workers  int
	port     portValue
}

// newFlagSet returns a flag set like a fcgiscope subcommand's, writing to
// out.
func newFlagSet(out *bytes.Buffer) (*flag.FlagSet, *testFlags) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(out)
	f := &testFlags{}
	fs.StringVar(&f.upstream, "upstream", "127.0.0.1:9000", "php-fpm address")
	fs.DurationVar(&f.timeout, "timeout", 2*time.Second, "how long to wait")
	fs.StringVar(&f.root, "root", "", "document `dir` to serve")
	fs.BoolVar(&f.verbose, "v", false, "log more")
	fs.IntVar(&f.workers, "workers", 4, "how many workers")
	fs.Var(&f.port, "port", "port to listen on")
	return fs, f
}

var testOptions = Options{
	Help: "'fcgiscope serve -h' lists the flags",
	Aliases: map[string]string{
		"i":    "fcgiscope request always prints the response head; drop -i",
		"data": "fcgiscope request takes the body with -d",
	},
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantFlag string
		wantMsg  string
	}{
		{
			name:     "typo with an extra letter",
			args:     []string{"--upstreams", "x"},
			wantFlag: "upstreams",
			wantMsg:  "unknown flag --upstreams; did you mean --upstream?",
		},
		{
			name:     "swapped letters",
			args:     []string{"-tiemout", "3s"},
			wantFlag: "tiemout",
			wantMsg:  "unknown flag --tiemout; did you mean --timeout?",
		},
		{
			name:     "typed flag has a defined one as prefix",
			args:     []string{"--root-dir=/srv"},
			wantFlag: "root-dir",
			wantMsg:  "unknown flag --root-dir; did you mean --root?",
		},
		{
			name:     "typed flag is a prefix of a defined one",
			args:     []string{"--upst", "x"},
			wantFlag: "upst",
			wantMsg:  "unknown flag --upst; did you mean --upstream?",
		},
		{
			name:     "a prefix is nearer than two typos",
			args:     []string{"--work", "2"},
			wantFlag: "work",
			wantMsg:  "unknown flag --work; did you mean --workers or --port?",
		},
		{
			name:     "two suggestions, nearest first",
			args:     []string{"--rot"},
			wantFlag: "rot",
			wantMsg:  "unknown flag --rot; did you mean --root or --port?",
		},
		{
			name:     "no near name gets the help hint",
			args:     []string{"--frobnicate"},
			wantFlag: "frobnicate",
			wantMsg:  "unknown flag --frobnicate; 'fcgiscope serve -h' lists the flags",
		},
		{
			name:     "one letter is not near another",
			args:     []string{"-q"},
			wantFlag: "q",
			wantMsg:  "unknown flag -q; 'fcgiscope serve -h' lists the flags",
		},
		{
			name:     "alias from curl",
			args:     []string{"-i", "/index.php"},
			wantFlag: "i",
			wantMsg:  "unknown flag -i; fcgiscope request always prints the response head; drop -i",
		},
		{
			name:     "alias with a value",
			args:     []string{"--data=a=1"},
			wantFlag: "data",
			wantMsg:  "unknown flag --data; fcgiscope request takes the body with -d",
		},
		{
			name:     "missing value takes the example from DefValue",
			args:     []string{"-v", "--timeout"},
			wantFlag: "timeout",
			wantMsg:  "flag --timeout needs a value, as in --timeout 2s",
		},
		{
			name:     "missing value takes the example from the usage",
			args:     []string{"--root"},
			wantFlag: "root",
			wantMsg:  "flag --root needs a value, as in --root dir",
		},
		{
			name:     "bad duration",
			args:     []string{"--timeout", "abc"},
			wantFlag: "timeout",
			wantMsg:  `invalid value "abc" for --timeout: time: invalid duration "abc"`,
		},
		{
			name:     "bad duration after =",
			args:     []string{"--timeout=5"},
			wantFlag: "timeout",
			wantMsg:  `invalid value "5" for --timeout: time: missing unit in duration "5"`,
		},
		{
			name:     "bad integer",
			args:     []string{"-workers", "many"},
			wantFlag: "workers",
			wantMsg:  `invalid value "many" for --workers: want an integer`,
		},
		{
			name:     "integer out of range",
			args:     []string{"-workers", "99999999999999999999"},
			wantFlag: "workers",
			wantMsg:  `invalid value "99999999999999999999" for --workers: out of range`,
		},
		{
			name:     "bad boolean",
			args:     []string{"-v=maybe"},
			wantFlag: "v",
			wantMsg:  `invalid value "maybe" for -v: want true or false`,
		},
		{
			name:     "caller's value keeps its own reason",
			args:     []string{"--port", "8080"},
			wantFlag: "port",
			wantMsg:  `invalid value "8080" for --port: not a port`,
		},
		{
			name:     "the first bad flag is the one reported",
			args:     []string{"--timeout", "abc", "--frobnicate"},
			wantFlag: "timeout",
			wantMsg:  `invalid value "abc" for --timeout: time: invalid duration "abc"`,
		},
		{
			name:    "bad syntax",
			args:    []string{"---upstream", "x"},
			wantMsg: "bad flag syntax ---upstream; 'fcgiscope serve -h' lists the flags",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			fs, _ := newFlagSet(&out)
			err := Parse(fs, tt.args, testOptions)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse(%q) = %v, want an *Error", tt.args, err)
			}
			if e.Msg != tt.wantMsg || e.Error() != tt.wantMsg {
				t.Errorf("message\n got %q\nwant %q", e.Msg, tt.wantMsg)
			}
			if e.Flag != tt.wantFlag {
				t.Errorf("Flag = %q, want %q", e.Flag, tt.wantFlag)
			}
			if strings.Contains(e.Msg, "\n") {
				t.Errorf("message has more than one line: %q", e.Msg)
			}
			if out.Len() != 0 {
				t.Errorf("Parse wrote to fs.Output() on error:\n%s", out.String())
			}
			if fs.Output() != &out {
				t.Errorf("fs.Output() was not restored")
			}
		})
	}
}

func TestParseNoHint(t *testing.T) {
	fs, _ := newFlagSet(new(bytes.Buffer))
	err := Parse(fs, []string{"--frobnicate"}, Options{})
	if want := "unknown flag --frobnicate"; err == nil || err.Error() != want {
		t.Errorf("Parse = %v, want %q", err, want)
	}
}

func TestParseUnwrapsValueError(t *testing.T) {
	fs, _ := newFlagSet(new(bytes.Buffer))
	err := Parse(fs, []string{"--port=1"}, testOptions)
	if !errors.Is(err, errNotAPort) {
		t.Errorf("Parse = %v, want it to wrap %v", err, errNotAPort)
	}
}

func TestParseHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		t.Run(arg, func(t *testing.T) {
			var out bytes.Buffer
			fs, _ := newFlagSet(&out)
			called := false
			fs.Usage = func() {
				called = true
				fs.PrintDefaults()
			}
			err := Parse(fs, []string{"-v", arg, "--frobnicate"}, testOptions)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("Parse = %v, want flag.ErrHelp", err)
			}
			if !called {
				t.Error("fs.Usage was not called")
			}
			if !strings.Contains(out.String(), "-upstream") {
				t.Errorf("usage not printed to fs.Output(), got %q", out.String())
			}
		})
	}
}

func TestParseHelpDefaultUsage(t *testing.T) {
	var out bytes.Buffer
	fs, _ := newFlagSet(&out)
	if err := Parse(fs, []string{"-h"}, testOptions); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Parse = %v, want flag.ErrHelp", err)
	}
	if !strings.HasPrefix(out.String(), "Usage of serve:") {
		t.Errorf("usage = %q, want the flag package's default", out.String())
	}
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantArgs []string
		check    func(*testFlags) bool
	}{
		{
			name:     "no args",
			args:     nil,
			wantArgs: []string{},
			check:    func(f *testFlags) bool { return f.upstream == "127.0.0.1:9000" && f.timeout == 2*time.Second },
		},
		{
			name:     "flags then positional",
			args:     []string{"--upstream", "unix:/run/fpm.sock", "-timeout=5s", "-v", "/index.php", "--root", "x"},
			wantArgs: []string{"/index.php", "--root", "x"},
			check: func(f *testFlags) bool {
				return f.upstream == "unix:/run/fpm.sock" && f.timeout == 5*time.Second && f.verbose && f.root == ""
			},
		},
		{
			name:     "double dash ends the flags",
			args:     []string{"-v", "--", "--frobnicate", "-h"},
			wantArgs: []string{"--frobnicate", "-h"},
			check:    func(f *testFlags) bool { return f.verbose },
		},
		{
			name:     "a bool flag takes no separate value",
			args:     []string{"-v", "false"},
			wantArgs: []string{"false"},
			check:    func(f *testFlags) bool { return f.verbose },
		},
		{
			name:     "a bool flag with =",
			args:     []string{"--v=false", "x"},
			wantArgs: []string{"x"},
			check:    func(f *testFlags) bool { return !f.verbose },
		},
		{
			name:     "a value that looks like a flag",
			args:     []string{"--root", "-frobnicate", "--workers", "-1"},
			wantArgs: []string{},
			check:    func(f *testFlags) bool { return f.root == "-frobnicate" && f.workers == -1 },
		},
		{
			name:     "a lone dash is an argument",
			args:     []string{"-", "-v"},
			wantArgs: []string{"-", "-v"},
			check:    func(f *testFlags) bool { return !f.verbose },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			fs, f := newFlagSet(&out)
			if err := Parse(fs, tt.args, testOptions); err != nil {
				t.Fatalf("Parse(%q) = %v", tt.args, err)
			}
			if !fs.Parsed() {
				t.Error("fs.Parsed() = false")
			}
			if got := fs.Args(); !slices.Equal(got, tt.wantArgs) {
				t.Errorf("fs.Args() = %q, want %q", got, tt.wantArgs)
			}
			if !tt.check(f) {
				t.Errorf("flag values wrong: %+v", *f)
			}
			if out.Len() != 0 {
				t.Errorf("Parse wrote to fs.Output():\n%s", out.String())
			}
		})
	}
}

// TestParseMatchesFlag checks that Parse leaves the same values and
// arguments as fs.Parse on command lines both accept.
func TestParseMatchesFlag(t *testing.T) {
	lines := [][]string{
		{"--upstream=a", "b", "c"},
		{"-workers", "7", "-v", "--", "-v"},
		{"-v=true", "-timeout", "1m", "--port", "80"},
		{"x", "--upstream", "a"},
	}
	for _, args := range lines {
		fs1, f1 := newFlagSet(new(bytes.Buffer))
		fs2, f2 := newFlagSet(new(bytes.Buffer))
		if err := fs1.Parse(args); err != nil {
			t.Fatalf("flag: %v", err)
		}
		if err := Parse(fs2, args, Options{}); err != nil {
			t.Fatalf("Parse(%q) = %v", args, err)
		}
		if *f1 != *f2 || !slices.Equal(fs1.Args(), fs2.Args()) || fs1.NFlag() != fs2.NFlag() {
			t.Errorf("%q: flag gives %+v %q, Parse gives %+v %q", args, *f1, fs1.Args(), *f2, fs2.Args())
		}
	}
}

func TestDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"timeout", "timeout", 0},
		{"tiemout", "timeout", 1},
		{"upstreams", "upstream", 1},
		{"kitten", "sitting", 3},
		{"", "abc", 3},
		{"ca", "abc", 3},
	}
	for _, tt := range tests {
		if got := distance(tt.a, tt.b); got != tt.want {
			t.Errorf("distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
