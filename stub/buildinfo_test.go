package main

import (
	"runtime"
	"testing"

	"github.com/podns/podns/internal/version"
)

// The stub's registry carries podns_build_info with the stamped version and the Go version, value
// 1. (monitoring/ checks the same on a binary stamped with -ldflags -X.)
func TestRegistryExposesBuildInfo(t *testing.T) {
	mfs, err := registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "podns_build_info" {
			continue
		}
		if len(mf.Metric) != 1 {
			t.Fatalf("%d series, want 1", len(mf.Metric))
		}
		m := mf.Metric[0]
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		want := map[string]string{"version": version.Version, "goversion": runtime.Version()}
		if len(labels) != len(want) || labels["version"] != want["version"] || labels["goversion"] != want["goversion"] {
			t.Errorf("labels %v, want %v", labels, want)
		}
		if v := m.GetGauge().GetValue(); v != 1 {
			t.Errorf("value %v, want 1", v)
		}
		return
	}
	t.Fatal("podns_build_info not exposed")
}
