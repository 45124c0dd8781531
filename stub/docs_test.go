package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podns/podns/internal/envconfig"
	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/config"
	"github.com/podns/podns/stub/panics"
	"github.com/podns/podns/stub/querylog"
	"github.com/podns/podns/stub/server"
	"github.com/podns/podns/stub/upstream"
)

// The README is the manual: a variable or metric that is not in it does not exist for users.
// These tests fail when code and README drift apart.

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestREADMEDocumentsEveryVariable(t *testing.T) {
	doc := readme(t)
	for _, f := range envconfig.Fields(&config.Config{}) {
		def := f.Default
		if def == "" {
			def = "unset"
		}
		row := regexp.MustCompile("(?m)^\\| `" + f.Name + "` \\| `?" + regexp.QuoteMeta(def) + "`? \\|")
		if !row.MatchString(doc) {
			t.Errorf("README has no table row for %s with default %q", f.Name, def)
		}
	}
}

func TestREADMEDocumentsEveryMetric(t *testing.T) {
	doc := readme(t)
	fq := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	own := []prometheus.Collector{buildInfo("", "")}
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
				if !strings.Contains(doc, "`"+m[1]) {
					t.Errorf("README does not document metric %s", m[1])
				}
			}
		}
	}
}
