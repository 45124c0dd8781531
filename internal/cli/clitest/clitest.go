// Package clitest checks, for the binaries' tests, that a program's -help output and the
// generated configuration reference (docs/configuration.md) state the same variables, defaults,
// allowed values, meanings and exit codes as the program's Config tags. Both outputs are parsed
// back, independently of how cli wrote them, so a renderer that drops or alters a value fails.
package clitest

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/podns/podns/internal/cli"
	"github.com/podns/podns/internal/envconfig"
)

// Row is one variable as an output states it; Default is "" when it has none.
type Row struct{ Name, Default, Allowed, Help string }

// Compare returns one line per disagreement between p's Config tags and p's Exits on one side
// and, on the other, help (what `<name> -help` printed) and reference (the whole generated
// Markdown file). No lines: all three agree.
func Compare(p cli.Program, help, reference string) []string {
	var want []Row
	for _, f := range envconfig.Fields(p.Config) {
		want = append(want, Row{f.Name, f.Default, f.Allowed, f.Help})
	}
	var problems []string
	helpRows, helpExits, err := ParseHelp(help)
	if err != nil {
		return []string{"-help: " + err.Error()}
	}
	refRows, refExits, err := ParseReference(reference, p.Name)
	if err != nil {
		return []string{"reference: " + err.Error()}
	}
	problems = append(problems, diff("-help", want, helpRows)...)
	problems = append(problems, diff("reference", want, refRows)...)
	problems = append(problems, diffExits("-help", p.Exits, helpExits)...)
	problems = append(problems, diffExits("reference", p.Exits, refExits)...)
	problems = append(problems, diffCommands(p, help, reference)...)
	return problems
}

// diffCommands checks that help and reference list every command of p with its meaning, under
// its introduction: help as an indented two-column line, reference as a table row.
func diffCommands(p cli.Program, help, reference string) []string {
	var out []string
	if len(p.Commands) == 0 {
		return nil
	}
	if !strings.Contains(help, "\n"+p.CommandsIntro+":\n") {
		out = append(out, "-help lacks the commands' introduction")
	}
	if !strings.Contains(reference, "\n"+cli.MarkdownEscape(p.CommandsIntro)+":\n") {
		out = append(out, "reference lacks the commands' introduction")
	}
	helpLines := strings.Split(help, "\n")
	for _, c := range p.Commands {
		found := false
		for _, l := range helpLines {
			if rest, ok := strings.CutPrefix(l, "  "+c.Usage+"  "); ok && strings.TrimSpace(rest) == c.Meaning {
				found = true
			}
		}
		if !found {
			out = append(out, fmt.Sprintf("-help lacks the command %q with its meaning", c.Usage))
		}
		if row := "| `" + p.Name + " " + c.Usage + "` | " + cli.MarkdownEscape(c.Meaning) + " |\n"; !strings.Contains(reference, row) {
			out = append(out, fmt.Sprintf("reference lacks the row %q", row))
		}
	}
	return out
}

func diff(what string, want, got []Row) []string {
	var out []string
	for i := 0; i < max(len(want), len(got)); i++ {
		switch {
		case i >= len(got):
			out = append(out, fmt.Sprintf("%s lacks %s", what, want[i].Name))
		case i >= len(want):
			out = append(out, fmt.Sprintf("%s has %s, which is not a variable", what, got[i].Name))
		case want[i] != got[i]:
			out = append(out, fmt.Sprintf("%s row %d: %+v, want %+v", what, i+1, got[i], want[i]))
		}
	}
	return out
}

func diffExits(what string, want, got []cli.Exit) []string {
	if fmt.Sprint(want) != fmt.Sprint(got) {
		return []string{fmt.Sprintf("%s exit codes %+v, want %+v", what, got, want)}
	}
	return nil
}

