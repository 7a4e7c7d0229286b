package decision_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// reasonConst is one `Reason… = "UPPER_SNAKE"` constant of the repository.
type reasonConst struct {
	name, value, pos string
	pkgDir           string
}

var reasonValue = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// TestEveryReasonIsProducedAndDocumented walks every Go file of the
// repository (every module; tests and generated code left out), finds every
// constant named Reason… whose value is an ErrorInfo reason, and checks
//
//   - that non-test code other than its declaration uses it (a refusal that
//     no path can give is a reason to delete, not to document), and
//   - that docs/errors.md has a row for it: "| `REASON` | code | who |
//     meaning | what to do | retry? |".
//
// It also refuses a row of docs/errors.md that no constant backs. Whoever
// adds a reason adds its row; the failure names the reason and its
// constant.
func TestEveryReasonIsProducedAndDocumented(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var consts []reasonConst
	uses := map[string]int{} // identifier name → uses outside declarations
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "gen", "var", "node_modules", "bin", "testdata", "examples":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		declared := map[*ast.Ident]bool{}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if !strings.HasPrefix(n.Name, "Reason") || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil || !reasonValue.MatchString(v) {
						continue
					}
					declared[n] = true
					rel, _ := filepath.Rel(root, path)
					consts = append(consts, reasonConst{name: n.Name, value: v, pos: rel + ":" + strconv.Itoa(fset.Position(n.Pos()).Line), pkgDir: filepath.Dir(rel)})
				}
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if id, ok := n.(*ast.Ident); ok && strings.HasPrefix(id.Name, "Reason") && !declared[id] {
				uses[id.Name]++
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(consts) < 40 {
		t.Fatalf("found only %d reason constants: the walk is broken", len(consts))
	}

	doc, err := os.ReadFile(filepath.Join(root, "docs", "errors.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{} // reason → its row
	for _, line := range strings.Split(string(doc), "\n") {
		if m := regexp.MustCompile("^\\| `([A-Z][A-Z0-9_]*)` \\|").FindStringSubmatch(line); m != nil {
			cells := strings.Split(strings.Trim(line, "|"), "|")
			if len(cells) != 6 {
				t.Errorf("docs/errors.md: the row of %s has %d cells, want 6 (reason | code | who | meaning | what to do | retry?)", m[1], len(cells))
			}
			for i, c := range cells {
				if strings.TrimSpace(c) == "" {
					t.Errorf("docs/errors.md: the row of %s has an empty cell %d", m[1], i+1)
				}
			}
			rows[m[1]] = line
		}
	}

	byValue := map[string][]reasonConst{}
	for _, c := range consts {
		byValue[c.value] = append(byValue[c.value], c)
	}
	values := make([]string, 0, len(byValue))
	for v := range byValue {
		values = append(values, v)
	}
	sort.Strings(values)
	for _, v := range values {
		cs := byValue[v]
		used := false
		for _, c := range cs {
			if uses[c.name] > 0 {
				used = true
			}
		}
		if !used {
			t.Errorf("reason %s (%s) is produced nowhere: no non-test code uses %s", v, cs[0].pos, cs[0].name)
		}
		if _, ok := rows[v]; !ok {
			t.Errorf("reason %s (%s, %s) is not documented: add its row to docs/errors.md (| `%s` | code | who | meaning | what the caller should do | retry? |)", v, cs[0].name, cs[0].pos, v)
		}
	}
	for v := range rows {
		if _, ok := byValue[v]; !ok {
			t.Errorf("docs/errors.md documents %s, but no Reason… constant has that value", v)
		}
	}
}
