package store_test

import (
	"context"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// deniedFunctions must never be callable from an analyst query: they read
// files, the network, other servers, programs, dictionaries, settings or the
// server's own state, or stall or crash the engine on purpose.
var deniedFunctions = []string{
	"file", "url", "s3", "remote", "remoteSecure", "executable", "executablePool", "dictGet", "dictGetString",
	"dictGetOrNull", "dictHas", "joinGet", "joinGetOrNull", "hasColumnInTable", "getSetting", "getMacro",
	"sleep", "sleepEachRow", "throwIf", "catboostEvaluate", "evalMLMethod", "naiveBayesClassifier",
	"addressToLine", "addressToSymbol", "demangle", "filesystemAvailable", "filesystemCapacity",
	"filesystemUnreserved", "hostName", "fqdn", "currentUser", "version", "input", "generateRandom",
	"getServerPort", "uptime", "buildId", "FILE", "File", "aggThrow", "flameGraph", "globalVariable",
	"getSizeOfEnumType", "__getScalar", "currentProfiles", "currentRoles", "connectionId", "queryID",
	"initialQueryID", "transactionID", "serverUUID", "getClientHTTPHeader", "getOSKernelVersion",
	"dictGetHierarchy", "sqid", "structureToCapnProtoSchema", "format", "numbers", "mysql", "postgresql",
}

type engineFunction struct {
	name            string
	caseInsensitive bool
	aliasTo         string
	aggregate       bool
}

// engineFunctions reads system.functions and system.table_functions.
func engineFunctions(t *testing.T) (map[string]engineFunction, map[string]bool) {
	t.Helper()
	ctx := context.Background()
	b, err := chdbstore.Open(ctx, chdbstore.Options{Path: chdbPath, Database: "t_gate_functions"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	out, err := b.Query(ctx, "SELECT name, case_insensitive, alias_to, is_aggregate FROM system.functions", []store.Setting{{Name: "output_format_json_quote_64bit_integers", Value: 0}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := store.DecodeJSONCompact(out)
	if err != nil {
		t.Fatal(err)
	}
	funcs := map[string]engineFunction{}
	for _, r := range res.Rows {
		f := engineFunction{name: r[0].(string), aliasTo: r[2].(string)}
		f.caseInsensitive = r[1] == uint64(1) || r[1] == true
		f.aggregate = r[3] == uint64(1) || r[3] == true
		funcs[f.name] = f
	}
	out, err = b.Query(ctx, "SELECT name FROM system.table_functions", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err = store.DecodeJSONCompact(out)
	if err != nil {
		t.Fatal(err)
	}
	tableFuncs := map[string]bool{}
	for _, r := range res.Rows {
		tableFuncs[r[0].(string)] = true
	}
	return funcs, tableFuncs
}

// TestGateFunctionsAgainstEngine holds the function allow-lists true to the
// engine: every listed name exists, none is a table function or a denied
// function, every case-insensitive name is one the engine resolves in any
// case to an allowed function, and every engine function the gate lets
// through is listed or an aggregate.
func TestGateFunctionsAgainstEngine(t *testing.T) {
	funcs, tableFuncs := engineFunctions(t)
	// Names the parser produces that system.functions does not list.
	parserOnly := map[string]bool{"exists": true, "lambda": true, "untuple": true}
	var missing []string
	for _, set := range []map[string]bool{store.PlainFunctions, store.AggregateFunctions} {
		for name := range set {
			if _, ok := funcs[name]; !ok && !parserOnly[name] {
				missing = append(missing, name)
			}
			if tableFuncs[name] {
				t.Errorf("allowed function %s is a table function", name)
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("allowed functions the engine does not have: %s", strings.Join(missing, " "))
	}
	for _, name := range deniedFunctions {
		if store.FunctionAllowed(name) {
			t.Errorf("denied function %s is allowed", name)
		}
	}
	// Case-insensitive names: exactly the engine's case-insensitive
	// functions whose name, in lower case, is allowed.
	var wantCI []string
	for _, f := range funcs {
		if !f.caseInsensitive {
			continue
		}
		target := f.name
		if f.aliasTo != "" {
			target = f.aliasTo
		}
		if store.PlainFunctions[f.name] || store.AggregateFunctions[f.name] || store.PlainFunctions[target] || store.AggregateFunctions[target] {
			wantCI = append(wantCI, strings.ToLower(f.name))
		}
	}
	sort.Strings(wantCI)
	wantCI = slices.Compact(wantCI)
	var gotCI []string
	for name := range store.CaseInsensitiveFunctions {
		gotCI = append(gotCI, name)
	}
	sort.Strings(gotCI)
	if !slices.Equal(gotCI, wantCI) {
		t.Errorf("caseInsensitiveFunctions = %q\nthe engine's case-insensitive allowed functions are %q", gotCI, wantCI)
	}
	// Every engine function the gate allows is listed, an aggregate, a
	// conversion variant of a listed one, or an allowed case-insensitive one.
	for _, f := range funcs {
		if !store.FunctionAllowed(f.name) {
			continue
		}
		target := f.name
		if f.aliasTo != "" {
			target = f.aliasTo
		}
		listed := store.PlainFunctions[f.name] || store.AggregateFunctions[f.name] || f.aggregate ||
			store.PlainFunctions[target] || store.AggregateFunctions[target]
		for _, suf := range store.ConversionSuffixes {
			if base, ok := strings.CutSuffix(f.name, suf); ok && store.PlainFunctions[base] {
				listed = true
			}
		}
		if !listed {
			t.Errorf("engine function %s (alias of %q) passes the gate without being listed", f.name, f.aliasTo)
		}
		if tableFuncs[f.name] {
			t.Errorf("engine function %s passes the gate and is a table function", f.name)
		}
	}
}
