package main

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strings"
)

// A verb says what a rule does with the imports its objects match.
type verb string

const (
	mayImport                 verb = "may-import"
	mustNotImport             verb = "must-not-import"
	mustNotImportOutsideTests verb = "must-not-import-outside-tests"
)

// A rule is one line of the rules file.
type rule struct {
	line     int
	subjects []string // the packages it applies to
	verb     verb
	objects  []string // the packages it allows (may-import) or forbids
}

func (r rule) String() string {
	return fmt.Sprintf("%s %s %s (rules.txt:%d)", strings.Join(r.subjects, " "), r.verb, strings.Join(r.objects, " "), r.line)
}

type rules []rule

// parseRules reads the rules file: one rule a line, "#" starts a comment.
func parseRules(src string) (rules, error) {
	var rs rules
	sc := bufio.NewScanner(strings.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		i := slices.IndexFunc(f, func(s string) bool {
			switch verb(s) {
			case mayImport, mustNotImport, mustNotImportOutsideTests:
				return true
			}
			return false
		})
		if i <= 0 || i == len(f)-1 {
			return nil, fmt.Errorf("line %d: want <packages> %s|%s|%s <packages>", n, mayImport, mustNotImport, mustNotImportOutsideTests)
		}
		for _, p := range append(slices.Clone(f[:i]), f[i+1:]...) {
			if p != "..." && (strings.Contains(strings.TrimSuffix(p, "/..."), "...") || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/")) {
				return nil, fmt.Errorf("line %d: bad package pattern %q (a path, path/... or ...)", n, p)
			}
		}
		rs = append(rs, rule{line: n, subjects: f[:i], verb: verb(f[i]), objects: f[i+1:]})
	}
	return rs, sc.Err()
}

// match reports whether pattern matches the package path p (relative to the
// prefix) and how specific the match is (longer is more specific; an exact
// path beats path/... of the same path).
func match(pattern, p string) (bool, int) {
	if pattern == "..." {
		return true, 0
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		if p == base || strings.HasPrefix(p, base+"/") {
			return true, 2 * len(base)
		}
		return false, 0
	}
	return pattern == p, 2*len(pattern) + 1
}

func matchAny(patterns []string, p string) bool {
	for _, pat := range patterns {
		if ok, _ := match(pat, p); ok {
			return true
		}
	}
	return false
}

// allowRule returns the most specific may-import rule for package p.
func (rs rules) allowRule(p string) (rule, bool) {
	var best rule
	bestScore, found := -1, false
	for _, r := range rs {
		if r.verb != mayImport {
			continue
		}
		for _, s := range r.subjects {
			if ok, score := match(s, p); ok && score > bestScore {
				best, bestScore, found = r, score, true
			}
		}
	}
	return best, found
}

// An edge is one import of one jisr package by another, paths relative.
type edge struct {
	from, to string
	test     bool   // the import is in a _test.go file only
	file     string // the file that has the import, relative to the root
}

// violations returns why e breaks the rules; none when it keeps them.
func (rs rules) violations(e edge) []string {
	if e.from == e.to {
		return nil // an external test package importing its own package
	}
	var out []string
	where := e.file
	if where == "" {
		where = e.from
	}
	if a, ok := rs.allowRule(e.from); ok && !matchAny(a.objects, e.to) {
		out = append(out, fmt.Sprintf("%s imports %s: not allowed by %s", where, e.to, a))
	}
	for _, r := range rs {
		if r.verb == mayImport || r.verb == mustNotImportOutsideTests && e.test {
			continue
		}
		if matchAny(r.subjects, e.from) && matchAny(r.objects, e.to) {
			out = append(out, fmt.Sprintf("%s imports %s: forbidden by %s", where, e.to, r))
		}
	}
	return out
}

// checkQuoted says what is wrong when doc does not quote the rules verbatim.
func checkQuoted(doc, src string) string {
	b, err := os.ReadFile(doc)
	if err != nil {
		return fmt.Sprintf("%s: %v (it must quote the import rules)", doc, err)
	}
	if !strings.Contains(string(b), strings.TrimSpace(src)) {
		return fmt.Sprintf("%s does not quote tools/importcheck/rules.txt as it is: copy the file into its import rules section", doc)
	}
	return ""
}
