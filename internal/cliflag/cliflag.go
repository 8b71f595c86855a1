// Package cliflag turns the standard flag package's parse errors into one line a person can act on.
package cliflag

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Options says what Parse adds to its messages.
type Options struct {
	// Help is appended to errors without a suggestion, e.g. "'fcgiscope serve -h' lists the flags".
	Help string
	// Aliases maps a flag a user may bring from another tool (without
	// dashes, e.g. "i", "data", "d", "X", "H") to advice, e.g. "fcgiscope
	// request always prints the response head; drop -i". When an unknown
	// flag is in Aliases the advice replaces the did-you-mean.
	Aliases map[string]string
}

// Error is a command-line error: Flag is the flag's name as typed without
// dashes (may be empty), Msg the one-line message.
type Error struct {
	Flag string
	Msg  string
	// err is what the flag's Value.Set returned, for an invalid value.
	err error
}

// Error returns Msg.
func (e *Error) Error() string { return e.Msg }

// Unwrap returns the error the flag's Value.Set returned when the message is
// about an invalid value, and nil otherwise.
func (e *Error) Unwrap() error { return e.err }

// maxSuggestions is how many flag names a did-you-mean offers at most.
const maxSuggestions = 2

// Parse parses args with fs, which must have been created with
// flag.ContinueOnError. It silences fs's own error printing and usage dump for
// errors (it still lets -h/-help print the usage and returns flag.ErrHelp).
// On an error it returns an *Error whose message is one line, such as
//
//	unknown flag --upstreams; did you mean --upstream?
//	unknown flag --frobnicate; 'fcgiscope serve -h' lists the flags
//	flag --timeout needs a value, as in --timeout 2s
//	invalid value "abc" for --timeout: time: invalid duration "abc"
//
// The text after an unknown flag without a suggestion is Options.Help. The
// example value is the flag's DefValue when not empty, else the name
// flag.UnquoteUsage gives for it.
//
// Suggestions are the defined flag names within edit distance 2 (Damerau or
// plain Levenshtein), or a defined flag that the typed one is a prefix of or
// has as a prefix (e.g. --upstreams -> --upstream, --root-dir -> --root),
// nearest first, at most 2. Habits from other tools map to advice instead,
// given in Options.Aliases.
//
// Flags are parsed in order, as fs.Parse would, so the first bad argument is
// the one reported and fs holds the values before it. After a nil error,
// fs.Args() is what fs.Parse(args) would have left.
func Parse(fs *flag.FlagSet, args []string, o Options) error {
	// fs.Output() is os.Stderr when none was set, which is what it will
	// print to again once restored.
	out, usage := fs.Output(), fs.Usage
	restore := func() { fs.SetOutput(out); fs.Usage = usage }
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	defer restore()

	// Walk the flags the way flag.FlagSet.parseOne does, handing fs one
	// flag (with its value) at a time, so that each failure is known
	// without reading fs's message.
	i := 0
	for i < len(args) {
		a := args[i]
		if len(a) < 2 || a[0] != '-' || a == "--" {
			break
		}
		typed := strings.TrimPrefix(a[1:], "-")
		if typed == "" || typed[0] == '-' || typed[0] == '=' {
			return &Error{Msg: withHint(fmt.Sprintf("bad flag syntax %s", a), o.Help)}
		}
		name, value, hasValue := strings.Cut(typed, "=")
		fl := fs.Lookup(name)
		if fl == nil {
			if name == "h" || name == "help" {
				restore()
				return fs.Parse(args[i : i+1]) // prints the usage and returns flag.ErrHelp
			}
			return unknown(fs, name, o)
		}
		n := 1
		switch {
		case isBool(fl.Value):
			if !hasValue {
				value = "true"
			}
		case !hasValue:
			if i+1 == len(args) {
				return &Error{Flag: name, Msg: needsValue(fl)}
			}
			value, n = args[i+1], 2
		}
		if err := parseOne(fs, fl, args[i:i+n]); err != nil {
			return invalid(fl, value, err)
		}
		i += n
	}
	if err := fs.Parse(args[i:]); err != nil { // only sets fs.Args(); cannot fail
		return &Error{Msg: err.Error()}
	}
	return nil
}

// parseOne has fs parse args, which hold the one flag fl and its value, and
// returns what fl's Value.Set returned, or fs's error if Set did not fail.
func parseOne(fs *flag.FlagSet, fl *flag.Flag, args []string) error {
	rec := &recorder{Value: fl.Value}
	fl.Value = rec
	defer func() { fl.Value = rec.Value }()
	err := fs.Parse(args)
	if err != nil && rec.err != nil {
		return rec.err
	}
	return err
}

// recorder stands in for a flag's Value while fs parses it, keeping the
// error Set returns, which fs only passes on as text.
type recorder struct {
	flag.Value
	err error
}

// Set calls the flag's Set and keeps its error.
func (r *recorder) Set(s string) error {
	r.err = r.Value.Set(s)
	return r.err
}

// IsBoolFlag reports what the flag's own IsBoolFlag does, if it has one.
func (r *recorder) IsBoolFlag() bool { return isBool(r.Value) }

