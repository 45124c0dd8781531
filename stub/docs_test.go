package main

import (
	"bytes"
	"context"
	"github.com/podns/podns/internal/buildinfo"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	initcconfig "github.com/podns/podns/initc/config"
	"github.com/podns/podns/internal/cli/clitest"
	"github.com/podns/podns/internal/envconfig"
	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/config"
	"github.com/podns/podns/stub/panics"
	"github.com/podns/podns/stub/querylog"
	"github.com/podns/podns/stub/server"
	"github.com/podns/podns/stub/upstream"
	webhookconfig "github.com/podns/podns/webhook/config"
)

// docs/manual.md and docs/configuration.md are the manual: a variable or metric that is not in
// them does not exist for users. These tests fail when code and docs drift apart.

func manual(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../docs/manual.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestHelpAndReferenceAgree: `stub -help` and docs/configuration.md list every variable of
// config.Config with its default, allowed values and meaning, and the stub's exit codes, exactly
// as the tags and config.Program state them. (internal/cli/docgen's test keeps the file current;
// this one checks what the binary prints.)
func TestHelpAndReferenceAgree(t *testing.T) {
	var help bytes.Buffer
	if code := run(context.Background(), []string{"-help"}, map[string]string{}, &help, io.Discard); code != exitOK {
		t.Fatalf("-help: exit %d", code)
	}
	ref, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatalf("%v (run `make docs`)", err)
	}
	for _, p := range clitest.Compare(config.Program, help.String(), string(ref)) {
		t.Error(p, "(run `make docs` if the reference is stale)")
	}
}

// TestManualDocumentsEveryMetric: every metric the stub registers has its row in the metrics table
// of docs/manual.md ("Metrics and probes"), not only a mention somewhere in the text.
func TestManualDocumentsEveryMetric(t *testing.T) {
	doc := manual(t)
	fq := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	own := []prometheus.Collector{buildinfo.Collector()}
	for _, cs := range [][]prometheus.Collector{own, server.Collectors(), cache.Collectors(), upstream.Collectors(), panics.Collectors(), querylog.Collectors()} {
		for _, c := range cs {
			ch := make(chan *prometheus.Desc, 16)
			c.Describe(ch)
			close(ch)
			for d := range ch {
				m := fq.FindStringSubmatch(d.String())
				if m == nil {
					t.Fatalf("cannot read the name of %s", d)
				}
				if !strings.Contains(doc, "\n| `"+m[1]+"` |") {
					t.Errorf("docs/manual.md has no row for metric %s in its metrics table", m[1])
				}
			}
		}
	}
}

// The README's Configuration section names every variable of the three binaries, so that a reader of
// the front page (and a grep of it) finds each one; the reference gives their meaning.
func TestREADMENamesEveryVariable(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(b), "\n## Configuration\n")
	section, _, _ = strings.Cut(section, "\n## ")
	for _, cfg := range []any{&config.Config{}, &initcconfig.Config{}, &webhookconfig.Config{}} {
		for _, f := range envconfig.Fields(cfg) {
			if !strings.Contains(section, "`"+f.Name+"`") {
				t.Errorf("README's Configuration section does not name %s", f.Name)
			}
		}
	}
}

// TestCommandsListedAreDispatched: the subcommands -help and docs/configuration.md list
// (config.Program.Commands) are exactly the ones run dispatches, -wait-ready included, so the
// reference cannot list a command that does not exist or miss one that does.
func TestCommandsListedAreDispatched(t *testing.T) {
	listed := map[string]bool{}
	for _, c := range config.Program.Commands {
		name, _, _ := strings.Cut(c.Usage, " ")
		listed[name] = true
		if _, ok := subcommands[name]; !ok && name != waitReadyArg {
			t.Errorf("config.Program lists %q, which run does not dispatch", name)
		}
	}
	for name := range subcommands {
		if !listed[name] {
			t.Errorf("subcommand %q is not in config.Program.Commands (-help, docs/configuration.md)", name)
		}
	}
	if !listed[waitReadyArg] {
		t.Errorf("%s is not in config.Program.Commands", waitReadyArg)
	}
}
