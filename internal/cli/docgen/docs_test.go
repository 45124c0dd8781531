package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const root = "../../.."

// TestReferenceIsCurrent: docs/configuration.md is what docgen writes now. A variable added to a
// Config struct, or a tag or exit code changed, without regenerating fails here.
func TestReferenceIsCurrent(t *testing.T) {
	committed, err := os.ReadFile(filepath.Join(root, "docs/configuration.md"))
	if err != nil {
		t.Fatalf("%v (run `make docs`)", err)
	}
	if got := Generate(); !bytes.Equal(committed, got) {
		line, was, now := firstDiff(committed, got)
		t.Errorf("docs/configuration.md is stale: run `make docs` and commit it. First difference at line %d:\ncommitted: %q\ngenerated: %q",
			line, was, now)
	}
}

func firstDiff(a, b []byte) (int, string, string) {
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := 0; i < max(len(al), len(bl)); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y || i >= len(al) || i >= len(bl) {
			return i + 1, x, y
		}
	}
	return 0, "", ""
}

func TestWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "configuration.md")
	if err := write(path, nil); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, Generate()) {
		t.Errorf("written file differs from Generate (err %v)", err)
	}
	var out bytes.Buffer
	if err := write("", &out); err != nil || !bytes.Equal(out.Bytes(), Generate()) {
		t.Errorf("stdout differs from Generate (err %v)", err)
	}
}

var (
	fence      = regexp.MustCompile("(?ms)^\\s*```.*?^\\s*```")
	codeSpan   = regexp.MustCompile("`[^`\n]*`")
	inlineLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	heading    = regexp.MustCompile(`(?m)^#{1,6} +(.+?)\s*#*\s*$`)
	htmlAnchor = regexp.MustCompile(`<a (?:id|name)="([^"]+)"`)
	notSlug    = regexp.MustCompile(`[^\p{L}\p{N}\- _]`)
)

// anchors returns the fragment ids GitHub gives the headings of a Markdown file: lower case,
// punctuation dropped, spaces to hyphens, "-1", "-2", ... for repeats; plus explicit <a id>s.
func anchors(md string) map[string]bool {
	md = fence.ReplaceAllString(md, "")
	out := map[string]bool{}
	seen := map[string]int{}
	for _, m := range heading.FindAllStringSubmatch(md, -1) {
		slug := strings.ReplaceAll(notSlug.ReplaceAllString(strings.ToLower(m[1]), ""), " ", "-")
		if n := seen[slug]; n > 0 {
			out[slug+"-"+strconv.Itoa(n)] = true
		} else {
			out[slug] = true
		}
		seen[slug]++
	}
	for _, m := range htmlAnchor.FindAllStringSubmatch(md, -1) {
		out[m[1]] = true
	}
	return out
}

// TestRelativeLinksResolve: every relative link of the repository's Markdown files (the root
// README, docs/*.md, the READMEs of e2e/, injector-manifests/, monitoring/ and images/) names a file or directory of the repository, and its #fragment a heading of the Markdown file it
// points into, so moving a section or a file cannot leave a dead link behind.
func TestRelativeLinksResolve(t *testing.T) {
	files := markdownFiles(t)
	cache := map[string]map[string]bool{}
	ids := func(path string) map[string]bool {
		if a, ok := cache[path]; ok {
			return a
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		cache[path] = anchors(string(b))
		return cache[path]
	}
	links := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := codeSpan.ReplaceAllString(fence.ReplaceAllString(string(b), ""), "")
		rel, _ := filepath.Rel(root, f)
		for _, m := range inlineLink.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			links++
			path, frag, _ := strings.Cut(target, "#")
			dest := f
			if path != "" {
				dest = filepath.Join(filepath.Dir(f), path)
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s: link %q: no such file", rel, target)
					continue
				}
			}
			if frag == "" {
				continue
			}
			if !strings.HasSuffix(dest, ".md") {
				t.Errorf("%s: link %q: a fragment into a file that is not Markdown", rel, target)
				continue
			}
			if !ids(dest)[frag] {
				t.Errorf("%s: link %q: no heading with that anchor", rel, target)
			}
		}
	}
	if links == 0 {
		t.Fatal("found no relative links: the link pattern is broken")
	}
}

func TestAnchors(t *testing.T) {
	a := anchors("# Title\n## Search-path prefetch (ndots:5)\n### The pod's DNS path, simulated (`e2e/`)\n## stub\n## stub\n```\n# not a heading\n```\n<a id=\"x\"></a>\n")
	for _, want := range []string{"title", "search-path-prefetch-ndots5", "the-pods-dns-path-simulated-e2e", "stub", "stub-1", "x"} {
		if !a[want] {
			t.Errorf("no anchor %q in %v", want, a)
		}
	}
	if a["not-a-heading"] {
		t.Error("a line in a code block counted as a heading")
	}
}

// markdownFiles returns the repository's Markdown files, skipping hidden directories (.tools,
// .git) and build output.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "bin" || strings.HasSuffix(d.Name(), "-results")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".md") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