// isBool reports whether the flag package lets v's flag go without a value.
func isBool(v flag.Value) bool {
	b, ok := v.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// unknown is the error for the flag name that fs does not define.
func unknown(fs *flag.FlagSet, name string, o Options) *Error {
	msg := "unknown flag " + dashed(name)
	if advice, ok := o.Aliases[name]; ok {
		return &Error{Flag: name, Msg: msg + "; " + advice}
	}
	if s := suggest(fs, name); len(s) > 0 {
		for i := range s {
			s[i] = dashed(s[i])
		}
		return &Error{Flag: name, Msg: msg + "; did you mean " + strings.Join(s, " or ") + "?"}
	}
	return &Error{Flag: name, Msg: withHint(msg, o.Help)}
}

// needsValue is the message for the non-boolean flag fl given last, without
// a value.
func needsValue(fl *flag.Flag) string {
	msg := "flag " + dashed(fl.Name) + " needs a value"
	example := fl.DefValue
	if example == "" {
		example, _ = flag.UnquoteUsage(fl)
	}
	if example == "" {
		return msg
	}
	if strings.ContainsAny(example, " \t\"'") {
		example = strconv.Quote(example)
	}
	return msg + ", as in " + dashed(fl.Name) + " " + example
}

// invalid is the error for value, which fl's Value.Set rejected with err.
func invalid(fl *flag.Flag, value string, err error) *Error {
	return &Error{
		Flag: fl.Name,
		Msg:  fmt.Sprintf("invalid value %q for %s: %s", value, dashed(fl.Name), reason(fl.Value, value, err)),
		err:  err,
	}
}

// reason says why value is not one v accepts. The flag package's own values
// only say "parse error" or "value out of range", so for them the value is
// parsed again to say more.
func reason(v flag.Value, value string, err error) string {
	g, ok := v.(flag.Getter)
	if !ok || !fromFlagPackage(v) {
		return err.Error()
	}
	switch g.Get().(type) {
	case time.Duration:
		if _, perr := time.ParseDuration(value); perr != nil {
			return perr.Error()
		}
	case bool:
		return "want true or false"
	case int:
		_, perr := strconv.ParseInt(value, 0, strconv.IntSize)
		return numReason(perr, "an integer", err)
	case int64:
		_, perr := strconv.ParseInt(value, 0, 64)
		return numReason(perr, "an integer", err)
	case uint:
		_, perr := strconv.ParseUint(value, 0, strconv.IntSize)
		return numReason(perr, "a whole number", err)
	case uint64:
		_, perr := strconv.ParseUint(value, 0, 64)
		return numReason(perr, "a whole number", err)
	case float64:
		_, perr := strconv.ParseFloat(value, 64)
		return numReason(perr, "a number", err)
	}
	return err.Error()
}

// fromFlagPackage reports whether v is one of the flag package's own values,
// such as what FlagSet.Duration defines.
func fromFlagPackage(v flag.Value) bool {
	t := reflect.TypeOf(v)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.PkgPath() == "flag"
}

// numReason says why strconv rejected a number with perr, the flag wanting
// what; setErr is the flag's own error, for when strconv did not reject it.
func numReason(perr error, what string, setErr error) string {
	switch {
	case perr == nil:
		return setErr.Error()
	case errors.Is(perr, strconv.ErrRange):
		return "out of range"
	default:
		return "want " + what
	}
}

// withHint appends hint, if any, to msg.
func withHint(msg, hint string) string {
	if hint == "" {
		return msg
	}
	return msg + "; " + hint
}

// dashed writes a flag name the way messages show it: one dash for a
// single letter, as in -d, two for a word, as in --upstream.
func dashed(name string) string {
	if len([]rune(name)) == 1 {
		return "-" + name
	}
	return "--" + name
}

// suggest returns the names fs defines that typed may have been meant as,
// nearest first, at most maxSuggestions.
func suggest(fs *flag.FlagSet, typed string) []string {
	var names []string
	fs.VisitAll(func(fl *flag.Flag) { names = append(names, fl.Name) })
	return Suggest(typed, names)
}

// Suggest returns the names that typed may have been meant as, nearest
// first, at most two: for flags, and for a command's subcommands.
func Suggest(typed string, names []string) []string {
	type candidate struct {
		name string
		dist int
	}
	var found []candidate
	for _, name := range names {
		if d, ok := nearness(typed, name); ok {
			found = append(found, candidate{name, d})
		}
	}
	slices.SortFunc(found, func(a, b candidate) int {
		if a.dist != b.dist {
			return a.dist - b.dist
		}
		return strings.Compare(a.name, b.name)
	})
	var out []string
	for _, c := range found[:min(len(found), maxSuggestions)] {
		out = append(out, c.name)
	}
	return out
}

// nearness reports whether typed is close enough to the defined name to
// suggest it, and how close, smaller being nearer. It is close enough within
// edit distance 2, unless that replaces all of either name, or when one is a
// prefix of the other and they share at least two characters; a prefix
// counts as nearness 1, like a single typo.
func nearness(typed, name string) (int, bool) {
	lt, ln := len([]rune(typed)), len([]rune(name))
	if min(lt, ln) >= 2 && (strings.HasPrefix(typed, name) || strings.HasPrefix(name, typed)) {
		return 1, true
	}
	d := distance(typed, name)
	return d, d <= 2 && d < lt && d < ln
}

// distance returns the optimal string alignment distance between a and b:
// the Levenshtein distance that also counts swapping two adjacent
// characters as one edit. It is never more than the plain Levenshtein
// distance.
func distance(a, b string) int {
	s, t := []rune(a), []rune(b)
	// d[i][j] is the distance between s[:i] and t[:j]; three rows suffice.
	prev2 := make([]int, len(t)+1)
	prev := make([]int, len(t)+1)
	cur := make([]int, len(t)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(s); i++ {
		cur[0] = i
		for j := 1; j <= len(t); j++ {
			cost := 1
			if s[i-1] == t[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && s[i-1] == t[j-2] && s[i-2] == t[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(t)]
}
