package store

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The analyst SQL gate. An analyst's query is judged on the engine's own
// parse, never by scanning its text:
//
//  1. Precheck: size and bytes (no engine needed).
//  2. The engine normalises the query: SELECT formatQuerySingleLine('<the
//     query, as a string literal we quoted>'). The engine's parser refuses
//     more than one statement, and the caller's text never reaches the
//     engine other than inside that literal. The normalised text (the
//     engine's output) is itself checked to be one statement and a fixed
//     point of the formatter.
//  3. EXPLAIN AST of the normalised text: the engine's syntax tree.
//  4. The tree is walked against allow-lists: node kinds, functions
//     (gatefuncs.go), tables (Cordon's, in the store's database, or names
//     the query defines itself). No table functions, no SETTINGS, no INTO
//     OUTFILE, no FORMAT.
//  5. The normalised text, and only it, runs, with the engine's limits.
//
// The tree is read from EXPLAIN AST's text dump, which prints identifiers
// and aliases raw: a name holding a newline could forge dump lines. So the
// normalised text is first checked to hold no quoted identifier other than a
// plain one, which rules out such names (a plain name cannot hold a
// newline), and the dump is parsed strictly (every line's kind and form
// known, every node's child count as announced).

// MaxQueryBytes bounds the text of an analyst query.
const MaxQueryBytes = 64 << 10

// maxNormalizedBytes bounds the engine's normalised text, which can be
// longer than what the caller wrote (1::UInt8 becomes CAST('1', 'UInt8')).
const maxNormalizedBytes = 4 * MaxQueryBytes

// Precheck does the checks of an analyst query that need no engine: it is
// not empty, at most MaxQueryBytes, valid UTF-8 and free of NUL bytes.
// Query runs it first; a client may run it to fail fast. The error wraps
// ErrNotReadOnly.
func Precheck(q string) error {
	switch {
	case strings.TrimSpace(q) == "":
		return fmt.Errorf("%w: the query is empty", ErrNotReadOnly)
	case len(q) > MaxQueryBytes:
		return fmt.Errorf("%w: the query is %d bytes, more than the %d allowed", ErrNotReadOnly, len(q), MaxQueryBytes)
	case !utf8.ValidString(q):
		return fmt.Errorf("%w: the query is not valid UTF-8", ErrNotReadOnly)
	case strings.IndexByte(q, 0) >= 0:
		return fmt.Errorf("%w: the query holds a NUL byte", ErrNotReadOnly)
	}
	return nil
}

// refuse returns an error wrapping ErrNotReadOnly.
func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrNotReadOnly, fmt.Sprintf(format, args...))
}

// engineRunner runs one statement for the gate or an analyst query.
type engineRunner func(ctx context.Context, query string, settings []Setting) ([]byte, error)

