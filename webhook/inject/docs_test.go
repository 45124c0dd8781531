package inject

import (
	"os"
	"strings"
	"testing"
)

// TestManualDocumentsMetrics: docs/manual.md names every metric of the webhook and every value of
// the warnings' reason label, so a user reading a dashboard finds what each means.
func TestManualDocumentsMetrics(t *testing.T) {
	b, err := os.ReadFile("../../docs/manual.md")
	if err != nil {
		t.Fatal(err)
	}
	manual := string(b)
	for _, name := range []string{
		"podns_webhook_admissions_total{mode,result}", "podns_webhook_warnings_total{reason}",
		"podns_webhook_admission_duration_seconds", "podns_build_info", "controller_runtime_webhook_",
	} {
		if !strings.Contains(manual, name) {
			t.Errorf("docs/manual.md does not name %s", name)
		}
	}
	for _, reason := range []string{ReasonNameClash, ReasonSysctl, ReasonPort, ReasonNameservers, ReasonSearchLimits,
		ReasonNoClusterDNS, ReasonAnnotation, ReasonDecode, ReasonUnknownField, ReasonModeLabel, ReasonInternal} {
		if !strings.Contains(manual, "`"+reason+"`") {
			t.Errorf("docs/manual.md does not explain the warning reason %s", reason)
		}
	}
}
