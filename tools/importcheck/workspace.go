package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// pkg is what importcheck needs of `go list -json`'s answer.
type pkg struct {
	ImportPath   string
	Dir          string
	GoFiles      []string
	CgoFiles     []string
	TestGoFiles  []string
	XTestGoFiles []string
	Imports      []string
	TestImports  []string
	XTestImports []string
	Error        *struct{ Err string }
}

// listWorkspace lists, with `go list -e -deps -json ./...` in each module
// that go.work uses, every jisr package (import path under prefix) and
// returns its imports as edges between paths relative to prefix.
func listWorkspace(root, prefix string) ([]listed, error) {
	out, err := goCmd(root, "work", "edit", "-json")
	if err != nil {
		return nil, err
	}
	var work struct{ Use []struct{ DiskPath string } }
	if err := json.Unmarshal(out, &work); err != nil {
		return nil, fmt.Errorf("go work edit -json: %w", err)
	}
	if len(work.Use) == 0 {
		return nil, errors.New("go.work uses no module")
	}
	seen := map[string]bool{}
	var all []listed
	for _, u := range work.Use {
		out, err := goCmd(filepath.Join(root, u.DiskPath), "list", "-e", "-deps", "-json", "./...")
		if err != nil {
			return nil, err
		}
		dec := json.NewDecoder(bytes.NewReader(out))
		for {
			var p pkg
			if err := dec.Decode(&p); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return nil, fmt.Errorf("go list in %s: %w", u.DiskPath, err)
			}
			rel, ok := strings.CutPrefix(p.ImportPath, prefix)
			if !ok || seen[rel] {
				continue
			}
			seen[rel] = true
			all = append(all, listed{rel: rel, pkg: p})
		}
	}
	slices.SortFunc(all, func(a, b listed) int { return strings.Compare(a.rel, b.rel) })
	for i := range all {
		all[i].edges = edgesOf(all[i], root, prefix)
	}
	return all, nil
}

type listed struct {
	rel   string
	pkg   pkg
	edges []edge
}

// edgesOf returns p's imports of jisr packages, each with the file that has it.
func edgesOf(l listed, root, prefix string) []edge {
	p := l.pkg
	var out []edge
	add := func(imports, files []string, test bool) {
		for _, imp := range imports {
			to, ok := strings.CutPrefix(imp, prefix)
			if !ok {
				continue
			}
			if test && slices.Contains(p.Imports, imp) {
				continue // reported once, as the code's
			}
			out = append(out, edge{from: l.rel, to: to, test: test, file: fileImporting(p.Dir, files, imp, root)})
		}
	}
	add(p.Imports, append(slices.Clone(p.GoFiles), p.CgoFiles...), false)
	add(p.TestImports, p.TestGoFiles, true)
	add(p.XTestImports, p.XTestGoFiles, true)
	return out
}

// fileImporting returns the first of files (in dir) that imports path,
// relative to root; "" when none can be read.
func fileImporting(dir string, files []string, path, root string) string {
	fset := token.NewFileSet()
	for _, f := range files {
		name := filepath.Join(dir, f)
		af, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			continue
		}
		for _, is := range af.Imports {
			if v, _ := strconv.Unquote(is.Path.Value); v == path {
				if rel, err := filepath.Rel(root, name); err == nil {
					return fmt.Sprintf("%s:%d", filepath.ToSlash(rel), fset.Position(is.Pos()).Line)
				}
				return name
			}
		}
	}
	return ""
}

// goCmd runs the go command in dir inside the workspace (whatever GOWORK
// this process was started with) and returns its standard output.
func goCmd(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOWORK=") })
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s in %s: %w\n%s", strings.Join(args, " "), dir, err, stderr.Bytes())
	}
	return out, nil
}

// check returns every violation of the rules by the listed packages.
func (rs rules) check(pkgs []listed, root string) []string {
	var out []string
	for _, l := range pkgs {
		if l.pkg.Error != nil {
			out = append(out, fmt.Sprintf("%s: %s", l.rel, strings.TrimSpace(l.pkg.Error.Err)))
		}
		if _, ok := rs.allowRule(l.rel); !ok {
			out = append(out, fmt.Sprintf("%s: no may-import rule covers this package: add one to tools/importcheck/rules.txt", l.rel))
			continue
		}
		for _, e := range l.edges {
			out = append(out, rs.violations(e)...)
		}
	}
	return out
}
