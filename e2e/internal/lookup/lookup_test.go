package lookup

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Result
		wantErr string
	}{
		{name: "empty", in: ""},
		{
			name: "ok and failure",
			in:   "0\tweb\t1000000000\t1005000000\tok\t10.96.1.10\n1\twww.example.test\t2000000000\t7000000000\tEAI_AGAIN\t-\n",
			want: []Result{
				{Seq: 0, Name: "web", Start: time.Unix(1, 0), End: time.Unix(1, 5000000), Status: "ok", Addrs: []string{"10.96.1.10"}},
				{Seq: 1, Name: "www.example.test", Start: time.Unix(2, 0), End: time.Unix(7, 0), Status: "EAI_AGAIN"},
			},
		},
		{
			name: "several addresses",
			in:   "3\tapi.example.test\t10\t20\tok\t192.0.2.11,192.0.2.12\n",
			want: []Result{{Seq: 3, Name: "api.example.test", Start: time.Unix(0, 10), End: time.Unix(0, 20), Status: "ok", Addrs: []string{"192.0.2.11", "192.0.2.12"}}},
		},
		{name: "short line", in: "0\tweb\t1\t2\tok\n", wantErr: "line 1: want 6"},
		{name: "bad number", in: "0\tweb\tx\t2\tok\t-\n", wantErr: "malformed"},
		{name: "end before start", in: "0\tweb\t5\t2\tok\t-\n", wantErr: "malformed"},
		{name: "empty status", in: "0\tweb\t1\t2\t\t-\n", wantErr: "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d results, want %d", len(got), len(tt.want))
			}
			for i := range got {
				g, w := got[i], tt.want[i]
				if g.Seq != w.Seq || g.Name != w.Name || !g.Start.Equal(w.Start) || !g.End.Equal(w.End) ||
					g.Status != w.Status || strings.Join(g.Addrs, ",") != strings.Join(w.Addrs, ",") {
					t.Errorf("result %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func res(name string, lat time.Duration, status string, addrs ...string) Result {
	return Result{Name: name, Start: time.Unix(100, 0), End: time.Unix(100, 0).Add(lat), Status: status, Addrs: addrs}
}

func TestSummarize(t *testing.T) {
	want := map[string][]string{"web": {"10.96.1.10"}, "ext": {"192.0.2.10", "2001:db8::10"}}
	results := []Result{
		res("web", 2*time.Millisecond, "ok", "10.96.1.10"),
		res("web", 5*time.Second, "ok", "10.96.1.10"),                    // slow but right
		res("ext", 1*time.Millisecond, "ok", "192.0.2.10"),               // AAAA missing: partial
		res("ext", 1*time.Millisecond, "ok", "192.0.2.10", "192.0.2.99"), // foreign address: wrong
		res("web", 1*time.Millisecond, "ok"),                             // no address: wrong
		res("ext", 3*time.Millisecond, "ok", "192.0.2.10", "2001:db8::10"),
		res("ext", 10*time.Second, "EAI_AGAIN"),            // failed, slow
		res("other", 4*time.Millisecond, "ok", "10.0.0.1"), // not a served name: wrong
		res("web", time.Second, "ok", "10.96.1.10"),        // exactly 1 s is not over
	}
	s := Summarize(results, want)
	if s.Lookups != 9 || s.Failures != 1 || s.Partial != 1 || s.Wrong != 3 || s.Over1s != 2 {
		t.Errorf("lookups %d failures %d partial %d wrong %d over1s %d; want 9 1 1 3 2", s.Lookups, s.Failures, s.Partial, s.Wrong, s.Over1s)
	}
	if s.P50 != 3*time.Millisecond || s.P99 != 10*time.Second || s.Max != 10*time.Second {
		t.Errorf("p50 %v p99 %v max %v; want 3ms 10s 10s", s.P50, s.P99, s.Max)
	}
	if len(s.WrongExamples) != 4 {
		t.Errorf("wrong examples %v, want 4", s.WrongExamples)
	}
}

func TestPercentile(t *testing.T) {
	var hundred []time.Duration
	for i := 1; i <= 100; i++ {
		hundred = append(hundred, time.Duration(i))
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", []time.Duration{7}, 99, 7},
		{"p50 of 100", hundred, 50, 50},
		{"p99 of 100", hundred, 99, 99},
		{"p100", hundred, 100, 100},
		{"p0 is the minimum", hundred, 0, 1},
		{"p99 of 1000 picks the 990th", func() []time.Duration {
			var d []time.Duration
			for i := 1; i <= 1000; i++ {
				d = append(d, time.Duration(i))
			}
			return d
		}(), 99, 990},
	}
	for _, tt := range tests {
		if got := Percentile(tt.sorted, tt.p); got != tt.want {
			t.Errorf("%s: Percentile(p%v) = %v, want %v", tt.name, tt.p, got, tt.want)
		}
	}
}

func TestOptionsArgs(t *testing.T) {
	tests := []struct {
		o    Options
		want string
	}{
		{Options{Lookups: 10, Names: []string{"a", "b"}}, "-t 32 -n 10 a b"},
		{Options{Threads: 4, Duration: 1500 * time.Millisecond, Lookups: 10, Names: []string{"a"}}, "-t 4 -d 1500 a"},
		{Options{Threads: 64, Lookups: 1000, Rate: 100, Names: []string{"a"}}, "-t 64 -n 1000 -r 100 a"},
	}
	for _, tt := range tests {
		if got := strings.Join(tt.o.Args(), " "); got != tt.want {
			t.Errorf("%+v.Args() = %q, want %q", tt.o, got, tt.want)
		}
	}
}

// FuzzParse: any input either parses into one result per line, each with End >= Start, or is
// rejected with an error; it never panics.
func FuzzParse(f *testing.F) {
	f.Add("0\tweb\t1000000000\t1005000000\tok\t10.96.1.10\n")
	f.Add("1\twww.example.test\t2\t7\tEAI_AGAIN\t-\n3\tapi\t10\t20\tok\t192.0.2.11,192.0.2.12\n")
	f.Add("0\tweb\t1\t2\tok\n")
	f.Add("\t\t\t\t\t\n")
	f.Fuzz(func(t *testing.T, in string) {
		res, err := Parse(strings.NewReader(in))
		if err != nil {
			return
		}
		lines := strings.Count(strings.TrimSuffix(in, "\n"), "\n") + 1
		if in == "" {
			lines = 0
		}
		if len(res) != lines {
			t.Fatalf("%d results from %d lines", len(res), lines)
		}
		for _, r := range res {
			if r.End.Before(r.Start) || r.Status == "" {
				t.Fatalf("accepted %+v", r)
			}
		}
	})
}
