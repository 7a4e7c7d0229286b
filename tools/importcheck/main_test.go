package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// write creates the files (path → content) under dir.
func write(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const miniRules = `# layers
bus/...      may-import bus/...
gateway/...  may-import gateway/... bus/...
bus/... must-not-import-outside-tests bus/bustest
`

// workspace writes a two-module go.work workspace shaped like jisr's, with
// the given extra files, and returns its root.
func workspace(t *testing.T, extra map[string]string) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"go.work":                           "go 1.26.0\n\nuse (\n\t./bus\n\t./gateway\n)\n",
		"bus/go.mod":                        "module github.com/jisr-bus/jisr/bus\n\ngo 1.26.0\n",
		"bus/ckey/ckey.go":                  "package ckey\n\nfunc Of(s string) string { return s }\n",
		"bus/bustest/bustest.go":            "package bustest\n\nconst Name = \"x\"\n",
		"gateway/go.mod":                    "module github.com/jisr-bus/jisr/gateway\n\ngo 1.26.0\n",
		"gateway/minimise/minimise.go":      "package minimise\n\nimport \"github.com/jisr-bus/jisr/bus/ckey\"\n\nvar K = ckey.Of(\"a\")\n",
		"tools/importcheck/rules.txt":       miniRules,
		"docs/ARCHITECTURE.md":              "# doc\n\n```\n" + miniRules + "```\n",
		"bus/ckey/ckey_internal_test.go":    "package ckey\n\nimport (\n\t\"testing\"\n\n\t\"github.com/jisr-bus/jisr/bus/bustest\"\n)\n\nfunc TestX(t *testing.T) { _ = bustest.Name }\n",
		"gateway/minimise/doc.go":           "// Package minimise is a test fixture.\npackage minimise\n",
		"gateway/minimise/minimise_test.go": "package minimise_test\n\nimport (\n\t\"testing\"\n\n\t\"github.com/jisr-bus/jisr/gateway/minimise\"\n)\n\nfunc TestK(t *testing.T) { _ = minimise.K }\n",
	}
	for k, v := range extra {
		files[k] = v
	}
	write(t, root, files)
	return root
}

func check(t *testing.T, root string) []string {
	t.Helper()
	problems, err := run(root, filepath.Join(root, "tools/importcheck/rules.txt"), filepath.Join(root, "docs/ARCHITECTURE.md"), "github.com/jisr-bus/jisr/")
	if err != nil {
		t.Fatal(err)
	}
	return problems
}

func TestAWorkspaceThatKeepsTheRulesPasses(t *testing.T) {
	if p := check(t, workspace(t, nil)); len(p) != 0 {
		t.Fatalf("violations in a workspace that keeps the rules: %q", p)
	}
}

// The check fails, naming the file, the import and the rule, for every way
// of breaking a rule.
func TestForbiddenImportsFail(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"a lower layer imports a higher one", map[string]string{
			"bus/ckey/leak.go": "package ckey\n\nimport _ \"github.com/jisr-bus/jisr/gateway/minimise\"\n",
		}, "bus/ckey/leak.go:3 imports gateway/minimise: not allowed by bus/... may-import bus/..."},
		{"only a test file imports it", map[string]string{
			"bus/ckey/leak_test.go": "package ckey_test\n\nimport _ \"github.com/jisr-bus/jisr/gateway/minimise\"\n",
		}, "bus/ckey/leak_test.go:3 imports gateway/minimise: not allowed by bus/..."},
		{"library code imports a test harness", map[string]string{
			"bus/ckey/harness.go": "package ckey\n\nimport _ \"github.com/jisr-bus/jisr/bus/bustest\"\n",
		}, "bus/ckey/harness.go:3 imports bus/bustest: forbidden by bus/... must-not-import-outside-tests bus/bustest"},
		{"a package no rule covers", map[string]string{
			"go.work":        "go 1.26.0\n\nuse (\n\t./bus\n\t./gateway\n\t./extra\n)\n",
			"extra/go.mod":   "module github.com/jisr-bus/jisr/extra\n\ngo 1.26.0\n",
			"extra/extra.go": "package extra\n",
		}, "extra: no may-import rule covers this package"},
		{"the architecture no longer quotes the rules", map[string]string{
			"docs/ARCHITECTURE.md": "# doc\n\nbus may import anything\n",
		}, "ARCHITECTURE.md does not quote tools/importcheck/rules.txt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := check(t, workspace(t, tc.files))
			if !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Fatalf("violations %q, want one containing %q", p, tc.want)
			}
		})
	}
}

func TestMostSpecificAllowRuleApplies(t *testing.T) {
	rs, err := parseRules("a/... may-import a/... b/...\na/x may-import b/y\n")
	if err != nil {
		t.Fatal(err)
	}
	if v := rs.violations(edge{from: "a/x", to: "b/z"}); len(v) != 1 {
		t.Fatalf("a/x → b/z: %q, want a violation of the a/x rule", v)
	}
	for _, e := range []edge{{from: "a/x", to: "b/y"}, {from: "a/w", to: "b/z"}, {from: "a", to: "a/w"}} {
		if v := rs.violations(e); len(v) != 0 {
			t.Fatalf("%v: %q", e, v)
		}
	}
}

func TestBadRulesAreRefused(t *testing.T) {
	for _, src := range []string{"a may-import", "may-import a", "a imports b", "a/.../b may-import c", "a/ may-import b"} {
		if _, err := parseRules(src); err == nil {
			t.Errorf("%q accepted", src)
		}
	}
}

// jisr's own rules parse and cover its layers.
func TestJisrRulesParse(t *testing.T) {
	b, err := os.ReadFile("rules.txt")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := parseRules(string(b))
	if err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{"bus/ckey": "gateway/minimise", "services/adapter": "gateway", "proto/eidfield": "bus/subject", "certs/svid": "bus"} {
		if len(rs.violations(edge{from: from, to: to})) == 0 {
			t.Errorf("%s → %s is allowed", from, to)
		}
	}
}
