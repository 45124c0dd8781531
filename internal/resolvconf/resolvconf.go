// Package resolvconf parses resolv.conf(5) files the way the C resolvers that read them do.
//
// It follows glibc where glibc and musl agree, because a pod's resolv.conf is written by the
// kubelet for whichever libc the application links:
//
//   - A line is a keyword at the very start of the line, then blanks (space or tab), then
//     arguments. A line that starts with blanks, or with an unknown keyword, is ignored, as
//     both glibc and musl ignore it.
//   - '#' and ';' start a comment: at the start of a line, and anywhere after the keyword (glibc
//     cuts a nameserver at either character; a search domain or option containing one is never
//     valid, so cutting there everywhere loses nothing a resolver could use).
//   - Lines end at "\n"; a trailing "\r" (CRLF files) is a blank. The last line needs no newline.
//   - nameserver: one address per line; a line whose address does not parse is ignored, as glibc
//     does. IPv6 and scoped addresses (fe80::1%eth0) are kept. Duplicates are dropped. All are
//     returned, even beyond glibc's three (MAXNS): the caller decides how many to use.
//   - search and domain: the LAST such line sets the search list (glibc semantics: a later
//     domain line replaces an earlier search line and vice versa).
//   - options: every option of every options line, in file order; a word without a name
//     (":5") is dropped.
//
// Limits: a file larger than MaxSize is not a resolv.conf and Parse returns an error, as it
// does for NUL bytes and invalid UTF-8. A line longer than MaxLineLength bytes is ignored whole,
// as musl ignores a line it would have to truncate: taking part of it could turn a cut search
// domain into a wrong one. MaxLineLength is well above what the kubelet writes (its search line
// is at most 2048 characters).
package resolvconf

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

const (
	// MaxSize is the largest input Parse accepts. Real resolv.conf files are well under 4 KiB.
	MaxSize = 64 << 10
	// MaxLineLength is the longest line, in bytes without its newline, that Parse reads;
	// longer lines are ignored.
	MaxLineLength = 4096
	// MaxNdots is the largest effective ndots, as glibc's RES_MAXNDOTS and Go's resolver clamp it.
	MaxNdots = 15
	// DefaultNdots is the ndots a resolver uses when no options line sets it.
	DefaultNdots = 1
)

// ErrNotResolvConf is wrapped by every error Parse returns: the input is not a resolv.conf and
// the caller must refuse it rather than guess.
var ErrNotResolvConf = errors.New("not a resolv.conf")

// File is a parsed resolv.conf.
type File struct {
	// Nameservers are the nameserver addresses in file order, IPv6 and scoped (fe80::1%eth0)
	// kept, duplicates and unparsable addresses dropped. Empty is not an error: callers decide.
	Nameservers []netip.Addr
	// Search is the search list from the LAST search or domain line (glibc semantics), each
	// domain lowercased (ASCII) and without trailing dots; empty and duplicate domains dropped.
	Search []string
	// Options are the options of every options line, in file order as written.
	Options []Option
	// Ndots is the effective ndots: the last valid ndots option, clamped to 0..MaxNdots;
	// DefaultNdots (1) when none is given. An ndots whose value is not a number is ignored.
	Ndots int
}

// Option is one resolver option: "ndots:5" is {"ndots", "5"}, "rotate" is {"rotate", ""}.
// A value may itself contain ':'; only the first one separates name and value.
type Option struct{ Name, Value string }

// String renders the option as written in resolv.conf.
func (o Option) String() string {
	if o.Value == "" {
		return o.Name
	}
	return o.Name + ":" + o.Value
}

// ParseOption splits one option word ("ndots:5", "rotate") into name and value.
func ParseOption(word string) Option {
	name, value, _ := strings.Cut(word, ":")
	return Option{Name: name, Value: value}
}

// Option returns the value of the last option called name, and whether there is one.
// The last one is what glibc uses.
func (f *File) Option(name string) (string, bool) {
	for i := len(f.Options) - 1; i >= 0; i-- {
		if f.Options[i].Name == name {
			return f.Options[i].Value, true
		}
	}
	return "", false
}

