package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

func TestBadSwitchExits2NamingVariableAndWords(t *testing.T) {
	var errOut bytes.Buffer
	code := run(context.Background(), nil, map[string]string{"PODNS_COALESCE": "yes", "PODNS_SERVE_STALE": "2000h"}, io.Discard, &errOut)
	if code != exitConfig {
		t.Fatalf("exit %d, want %d", code, exitConfig)
	}
	for _, want := range []string{
		`PODNS_COALESCE="yes": not on or off (allowed: one of on, off)`,
		`PODNS_SERVE_STALE="2000h": not off or a duration (allowed: off or 1s to 168h)`,
	} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut.String())
		}
	}
}

func TestHelpShowsSwitchWords(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"-help"}, map[string]string{}, &out, io.Discard); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, line := range strings.Split(out.String(), "\n") {
		for _, v := range []string{"PODNS_COALESCE ", "PODNS_ORDER_SAME_ID ", "PODNS_PREFETCH ", "PODNS_SEARCH_PREFETCH "} {
			if strings.HasPrefix(line, v) && !(strings.Contains(line, " on ") && strings.Contains(line, "one of on, off")) {
				t.Errorf("-help line %q lacks default on and the words on, off", line)
			}
		}
	}
}
