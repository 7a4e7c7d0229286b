// Command importcheck enforces jisr's import rules (rules.txt beside it):
// it lists every package of every module in the workspace's go.work with
// `go list -deps -json`, checks each jisr package's imports — those of its
// test files included — against the rules, and fails naming the file and the
// import that breaks one. It also fails when docs/ARCHITECTURE.md no longer
// quotes the rules as they are.
//
// Usage, from the repository root (`make lint-imports` does this):
//
//	cd tools/importcheck && GOWORK=off go run . -root ../..
//
// Invariant: a jisr package with no may-import rule is an error, so a new
// package cannot slip past the rules unseen.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	root := flag.String("root", ".", "the repository root (holds go.work)")
	rules := flag.String("rules", "", "the rules file (default <root>/tools/importcheck/rules.txt)")
	doc := flag.String("doc", "", "a document that must quote the rules file verbatim (default <root>/docs/ARCHITECTURE.md; \"-\" for none)")
	prefix := flag.String("prefix", "github.com/jisr-bus/jisr/", "the import path prefix of jisr's packages")
	flag.Parse()
	if *rules == "" {
		*rules = filepath.Join(*root, "tools", "importcheck", "rules.txt")
	}
	if *doc == "" {
		*doc = filepath.Join(*root, "docs", "ARCHITECTURE.md")
	}
	problems, err := run(*root, *rules, *doc, *prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, "importcheck:", err)
		os.Exit(2)
	}
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, p)
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "importcheck: %d import rule violation(s); the rules are in %s\n", len(problems), *rules)
		os.Exit(1)
	}
}

// run checks the workspace under root and returns one line per violation.
func run(root, rulesFile, doc, prefix string) ([]string, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	src, err := os.ReadFile(rulesFile)
	if err != nil {
		return nil, err
	}
	rs, err := parseRules(string(src))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rulesFile, err)
	}
	var problems []string
	if doc != "-" {
		if p := checkQuoted(doc, string(src)); p != "" {
			problems = append(problems, p)
		}
	}
	pkgs, err := listWorkspace(root, prefix)
	if err != nil {
		return nil, err
	}
	return append(problems, rs.check(pkgs, root)...), nil
}