// Parse parses a resolv.conf. It returns an error (wrapping ErrNotResolvConf) only for input
// that cannot be a resolv.conf: larger than MaxSize, containing a NUL byte, or not UTF-8.
// Everything else parses, possibly to a File without nameservers.
func Parse(data []byte) (*File, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d allowed", ErrNotResolvConf, len(data), MaxSize)
	}
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return nil, fmt.Errorf("%w: NUL byte at offset %d", ErrNotResolvConf, i)
	}
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: invalid UTF-8", ErrNotResolvConf)
	}
	f := &File{Ndots: DefaultNdots}
	seen := make(map[netip.Addr]bool)
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		if len(line) > MaxLineLength {
			continue
		}
		keyword, args, ok := splitLine(string(line))
		if !ok {
			continue
		}
		switch keyword {
		case "nameserver":
			if len(args) == 0 {
				continue
			}
			// glibc reads only the first word; the rest of the line is ignored.
			addr, err := netip.ParseAddr(args[0])
			if err != nil || seen[addr] {
				continue
			}
			seen[addr] = true
			f.Nameservers = append(f.Nameservers, addr)
		case "domain":
			// glibc: domain sets a one-element search list; a domain line without a
			// name is ignored.
			if len(args) == 0 {
				continue
			}
			f.Search = normalizeSearch(args[:1])
		case "search":
			// glibc replaces the list even when the new line is empty.
			f.Search = normalizeSearch(args)
		case "options":
			for _, w := range args {
				o := ParseOption(w)
				if o.Name == "" {
					// ":5" names nothing; no resolver reads it.
					continue
				}
				f.Options = append(f.Options, o)
				if o.Name == "ndots" {
					if n, ok := parseNdots(o.Value); ok {
						f.Ndots = n
					}
				}
			}
		}
	}
	return f, nil
}

// Keyword returns the keyword a resolver reads on one line (without its newline), or "" when
// resolvers ignore the line: blank, comment, leading blank, over MaxLineLength, or a keyword
// not followed by a blank. Unknown keywords are returned as written; callers compare.
func Keyword(line string) string {
	if len(line) > MaxLineLength {
		return ""
	}
	k, _, _ := splitLine(line)
	return k
}

// splitLine cuts comments and returns the keyword and its arguments. ok is false for lines a
// resolver ignores: blank, comment, leading blank, or a keyword not followed by a blank.
func splitLine(line string) (keyword string, args []string, ok bool) {
	if i := strings.IndexAny(line, "#;"); i >= 0 {
		line = line[:i]
	}
	if line == "" || isBlank(line[0]) {
		return "", nil, false
	}
	fields := strings.FieldsFunc(line, func(r rune) bool { return r < utf8.RuneSelf && isBlank(byte(r)) })
	if len(fields) == 0 {
		return "", nil, false
	}
	keyword = fields[0]
	// "nameserver" alone on a line is a keyword without arguments; "nameserverX" is unknown.
	if len(line) > len(keyword) && !isBlank(line[len(keyword)]) {
		return "", nil, false
	}
	return keyword, fields[1:], true
}

// isBlank reports the characters that separate words. '\r' is among them so CRLF files parse.
func isBlank(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'
}

// normalizeSearch lowercases (DNS compares names ASCII-case-insensitively), strips trailing
// dots, and drops empty and repeated domains, keeping the first occurrence's position.
func normalizeSearch(words []string) []string {
	out := make([]string, 0, len(words))
	seen := make(map[string]bool, len(words))
	for _, w := range words {
		d := strings.TrimRight(asciiLower(w), ".")
		if d == "" || seen[d] {
			continue
		}
		seen[d] = true
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// parseNdots reads an ndots value, clamped to 0..MaxNdots. Values that are not decimal
// integers are rejected rather than read as 0 (glibc's atoi would), so a typo does not turn
// off the search list.
func parseNdots(v string) (int, bool) {
	n, err := strconv.Atoi(v)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			if strings.HasPrefix(v, "-") {
				return 0, true
			}
			return MaxNdots, true
		}
		return 0, false
	}
	return min(max(n, 0), MaxNdots), true
}

// Bytes renders f as a resolv.conf: nameserver lines, one search line, options lines. Each
// line stays within MaxLineLength when every search domain and option does, so parsing the
// result gives f back.
func (f *File) Bytes() []byte {
	var b bytes.Buffer
	for _, ns := range f.Nameservers {
		b.WriteString("nameserver " + ns.String() + "\n")
	}
	writeWords(&b, "search", f.Search)
	opts := make([]string, len(f.Options))
	for i, o := range f.Options {
		opts[i] = o.String()
	}
	writeWords(&b, "options", opts)
	return b.Bytes()
}

// writeWords writes "keyword w1 w2 ..." lines. Options may be split over several lines
// (resolvers read every options line); search must stay on one line, since only the last
// search line counts.
func writeWords(b *bytes.Buffer, keyword string, words []string) {
	if len(words) == 0 {
		return
	}
	line := keyword
	for _, w := range words {
		if keyword == "options" && len(line)+1+len(w) > MaxLineLength && line != keyword {
			b.WriteString(line + "\n")
			line = keyword
		}
		line += " " + w
	}
	b.WriteString(line + "\n")
}
