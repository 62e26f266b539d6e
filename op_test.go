package pullkit_test

import (
	"context"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pullkit/pullkit"
)

// opConstants are the exported step names of op.go, read from its source.
func opConstants(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "op.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && strings.HasPrefix(n.Name, "Op") {
					out[n.Name] = strings.Trim(lit.Value, `"`)
				}
			}
		}
	}
	if len(out) < 20 {
		t.Fatalf("found %d Op constants in op.go", len(out))
	}
	return out
}

// TestEveryErrorNamesAnOpConstant reads every non-test Go file of the module and checks
// that each *pullkit.Error it makes (a pullkit.Error literal, or a call of Wrap or
// WrapDetail) gives its step as one of the Op constants (or "" for a step filled in
// later, or a local constant set to one), never as free text a program cannot compare.
func TestEveryErrorNamesAnOpConstant(t *testing.T) {
	ops := opConstants(t)
	values := map[string]bool{}
	for _, v := range ops {
		if values[v] {
			t.Errorf("two Op constants share the value %q", v)
		}
		values[v] = true
	}
	// Files by package directory: a helper that passes its op parameter on to Wrap
	// (store's blobErr, layers' blobErr) is checked at its callers, in its package.
	dirs := map[string][]string{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "examples" || d.Name() == "bench") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			dirs[filepath.Dir(path)] = append(dirs[filepath.Dir(path)], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, files := range dirs {
		fset := token.NewFileSet()
		var parsed []*ast.File
		for _, path := range files {
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			parsed = append(parsed, f)
		}
		// sites are the places that make an Error: the expression giving the step, and
		// the function it is in.
		type site struct {
			op ast.Expr
			fn *ast.FuncDecl
		}
		var sites []site
		forwarders := map[string]int{} // function name -> index of its op parameter
		for _, f := range parsed {
			for _, decl := range f.Decls {
				fn, _ := decl.(*ast.FuncDecl)
				ast.Inspect(decl, func(n ast.Node) bool {
					switch n := n.(type) {
					case *ast.CompositeLit:
						if isPullkitName(n.Type, "Error") {
							for _, el := range n.Elts {
								if kv, ok := el.(*ast.KeyValueExpr); ok && kv.Key.(*ast.Ident).Name == "Op" {
									sites = append(sites, site{kv.Value, fn})
								}
							}
						}
					case *ast.CallExpr:
						if (isPullkitName(n.Fun, "Wrap") || isPullkitName(n.Fun, "WrapDetail")) && len(n.Args) >= 2 {
							sites = append(sites, site{n.Args[1], fn})
						}
					}
					return true
				})
			}
		}
		paramIndex := func(fn *ast.FuncDecl, name string) int {
			if fn == nil {
				return -1
			}
			i := 0
			for _, fld := range fn.Type.Params.List {
				for _, n := range fld.Names {
					if n.Name == name {
						return i
					}
					i++
				}
			}
			return -1
		}
		for _, s := range sites {
			if id, ok := s.op.(*ast.Ident); ok {
				if i := paramIndex(s.fn, id.Name); i >= 0 {
					forwarders[s.fn.Name.Name] = i
				}
			}
		}
		for _, f := range parsed {
			for name, i := range forwarders {
				ast.Inspect(f, func(n ast.Node) bool {
					if c, ok := n.(*ast.CallExpr); ok {
						if id, ok := c.Fun.(*ast.Ident); ok && id.Name == name && len(c.Args) > i {
							sites = append(sites, site{c.Args[i], enclosing(f, c)})
						}
					}
					return true
				})
			}
		}
		locals := map[string]bool{}
		for _, f := range parsed {
			ast.Inspect(f, func(n ast.Node) bool {
				if vs, ok := n.(*ast.ValueSpec); ok {
					for i, name := range vs.Names {
						if i < len(vs.Values) && isOpConst(vs.Values[i], ops) {
							locals[name.Name] = true
						}
					}
				}
				if as, ok := n.(*ast.AssignStmt); ok && len(as.Lhs) == len(as.Rhs) {
					for i, l := range as.Lhs {
						if id, ok := l.(*ast.Ident); ok && isOpConst(as.Rhs[i], ops) {
							locals[id.Name] = true
						}
					}
				}
				return true
			})
		}
		for _, s := range sites {
			checked++
			switch e := s.op.(type) {
			case *ast.BasicLit:
				if e.Value == `""` {
					continue
				}
			case *ast.Ident:
				if locals[e.Name] || paramIndex(s.fn, e.Name) >= 0 {
					continue // a parameter: checked at the callers
				}
			}
			if !isOpConst(s.op, ops) {
				t.Errorf("%s: an Error made with step %s, not an Op constant", fset.Position(s.op.Pos()), exprString(s.op))
			}
		}
	}
	if checked < 150 {
		t.Errorf("checked only %d places that make an Error; the walk missed files", checked)
	}
}

// enclosing returns the function declaration of f that holds n.
func enclosing(f *ast.File, n ast.Node) *ast.FuncDecl {
	for _, d := range f.Decls {
		if fn, ok := d.(*ast.FuncDecl); ok && fn.Pos() <= n.Pos() && n.End() <= fn.End() {
			return fn
		}
	}
	return nil
}

func isOpConst(e ast.Expr, ops map[string]string) bool {
	switch e := e.(type) {
	case *ast.SelectorExpr:
		x, ok := e.X.(*ast.Ident)
		return ok && x.Name == "pullkit" && ops[e.Sel.Name] != ""
	case *ast.Ident:
		return ops[e.Name] != ""
	}
	return false
}

func isPullkitName(e ast.Expr, name string) bool {
	switch e := e.(type) {
	case *ast.SelectorExpr:
		x, ok := e.X.(*ast.Ident)
		return ok && x.Name == "pullkit" && e.Sel.Name == name
	case *ast.Ident:
		return e.Name == name
	}
	return false
}

func exprString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.BasicLit:
		return e.Value
	case *ast.BinaryExpr:
		return exprString(e.X) + " + " + exprString(e.Y)
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return exprString(e.X) + "." + e.Sel.Name
	}
	return "an expression"
}

