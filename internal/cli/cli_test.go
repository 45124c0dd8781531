package cli

import (
	"bytes"
	"errors"
	"testing"

	"github.com/podns/podns/internal/version"
)

type cfg struct {
	Size int `env:"T_SIZE" envDefault:"10" min:"1" max:"100" help:"entries"`
}

var prog = Program{Name: "tool", Summary: "does things", Config: &cfg{}, Exits: []Exit{{ExitOK, "fine"}, {ExitConfig, "bad | worse"}},
	Commands: []Command{{"show [NAME]", "shows NAME"}, {"-wait", "waits | ends"}}, CommandsIntro: "Commands, in a pod", Footer: "More: none."}

func TestArgs(t *testing.T) {
	for _, tt := range []struct {
		args           []string
		exit           int
		done           bool
		stdout, stderr string
	}{
		{args: nil, exit: ExitOK, done: false},
		{args: []string{"-version"}, exit: ExitOK, done: true, stdout: version.Version + "\n"},
		{args: []string{"--version"}, exit: ExitOK, done: true, stdout: version.Version + "\n"},
		{args: []string{"-x"}, exit: ExitConfig, done: true,
			stderr: "tool: unknown argument \"-x\" (configuration is by PODNS_* environment variables; see -help)\n"},
		{args: []string{"-version", "extra"}, exit: ExitOK, done: true, stdout: version.Version + "\n"},
	} {
		var out, errOut bytes.Buffer
		exit, done := prog.Args(tt.args, &out, &errOut)
		if exit != tt.exit || done != tt.done || out.String() != tt.stdout || errOut.String() != tt.stderr {
			t.Errorf("%q: exit %d done %v stdout %q stderr %q", tt.args, exit, done, out.String(), errOut.String())
		}
	}
}

func TestHelp(t *testing.T) {
	for _, a := range []string{"-h", "-help", "--help"} {
		var out, errOut bytes.Buffer
		if exit, done := prog.Args([]string{a}, &out, &errOut); exit != ExitOK || !done || errOut.Len() != 0 {
			t.Fatalf("%s: exit %d done %v stderr %q", a, exit, done, errOut.String())
		}
		want := "tool " + version.Version + ": does things. Configured by environment:\n\n" +
			"VARIABLE  DEFAULT  ALLOWED   MEANING\n" +
			"T_SIZE    10       1 to 100  entries\n" +
			"\nEXIT  MEANING\n" +
			"0     fine\n" +
			"2     bad | worse\n" +
			"\nCommands, in a pod:\n" +
			"  show [NAME]  shows NAME\n" +
			"  -wait        waits | ends\n" +
			"\nMore: none.\n"
		if out.String() != want {
			t.Errorf("%s:\n%q\nwant\n%q", a, out.String(), want)
		}
	}
}

func TestBadConfig(t *testing.T) {
	var errOut bytes.Buffer
	if exit := prog.BadConfig(&errOut, errors.New("A=1: bad\nB=2: bad")); exit != ExitConfig {
		t.Errorf("exit %d", exit)
	}
	if want := "tool: invalid configuration:\nA=1: bad\nB=2: bad\n"; errOut.String() != want {
		t.Errorf("stderr %q, want %q", errOut.String(), want)
	}
}

func TestReference(t *testing.T) {
	type cfg2 struct {
		Mode string "env:\"T_MODE\" oneof:\"a b\" help:\"uses <mode> *now* | later, see `x`\""
	}
	var b bytes.Buffer
	Reference(&b, prog, Program{Name: "other", Summary: "other things", Config: &cfg2{}})
	want := ReferenceHeader + "\n" +
		"- [tool](#tool): does things\n" +
		"- [other](#other): other things\n" +
		"\n## tool\n\ntool: does things. `tool -help` prints these tables.\n\n" +
		"| variable | default | allowed | meaning |\n|---|---|---|---|\n" +
		"| `T_SIZE` | `10` | 1 to 100 | entries |\n" +
		"\nExit codes of tool:\n\n| exit | meaning |\n|---|---|\n| 0 | fine |\n| 2 | bad \\| worse |\n" +
		// The commands -help lists, from the same Program.
		"\nCommands, in a pod:\n\n| command | meaning |\n|---|---|\n| `tool show [NAME]` | shows NAME |\n| `tool -wait` | waits \\| ends |\n" +
		"\n## other\n\nother: other things. `other -help` prints these tables.\n\n" +
		"| variable | default | allowed | meaning |\n|---|---|---|---|\n" +
		"| `T_MODE` | unset | one of a, b | uses \\<mode\\> \\*now\\* \\| later, see \\`x\\` |\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
