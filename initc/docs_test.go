package main

import (
	"bytes"
	"os"
	"testing"

	"github.com/podns/podns/initc/config"
	"github.com/podns/podns/internal/cli/clitest"
)

// TestHelpAndReferenceAgree: `initc -help` and docs/configuration.md list every variable of
// config.Config with its default, allowed values and meaning, and initc's exit codes, exactly as
// the tags and config.Program state them.
func TestHelpAndReferenceAgree(t *testing.T) {
	var help, errb bytes.Buffer
	if code := run([]string{"-help"}, map[string]string{}, &help, &errb); code != exitOK {
		t.Fatalf("-help: exit %d: %s", code, errb.String())
	}
	ref, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatalf("%v (run `make docs`)", err)
	}
	for _, p := range clitest.Compare(config.Program, help.String(), string(ref)) {
		t.Error(p, "(run `make docs` if the reference is stale)")
	}
}
