// Package envconfig loads a binary's Config struct from PODNS_* environment variables with
// github.com/caarlos0/env/v10 and checks the bounds declared in struct tags, reporting every
// problem at once. Both binaries use it, so a bad value reads the same everywhere:
//
//	PODNS_UPSTREAM_TIMEOUT="5x": not a duration (allowed: 100ms to 30s)
//
// Tags understood on top of caarlos0/env's `env` and `envDefault`:
//
//	min, max   bounds for int and time.Duration fields ("100ms", "30s", "1")
//	oneof      space-separated allowed values for a string field
//	allowed    human text for the allowed range where min/max/oneof cannot say it
//	help       one line: what the variable means (for -help and docs/configuration.md)
//
// A field may also have a type of its own that implements encoding.TextUnmarshaler (Switch, or
// an address list), so that the value is parsed once, here, into what the program uses; the
// error of its UnmarshalText becomes the problem text.
package envconfig

import (
	"encoding"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caarlos0/env/v10"
	"github.com/hashicorp/go-multierror"
	"github.com/rs/zerolog"
)

var (
	durationType        = reflect.TypeOf(time.Duration(0))
	textUnmarshalerType = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
)

// Validator is implemented by a Config with rules the tags cannot state (address syntax,
// one field bounded by another); Load calls Validate after the tag checks.
type Validator interface {
	Validate() error
}

// Field describes one environment variable of a Config, for -help output and docs.
type Field struct {
	Name    string // the variable, e.g. PODNS_LISTEN
	Default string // envDefault, "" when there is none
	Allowed string // the allowed values in words
	Help    string // what it means
}

// Fields lists the variables of the struct pointed to by cfg, in declaration order.
func Fields(cfg any) []Field {
	t := reflect.TypeOf(cfg).Elem()
	out := make([]Field, 0, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("env"), ",")
		if name == "" {
			continue
		}
		out = append(out, Field{Name: name, Default: sf.Tag.Get("envDefault"), Allowed: allowed(sf), Help: sf.Tag.Get("help")})
	}
	return out
}

// Setting is one variable as a program applied it, for status output.
type Setting struct {
	Name  string // the variable
	Value string // the text applied: the environment's, or the default
	From  string // "env" (set, non-empty), "default", or "unset" (no value, no default)
}

// Settings lists the variables of the struct pointed to by cfg with the value each takes from
// environ (nil: the process environment) and where it came from, in declaration order. As in
// Load, surrounding white space is ignored and a variable set to the empty string (or only
// spaces) takes its default.
func Settings(cfg any, environ map[string]string) []Setting {
	environ = trimmed(environ)
	fields := Fields(cfg)
	out := make([]Setting, len(fields))
	for i, f := range fields {
		s := Setting{Name: f.Name, Value: environ[f.Name], From: "env"}
		if s.Value == "" {
			s.Value, s.From = f.Default, "default"
			if f.Default == "" {
				s.From = "unset"
			}
		}
		out[i] = s
	}
	return out
}

// Usage writes a table of every variable with its default, allowed values and meaning.
func Usage(w io.Writer, cfg any) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tALLOWED\tMEANING")
	for _, f := range Fields(cfg) {
		def := f.Default
		if def == "" {
			def = "(unset)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Name, def, f.Allowed, f.Help)
	}
	tw.Flush()
}

// Load fills the struct pointed to by cfg from environ (nil means the process environment),
// checks the min/max/oneof tags, then calls cfg's Validate if it is a Validator. The error, if
// any, is a *multierror.Error with one entry per problem, each naming the variable, its value
// and the allowed values, in this order: values of plain kinds (numbers, durations, strings)
// that do not parse or are out of range, then values of the config's own types that do not
// parse, then what Validate reports. Validate runs even when the tags found problems, so one
// run reports everything it can.
//
// Surrounding white space of every value is ignored (a value of only spaces is empty: the
// default), for every kind of variable alike: a value pasted into a manifest with a trailing
// space means what it says. The stub's run-time switches (stub querylog, /debug/querylog) follow
// the same rule.
func Load(cfg any, environ map[string]string) error {
	environ = trimmed(environ)
	var errs, typed *multierror.Error
	t := reflect.TypeOf(cfg).Elem()
	unparsed := map[string]bool{} // fields whose value did not parse: no bounds check on them
	if err := env.ParseWithOptions(cfg, env.Options{Environment: environ}); err != nil {
		var agg env.AggregateError
		if !errors.As(err, &agg) {
			return err
		}
		for _, e := range agg.Errors {
			var pe env.ParseError
			if !errors.As(e, &pe) {
				errs = multierror.Append(errs, e)
				continue
			}
			sf, ok := t.FieldByName(pe.Name)
			if !ok {
				errs = multierror.Append(errs, e)
				continue
			}
			unparsed[pe.Name] = true
			name, _, _ := strings.Cut(sf.Tag.Get("env"), ",")
			if isTextType(sf.Type) {
				for _, problem := range problems(pe.Err) {
					typed = multierror.Append(typed, fmt.Errorf("%s=%q: %s (allowed: %s)", name, environ[name], problem, allowed(sf)))
				}
				continue
			}
			errs = multierror.Append(errs, fmt.Errorf("%s=%q: %s (allowed: %s)", name, environ[name], kindWord(sf.Type, pe.Err), allowed(sf)))
		}
	}
	v := reflect.ValueOf(cfg).Elem()
	for i := 0; i < t.NumField(); i++ {
		if unparsed[t.Field(i).Name] {
			continue
		}
		if err := checkBounds(t.Field(i), v.Field(i), environ); err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	if typed != nil {
		errs = multierror.Append(errs, typed)
	}
	if val, ok := cfg.(Validator); ok {
		if err := val.Validate(); err != nil {
			errs = multierror.Append(errs, err) // Append flattens a multierror: one line each
		}
	}
	return Format(errs.ErrorOrNil())
}

// isTextType reports whether values of t are parsed by their own UnmarshalText (also when t is
// a slice of such values).
func isTextType(t reflect.Type) bool {
	if reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return true
	}
	return t.Kind() == reflect.Slice && reflect.PointerTo(t.Elem()).Implements(textUnmarshalerType)
}