// ParseHelp reads the variable and exit tables of -help output. Columns are cut where the
// header's words start (tabwriter pads with spaces, and values may contain spaces).
func ParseHelp(help string) ([]Row, []cli.Exit, error) {
	lines := strings.Split(help, "\n")
	var rows []Row
	var exits []cli.Exit
	for i := 0; i < len(lines); i++ {
		switch {
		case strings.HasPrefix(lines[i], "VARIABLE "):
			cols, err := columns(lines[i], "DEFAULT", "ALLOWED", "MEANING")
			if err != nil {
				return nil, nil, err
			}
			for i++; i < len(lines) && lines[i] != ""; i++ {
				c := cut(lines[i], cols)
				switch c[1] {
				case "(unset)":
					c[1] = ""
				case "":
					c[1] = "(blank: unset must say so)"
				}
				rows = append(rows, Row{c[0], c[1], c[2], c[3]})
			}
		case strings.HasPrefix(lines[i], "EXIT "):
			cols, err := columns(lines[i], "MEANING")
			if err != nil {
				return nil, nil, err
			}
			for i++; i < len(lines) && lines[i] != ""; i++ {
				c := cut(lines[i], cols)
				code, err := strconv.Atoi(c[0])
				if err != nil {
					return nil, nil, fmt.Errorf("exit code %q", c[0])
				}
				exits = append(exits, cli.Exit{Code: code, Meaning: c[1]})
			}
		}
	}
	if rows == nil {
		return nil, nil, fmt.Errorf("no VARIABLE table")
	}
	return rows, exits, nil
}

// columns returns the rune offsets at which the header's words start.
func columns(header string, words ...string) ([]int, error) {
	cols := []int{0}
	for _, w := range words {
		i := strings.Index(header, "  "+w)
		if i < 0 {
			return nil, fmt.Errorf("header %q lacks %s", header, w)
		}
		cols = append(cols, len([]rune(header[:i]))+2)
	}
	return cols, nil
}

func cut(line string, cols []int) []string {
	r := []rune(line)
	out := make([]string, len(cols))
	for i, c := range cols {
		end := len(r)
		if i+1 < len(cols) {
			end = min(cols[i+1], len(r))
		}
		if c < len(r) {
			out[i] = strings.TrimSpace(string(r[c:end]))
		}
	}
	return out
}

// ParseReference reads the variable and exit tables of section "## name" of the Markdown
// reference, unescaping the cells.
func ParseReference(md, name string) ([]Row, []cli.Exit, error) {
	start := strings.Index(md, "\n## "+name+"\n")
	if start < 0 {
		return nil, nil, fmt.Errorf("no section ## %s", name)
	}
	sec := md[start+1:]
	if end := strings.Index(sec[1:], "\n## "); end >= 0 {
		sec = sec[:end+1]
	}
	var rows []Row
	var exits []cli.Exit
	table := ""
	for _, l := range strings.Split(sec, "\n") {
		switch {
		case l == "| variable | default | allowed | meaning |":
			table = "vars"
			continue
		case l == "| exit | meaning |":
			table = "exits"
			continue
		case l == "| command | meaning |":
			table = "commands" // diffCommands checks these rows
			continue
		case !strings.HasPrefix(l, "|"):
			table = ""
			continue
		case strings.HasPrefix(l, "|---"):
			continue
		}
		c := cells(l)
		switch {
		case table == "vars" && len(c) == 4:
			def := strings.Trim(c[1], "`")
			if c[1] == "unset" {
				def = ""
			}
			rows = append(rows, Row{strings.Trim(c[0], "`"), def, c[2], c[3]})
		case table == "commands":
		case table == "exits" && len(c) == 2:
			code, err := strconv.Atoi(c[0])
			if err != nil {
				return nil, nil, fmt.Errorf("exit code %q", c[0])
			}
			exits = append(exits, cli.Exit{Code: code, Meaning: c[1]})
		default:
			return nil, nil, fmt.Errorf("malformed row %q", l)
		}
	}
	return rows, exits, nil
}

// cells splits a Markdown table row on its unescaped pipes and removes the backslash escapes
// (cli.MarkdownEscape's; the code spans, names and defaults, hold none).
func cells(row string) []string {
	row = strings.TrimPrefix(strings.TrimSpace(row), "|")
	var out []string
	var cur strings.Builder
	for i := 0; i < len(row); i++ {
		switch ch := row[i]; {
		case ch == '\\' && i+1 < len(row):
			i++
			cur.WriteByte(row[i])
		case ch == '|':
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(ch)
		}
	}
	return out
}