// normalize asks the engine to parse q as one statement and returns its
// normalised single-line text. q travels only inside a string literal.
func normalize(ctx context.Context, run engineRunner, q string, settings []Setting) (string, error) {
	stmt := "WITH formatQuerySingleLine(" + quoteString(q) + ") AS n SELECT n, formatQuerySingleLine(n) = n"
	out, err := run(ctx, stmt, settings)
	if err != nil {
		if ctx.Err() == nil && isParseError(err) {
			return "", refuse("the engine does not read it as one SELECT statement: %s", engineMessage(err))
		}
		return "", fmt.Errorf("normalise query: %w", err)
	}
	res, err := DecodeJSONCompact(out)
	if err != nil {
		return "", fmt.Errorf("normalise query: %w", err)
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 2 {
		return "", fmt.Errorf("normalise query: unexpected result %v", res.Rows)
	}
	n, ok := res.Rows[0][0].(string)
	if !ok {
		return "", fmt.Errorf("normalise query: unexpected result %v", res.Rows)
	}
	if stable := fmt.Sprint(res.Rows[0][1]); stable != "1" && stable != "true" {
		return "", refuse("the engine formats this query differently each time; simplify it")
	}
	if len(n) > maxNormalizedBytes {
		return "", refuse("the query is too long once normalised (%d bytes)", len(n))
	}
	return n, nil
}

// isParseError reports whether an engine error is the parser's refusal.
func isParseError(err error) bool {
	s := err.Error()
	for _, m := range []string{"SYNTAX_ERROR", "Syntax error", "Code: 62.", "code: 62", "Empty query", "TOO_DEEP_RECURSION", "Max query size exceeded"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// engineMessage trims an engine error to what concerns the caller: no
// code prefix, no echo of the gate's own statement.
func engineMessage(err error) string {
	s := err.Error()
	if i := strings.Index(s, "DB::Exception: "); i >= 0 {
		s = s[i+len("DB::Exception: "):]
	}
	if i := strings.Index(s, ": In scope "); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// normToken is a token of the engine's normalised text.
type normToken struct {
	text   string
	word   bool // a bare word or a quoted identifier
	quoted bool // a quoted identifier (text is its content)
}

// plainIdent matches the identifiers the gate accepts inside quotes.
var plainIdent = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// scanNormalized lexes the engine's normalised text: string literals in
// single quotes, identifiers bare or in back quotes (both with backslash
// escapes), numbers and punctuation. It refuses a quoted identifier that is
// not a plain name, and any byte it does not expect outside literals.
func scanNormalized(n string) ([]normToken, error) {
	var toks []normToken
	for i := 0; i < len(n); {
		c := n[i]
		switch {
		case c == ' ':
			i++
		case c == '\'' || c == '`' || c == '"':
			j := i + 1
			for ; j < len(n) && n[j] != c; j++ {
				if n[j] == '\\' {
					j++
				}
			}
			if j >= len(n) {
				return nil, refuse("the normalised query has an unterminated %c", c)
			}
			body := n[i+1 : j]
			if c != '\'' {
				if !plainIdent.MatchString(body) {
					return nil, refuse("quoted identifier %c%s%c is not allowed: use plain names (letters, digits and _)", c, body, c)
				}
				toks = append(toks, normToken{text: body, word: true, quoted: true})
			} else {
				toks = append(toks, normToken{text: n[i : j+1]})
			}
			i = j + 1
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9':
			j := i
			for j < len(n) && (n[j] == '_' || n[j] >= 'a' && n[j] <= 'z' || n[j] >= 'A' && n[j] <= 'Z' || n[j] >= '0' && n[j] <= '9') {
				j++
			}
			toks = append(toks, normToken{text: n[i:j], word: true})
			i = j
		case c == '{' || c == '}':
			return nil, refuse("query parameters ({name:Type}) are not supported: write the value")
		case c > ' ' && c < 0x7f && c != '\\' && c != '$':
			toks = append(toks, normToken{text: n[i : i+1]})
			i++
		default:
			return nil, refuse("the normalised query holds an unexpected character %q at offset %d", c, i)
		}
	}
	if len(toks) == 0 {
		return nil, refuse("the query is empty")
	}
	return toks, nil
}

// cteNames returns the names the query defines with WITH name AS (…): in
// the engine's normalised text a name followed by AS and a parenthesis is
// nothing else. The syntax tree does not show these names; an over-broad
// answer is harmless, since an unqualified table name can only ever resolve
// to something the query defines (itself checked) or to a table of the
// store's database.
func cteNames(toks []normToken) map[string]bool {
	names := map[string]bool{}
	for i := 0; i+2 < len(toks); i++ {
		if toks[i].word && strings.EqualFold(toks[i+1].text, "AS") && !toks[i+1].quoted && toks[i+2].text == "(" {
			names[toks[i].text] = true
		}
	}
	return names
}

// astNode is one node of the engine's EXPLAIN AST dump.
type astNode struct {
	kind     string // e.g. "Function", "TableIdentifier"
	name     string // the node's name or value ("file", "cordon.usage", "'x'")
	alias    string
	children []*astNode
	line     int // 1-based line of the dump
}

var (
	childrenSuffix = regexp.MustCompile(` ?\(children ([0-9]+)\)$`)
	aliasSuffix    = regexp.MustCompile(` \(alias ([^()\s]+)\)$`)
	safeName       = regexp.MustCompile(`^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$`)
	sampleRatio    = regexp.MustCompile(`^[0-9]+( / [0-9]+)?$`)
	interpolateCol = regexp.MustCompile(`^\(column ([A-Za-z0-9_]+)\)$`)
	kindRe         = regexp.MustCompile(`^[A-Za-z]+(::[A-Za-z]+)?$`)
)

// parseASTDump reads EXPLAIN AST's output (one line per row) strictly: one
// root, indentation by one space per level, every line of a known form and
// every node with exactly the number of children it announces.
func parseASTDump(lines []string) (*astNode, error) {
	bad := func(i int, why string) error {
		return refuse("the engine's syntax tree could not be read (line %d: %s)", i+1, why)
	}
	if len(lines) == 0 {
		return nil, bad(0, "empty")
	}
	var root *astNode
	var stack []*astNode
	want := map[*astNode]int{}
	for i, l := range lines {
		depth := len(l) - len(strings.TrimLeft(l, " "))
		body := l[depth:]
		if body == "" || strings.ContainsFunc(body, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return nil, bad(i, "blank or control character")
		}
		n := &astNode{line: i + 1}
		if m := childrenSuffix.FindStringSubmatchIndex(body); m != nil {
			c, err := strconv.Atoi(body[m[2]:m[3]])
			if err != nil || c < 1 {
				return nil, bad(i, "children count")
			}
			want[n] = c
			body = body[:m[0]]
		}
		if m := aliasSuffix.FindStringSubmatchIndex(body); m != nil {
			n.alias = body[m[2]:m[3]]
			if !safeName.MatchString(n.alias) {
				return nil, bad(i, "alias")
			}
			body = body[:m[0]]
		}
		n.kind, n.name, _ = strings.Cut(body, " ")
		if !kindRe.MatchString(n.kind) {
			return nil, bad(i, "node kind")
		}
		switch n.kind {
		case "Function", "Identifier", "TableIdentifier":
			if !safeName.MatchString(n.name) {
				return nil, bad(i, "name")
			}
		case "Literal":
			if n.name == "" {
				return nil, bad(i, "literal")
			}
		case "SampleRatio":
			if !sampleRatio.MatchString(n.name) {
				return nil, bad(i, "sample ratio")
			}
		case "InterpolateElement":
			m := interpolateCol.FindStringSubmatch(n.name)
			if m == nil {
				return nil, bad(i, "interpolate column")
			}
			n.name = m[1]
		default:
			// Kinds the walk refuses anyway may carry text (their own
			// error names them); allowed ones hold nothing of their own.
			if n.name != "" && allowedKinds[n.kind] {
				return nil, bad(i, "unexpected text after "+n.kind)
			}
		}
		switch {
		case depth == 0:
			if root != nil {
				return nil, bad(i, "a second root")
			}
			root = n
		case depth > len(stack) || root == nil:
			return nil, bad(i, "indentation")
		default:
			parent := stack[depth-1]
			parent.children = append(parent.children, n)
		}
		stack = append(stack[:depth], n)
	}
	var count func(n *astNode) error
	count = func(n *astNode) error {
		if len(n.children) != want[n] {
			return bad(n.line-1, fmt.Sprintf("%s announces %d children, has %d", n.kind, want[n], len(n.children)))
		}
		for _, c := range n.children {
			if err := count(c); err != nil {
				return err
			}
		}
		return nil
	}
	if err := count(root); err != nil {
		return nil, err
	}
	return root, nil
}

// allowedKinds are the syntax tree nodes an analyst query may hold; each
// shows everything it holds as children or in its own checked name.
var allowedKinds = setOf(
	"SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery", "ExpressionList", "Literal",
	"Function", "Identifier", "TablesInSelectQuery", "TablesInSelectQueryElement", "TableExpression",
	"TableIdentifier", "TableJoin", "ArrayJoin", "Subquery", "WithElement", "Asterisk", "QualifiedAsterisk",
	"ColumnsTransformerList", "ColumnsExceptTransformer", "ColumnsReplaceTransformer",
	"ColumnsReplaceTransformer::Replacement", "ColumnsListMatcher", "ColumnsRegexpMatcher",
	"QualifiedColumnsListMatcher", "QualifiedColumnsRegexpMatcher", "OrderByElement", "WindowDefinition",
	"SampleRatio", "InterpolateElement",
)

// deniedKinds are refused with a reason of their own.
var deniedKinds = map[string]string{
	"Set":                      "a SETTINGS clause is not allowed: the engine's settings and limits are Cordon's",
	"WindowListElement":        "a named WINDOW clause is not supported (the gate cannot see inside it): write the window inline, e.g. OVER (PARTITION BY holder ORDER BY time)",
	"ColumnsApplyTransformer":  "APPLY column transformers are not allowed: call the function on the columns",
	"QueryParameter":           "query parameters ({name:Type}) are not supported: write the value",
	"ColumnsPrefixTransformer": "column transformers other than EXCEPT and REPLACE are not allowed",
}

// inFunctions take a set on their right side: a subquery, a literal, a
// tuple or array of values, or a table (an identifier).
var inFunctions = setOf("in", "notIn", "globalIn", "globalNotIn", "nullIn", "notNullIn", "globalNullIn", "globalNotNullIn")

// gateCheck walks a syntax tree against the allow-lists.
type gateCheck struct {
	db      string
	tables  func(ctx context.Context, name string) (bool, error) // is name a Cordon table (in db)?
	defined map[string]bool                                      // names the query defines
}

// checkRoot checks a whole query's tree.
func (g *gateCheck) checkRoot(ctx context.Context, root *astNode) error {
	if root.kind != "SelectWithUnionQuery" {
		return refuse("only SELECT and WITH queries are accepted, not %s", root.kind)
	}
	if len(root.children) != 1 {
		return refuse("INTO OUTFILE and FORMAT clauses are not allowed: the output is Cordon's to write (choose -o table, csv or json)")
	}
	if n := topLevelSelects(root); n > maxTopLevelSelects {
		return refuse("a UNION of %d SELECTs is more than the %d allowed", n, maxTopLevelSelects)
	}
	g.collectDefined(root)
	return g.walk(ctx, root, nil)
}

// maxTopLevelSelects bounds the SELECTs of a top-level UNION, EXCEPT or
// INTERSECT: the result-row limit applies to each (see querySettings).
const maxTopLevelSelects = 32

// topLevelSelects counts the SELECTs whose rows make the result.
func topLevelSelects(n *astNode) int {
	switch n.kind {
	case "SelectQuery":
		return 1
	case "SelectWithUnionQuery", "SelectIntersectExceptQuery", "ExpressionList":
		c := 0
		for _, ch := range n.children {
			c += topLevelSelects(ch)
		}
		return c
	}
	return 0
}

// collectDefined adds the aliases of table expressions and subqueries.
func (g *gateCheck) collectDefined(n *astNode) {
	if n.alias != "" && (n.kind == "TableIdentifier" || n.kind == "Subquery") {
		g.defined[n.alias] = true
	}
	for _, c := range n.children {
		g.collectDefined(c)
	}
}

func (g *gateCheck) walk(ctx context.Context, n, parent *astNode) error {
	if why, ok := deniedKinds[n.kind]; ok {
		return refuse("%s", why)
	}
	if !allowedKinds[n.kind] {
		return refuse("%s is not allowed in analyst queries (only SELECT and WITH over Cordon's tables)", n.kind)
	}
	switch n.kind {
	case "SelectWithUnionQuery":
		if len(n.children) != 1 || n.children[0].kind != "ExpressionList" {
			return refuse("INTO OUTFILE and FORMAT clauses are not allowed")
		}
	case "TableIdentifier":
		if err := g.checkTable(ctx, n.name); err != nil {
			return err
		}
	case "Function":
		if parent != nil && parent.kind == "TableExpression" {
			return refuse("table function %s() is not allowed: analyst queries read Cordon's tables only", n.name)
		}
		if !functionAllowed(n.name) {
			return refuse("function %s is not allowed in analyst queries", n.name)
		}
		if inFunctions[n.name] {
			return g.walkIn(ctx, n)
		}
	}
	for _, c := range n.children {
		if err := g.walk(ctx, c, n); err != nil {
			return err
		}
	}
	return nil
}

// walkIn checks x IN <set>: the set is a subquery, a literal, a tuple or
// array, or a table, which must pass the table check.
func (g *gateCheck) walkIn(ctx context.Context, n *astNode) error {
	if len(n.children) != 1 || n.children[0].kind != "ExpressionList" || len(n.children[0].children) != 2 {
		return refuse("%s takes exactly two arguments", n.name)
	}
	args := n.children[0]
	if err := g.walk(ctx, args.children[0], args); err != nil {
		return err
	}
	set := args.children[1]
	switch {
	case set.kind == "Identifier":
		err := g.checkTable(ctx, set.name)
		if err != nil && !strings.Contains(set.name, ".") {
			return fmt.Errorf("%w (the right side of %s names a table; for an array column, use has(%s, value))", err, n.name, set.name)
		}
		return err
	case set.kind == "Subquery" || set.kind == "Literal" ||
		set.kind == "Function" && (set.name == "tuple" || set.name == "array"):
		return g.walk(ctx, set, args)
	}
	return refuse("the right side of %s must be a subquery, a list of values or a Cordon table", n.name)
}

// checkTable accepts Cordon's tables (unqualified or qualified with the
// store's database) and, unqualified, the names the query itself defines.
func (g *gateCheck) checkTable(ctx context.Context, name string) error {
	db, table, qualified := strings.Cut(name, ".")
	if !qualified {
		db, table = g.db, name
		if g.defined[name] {
			return nil
		}
	}
	if db != g.db || strings.Contains(table, ".") {
		return refuse("table %s is not a Cordon table (analyst queries read the tables of database %s)", name, g.db)
	}
	ok, err := g.tables(ctx, table)
	if err != nil {
		return err
	}
	if !ok {
		return refuse("table %s is not a Cordon table (analyst queries read the tables of database %s)", name, g.db)
	}
	return nil
}

// textRefusal refuses, before the syntax tree is asked for, what the
// engine's normalised text shows plainly: a statement that does not start
// like a SELECT (with the equivalent where there is one), INTO OUTFILE, a
// trailing FORMAT. The tree decides anyway; this explains better, and keeps
// such clauses away from the EXPLAIN statement itself.
func textRefusal(toks []normToken, tables func() []string) error {
	first := strings.ToUpper(toks[0].text)
	if toks[0].quoted {
		first = toks[0].text
	}
	switch {
	case first == "SELECT" || first == "WITH" || first == "(":
	case first == "SHOW":
		return refuse("SHOW is not accepted: the tables are %s (docs/schema.md describes them)", strings.Join(tables(), ", "))
	case first == "DESCRIBE" || first == "DESC":
		return refuse("DESCRIBE is not accepted: SELECT * FROM <table> LIMIT 0 (-o json) shows the columns and their types, and docs/schema.md describes them")
	case first == "EXPLAIN":
		return refuse("EXPLAIN is not accepted: only SELECT and WITH queries are")
	default:
		return refuse("%s statements are not allowed: only SELECT and WITH queries are", first)
	}
	for i, t := range toks {
		if t.word && !t.quoted && t.text == "INTO" && i+1 < len(toks) && toks[i+1].text == "OUTFILE" && !toks[i+1].quoted {
			return refuse("INTO OUTFILE is not allowed: the output is Cordon's to write (choose -o table, csv or json)")
		}
	}
	if n := len(toks); n >= 2 && toks[n-2].text == "FORMAT" && !toks[n-2].quoted && toks[n-1].word {
		return refuse("a FORMAT clause is not allowed: the output is Cordon's to write (choose -o table, csv or json)")
	}
	return nil
}

// visibleTables lists the tables and views analysts see, for messages.
func visibleTables(all map[string]bool) []string {
	var out []string
	for t := range all {
		if !strings.HasPrefix(t, ".") && !strings.HasSuffix(t, "_raw") && !strings.HasSuffix(t, "_state") && !strings.HasSuffix(t, "_mv") && t != "schema_migrations" {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}