// problems splits an UnmarshalText error into its problems: a *multierror.Error (a list with
// several bad entries) gives one line per entry.
func problems(err error) []string {
	var me *multierror.Error
	if errors.As(err, &me) {
		out := make([]string, len(me.Errors))
		for i, e := range me.Errors {
			out[i] = e.Error()
		}
		return out
	}
	return []string{err.Error()}
}

// Logger builds the zerolog logger both binaries use: level and format as PODNS_LOG_LEVEL and
// PODNS_LOG_FORMAT give them (both checked by their oneof tags in Load), JSON unless format is
// "console", each line with a timestamp and the component (the binary's name).
func Logger(w io.Writer, level, format, component string) zerolog.Logger {
	lvl, _ := zerolog.ParseLevel(level) // checked by Load
	var l zerolog.Logger
	if format == "console" {
		l = zerolog.New(zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339})
	} else {
		l = zerolog.New(w)
	}
	return l.Level(lvl).With().Timestamp().Str("component", component).Logger()
}

// Format makes a multierror print one problem per line, without the library's bullet header,
// so that a log line or a terminal shows each bad variable plainly.
func Format(err error) error {
	var me *multierror.Error
	if errors.As(err, &me) {
		me.ErrorFormat = func(es []error) string {
			lines := make([]string, len(es))
			for i, e := range es {
				lines[i] = e.Error()
			}
			return strings.Join(lines, "\n")
		}
	}
	return err
}

// trimmed is environ (nil: the process environment) with surrounding white space cut from every
// value, in a new map.
func trimmed(environ map[string]string) map[string]string {
	if environ == nil {
		environ = env.ToMap(os.Environ())
	}
	out := make(map[string]string, len(environ))
	for k, v := range environ {
		out[k] = strings.TrimSpace(v)
	}
	return out
}

// kindWord says what is wrong with a value of type t that did not parse (err, the parser's): a
// number too large for the type is out of range, not "not a whole number".
func kindWord(t reflect.Type, err error) string {
	switch {
	case errors.Is(err, strconv.ErrRange):
		return "out of range"
	case t == durationType:
		return "not a duration"
	case t.Kind() == reflect.Int:
		return "not a whole number"
	case t.Kind() == reflect.Bool:
		return "not a boolean"
	}
	return "invalid value"
}

// allowed renders the allowed range of a field in words.
func allowed(sf reflect.StructField) string {
	if a := sf.Tag.Get("allowed"); a != "" {
		return a
	}
	if o := sf.Tag.Get("oneof"); o != "" {
		return "one of " + strings.Join(strings.Fields(o), ", ")
	}
	lo, hi := sf.Tag.Get("min"), sf.Tag.Get("max")
	switch {
	case lo != "" && hi != "":
		return lo + " to " + hi
	case lo != "":
		return ">= " + lo
	case hi != "":
		return "<= " + hi
	}
	return "any"
}

func checkBounds(sf reflect.StructField, fv reflect.Value, environ map[string]string) error {
	name, _, _ := strings.Cut(sf.Tag.Get("env"), ",")
	if name == "" {
		return nil
	}
	bad := func() error {
		val, ok := environ[name]
		if !ok || val == "" {
			val = sf.Tag.Get("envDefault")
		}
		return fmt.Errorf("%s=%q: out of range (allowed: %s)", name, val, allowed(sf))
	}
	if o := sf.Tag.Get("oneof"); o != "" && fv.Kind() == reflect.String {
		for _, w := range strings.Fields(o) {
			if fv.String() == w {
				return nil
			}
		}
		return bad()
	}
	lo, hi := sf.Tag.Get("min"), sf.Tag.Get("max")
	if lo == "" && hi == "" {
		return nil
	}
	parse := func(s string) (int64, error) {
		if sf.Type == durationType {
			d, err := time.ParseDuration(s)
			return int64(d), err
		}
		return strconv.ParseInt(s, 10, 64)
	}
	var n int64
	switch fv.Kind() {
	case reflect.Int, reflect.Int64:
		n = fv.Int()
	default:
		return fmt.Errorf("envconfig: %s: min/max on a %s field", name, fv.Kind())
	}
	for _, b := range []struct {
		tag  string
		fail func(int64) bool
	}{{lo, func(l int64) bool { return n < l }}, {hi, func(h int64) bool { return n > h }}} {
		if b.tag == "" {
			continue
		}
		lim, err := parse(b.tag)
		if err != nil {
			return fmt.Errorf("envconfig: %s: bad bound %q: %v", name, b.tag, err)
		}
		if b.fail(lim) {
			return bad()
		}
	}
	return nil
}
