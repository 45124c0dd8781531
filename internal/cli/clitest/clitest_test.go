package clitest

import (
	"bytes"
	"strings"
	"testing"

	"github.com/podns/podns/internal/cli"
)

type cfg struct {
	Size  int    `env:"T_SIZE" envDefault:"10" min:"1" max:"100" help:"entries, at most  two spaces"`
	Mode  string `env:"T_MODE" oneof:"a b" help:"uses <mode> | both – or neither"`
	Other string // no variable
}

var prog = cli.Program{Name: "tool", Summary: "does things", Config: &cfg{},
	Exits: []cli.Exit{{Code: 0, Meaning: "fine"}, {Code: 2, Meaning: "bad"}}}

func outputs(p cli.Program) (help, ref string) {
	var h, r bytes.Buffer
	p.Args([]string{"-help"}, &h, &h)
	cli.Reference(&r, p, cli.Program{Name: "later", Summary: "x", Config: &struct {
		X int `env:"T_X" help:"x"`
	}{}})
	return h.String(), r.String()
}

func TestCompareAgrees(t *testing.T) {
	help, ref := outputs(prog)
	if p := Compare(prog, help, ref); len(p) != 0 {
		t.Errorf("problems: %q\n%s\n%s", p, help, ref)
	}
}

// Each change to one output, as a renderer bug or a stale file would make it, is reported.
func TestCompareFindsDisagreement(t *testing.T) {
	help, ref := outputs(prog)
	for _, tc := range []struct {
		name      string
		help, ref string
		want      string
	}{
		{"stale default in the reference", help, strings.Replace(ref, "`10`", "`20`", 1), "reference row 1"},
		{"variable missing from the reference", help, strings.Replace(ref, "| `T_MODE` | unset | one of a, b | uses \\<mode\\> \\| both – or neither |\n", "", 1), "reference lacks T_MODE"},
		{"meaning cut in -help", strings.Replace(help, "or neither", "or", 1), ref, "-help row 2"},
		{"unset shown as empty in -help", strings.Replace(help, "(unset)", "       ", 1), ref, "-help row 2"},
		{"exit code missing from -help", strings.Replace(help, "2     bad\n", "", 1), ref, "-help exit codes"},
		{"exit meaning changed in the reference", help, strings.Replace(ref, "| 0 | fine |", "| 0 | ok |", 1), "reference exit codes"},
		{"no section", help, strings.Replace(ref, "## tool", "## tool2", 1), "no section ## tool"},
	} {
		p := Compare(prog, tc.help, tc.ref)
		if !strings.Contains(strings.Join(p, "\n"), tc.want) {
			t.Errorf("%s: problems %q, want one containing %q", tc.name, p, tc.want)
		}
	}
}
