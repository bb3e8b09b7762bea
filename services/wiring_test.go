// Package services_test holds the checks that span Cordon's services.
package services_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// wiring are the calls that assemble a service from its parts: only the
// service's own package (its Start) makes them, everyone else fills a
// Config. Keyed by import path, then function.
var wiring = map[string]map[string]bool{
	"github.com/cordonhq/cordon/services/auditor": {"New": true, "StartAdminAuth": true, "NewQueryServer": true},
	"github.com/cordonhq/cordon/services/issuer":  {"New": true},
	"github.com/cordonhq/cordon/services/revoker": {"New": true},
	"github.com/cordonhq/cordon/pkg/enforce":      {"NewProxy": true},
	"github.com/nats-io/nats.go":                  {"Connect": true},
}

// allowed are the directories (module-relative, slash-separated
// prefixes) that may make those calls: the services themselves, the one
// NATS dial, and the test harnesses' own connections.
var allowed = []string{
	"services/",
	"pkg/natsconn/",
	"internal/natstest/",
	"internal/natscluster/",
}

// TestEachServiceIsWiredOnce: no code outside the service packages wires
// a service (auditor.New, issuer.New, revoker.New, the analyst API,
// enforce.NewProxy) or dials NATS itself (nats.Connect): the CLI, cordon
// up, replay, the fault harness and the benchmarks fill a Config, and
// every connection goes through pkg/natsconn. Test files are free to.
func TestEachServiceIsWiredOnce(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(strings.TrimPrefix(path, root+string(filepath.Separator)))
		if d.IsDir() {
			if name := d.Name(); name == "testdata" || name == "vendor" || (strings.HasPrefix(name, ".") && path != root) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		for _, a := range allowed {
			if strings.HasPrefix(rel, a) {
				return nil
			}
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		checked++
		names := map[string]string{} // local name -> import path
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if wiring[p] == nil {
				continue
			}
			name := p[strings.LastIndex(p, "/")+1:]
			if p == "github.com/nats-io/nats.go" {
				name = "nats"
			}
			if imp.Name != nil {
				name = imp.Name.Name
			}
			names[name] = p
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			x, ok := sel.X.(*ast.Ident)
			if !ok {
				return true
			}
			if p, ok := names[x.Name]; ok && wiring[p][sel.Sel.Name] {
				t.Errorf("%s: %s.%s: a service is wired (or NATS dialled) outside its package; fill the service's Config (or a natsconn.Config) instead",
					fset.Position(call.Pos()), x.Name, sel.Sel.Name)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("only %d files checked: the walk missed the module", checked)
	}
}