// TestOpIsComparableAndDetailIsPrinted: a program compares Op; the message prints Op,
// then Detail, then the digest, and Wrap fills in a missing step with its Detail.
func TestOpIsComparableAndDetailIsPrinted(t *testing.T) {
	inner := &pullkit.Error{Op: pullkit.OpFetchManifest, Detail: "for linux/arm64", Digest: "sha256:ab", Err: pullkit.ErrNotFound}
	err := pullkit.Wrap("r/app:1", pullkit.OpResolve, "", inner)
	var pe *pullkit.Error
	if !errors.As(err, &pe) || pe.Op != pullkit.OpFetchManifest || pe.Reference != "r/app:1" {
		t.Fatalf("Wrap of an Error with its step: %#v, want the step kept and the reference filled in", pe)
	}
	if got, want := err.Error(), "r/app:1: fetch manifest for linux/arm64 sha256:ab: not found"; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
	filled := pullkit.WrapDetail("", pullkit.OpNameImage, "r/app:1", "", &pullkit.Error{Digest: "sha256:cd", Err: context.Canceled})
	if !errors.As(filled, &pe) || pe.Op != pullkit.OpNameImage || pe.Detail != "r/app:1" {
		t.Errorf("WrapDetail of an Error without a step: %#v", pe)
	}
	if got, want := filled.Error(), "name image r/app:1 sha256:cd: context canceled"; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
	// A Detail never smuggles control characters into a message.
	esc := (&pullkit.Error{Op: pullkit.OpNameImage, Detail: "a\x1b[2Jb", Err: pullkit.ErrInvalid}).Error()
	if strings.ContainsRune(esc, 0x1b) {
		t.Errorf("message %q carries an escape character", esc)
	}
}
