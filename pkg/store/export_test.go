package store

import "context"

// Exported for the external tests (package store_test), which can use
// chdbstore; an internal test cannot (chdbstore imports store).
var (
	FunctionAllowed          = functionAllowed
	PlainFunctions           = plainFunctions
	AggregateFunctions       = aggregateFunctions
	CaseInsensitiveFunctions = caseInsensitiveFunctions
	ConversionSuffixes       = conversionSuffixes
)

// ASTNode is astNode for tests.
type ASTNode = astNode

// Kind, Name and Children expose a node.
func (n *astNode) Kind() string         { return n.kind }
func (n *astNode) Name() string         { return n.name }
func (n *astNode) Children() []*astNode { return n.children }

// ParseASTDump is parseASTDump.
func ParseASTDump(lines []string) (*ASTNode, error) { return parseASTDump(lines) }

// ExplainAST returns the engine's syntax tree of the normalised text n.
func (s *Store) ExplainAST(ctx context.Context, n string) (*ASTNode, error) {
	out, err := s.runAnalyst(ctx, "EXPLAIN AST "+n, nil)
	if err != nil {
		return nil, err
	}
	res, err := DecodeJSONCompact(out)
	if err != nil {
		return nil, err
	}
	lines := make([]string, 0, len(res.Rows))
	for _, r := range res.Rows {
		lines = append(lines, r[0].(string))
	}
	return parseASTDump(lines)
}

// RecheckAST runs the allow-list walk of the gate again on n.
func (s *Store) RecheckAST(ctx context.Context, n string) error {
	toks, err := scanNormalized(n)
	if err != nil {
		return err
	}
	root, err := s.ExplainAST(ctx, n)
	if err != nil {
		return err
	}
	g := &gateCheck{db: s.db, tables: s.isTable, defined: cteNames(toks)}
	return g.checkRoot(ctx, root)
}

// AnalystQueriesInFlight is how many analyst queries hold a turn.
func (s *Store) AnalystQueriesInFlight() int { return len(s.analysts) }

// Normalize is the gate's first step: the engine's normalised text of q.
func (s *Store) Normalize(ctx context.Context, q string) (string, error) {
	return normalize(ctx, s.runAnalyst, q, s.gateSettings)
}

// UsageWireSchema is usageSchema for tests: each column's name and the type
// its value travels as in RowBinary.
func UsageWireSchema() [][2]string {
	out := make([][2]string, len(usageSchema))
	for i, c := range usageSchema {
		out[i] = [2]string{c.name, c.wire}
	}
	return out
}

// SetUsageInsertMerge makes usage inserts keep (true) or skip (false, the
// default) the engine's merge of the inserted block, for benchmarks.
func (s *Store) SetUsageInsertMerge(on bool) { s.insertMerge = on }

// LedgerColumns is ledgerColumns for tests: the columns of token_ledger_raw
// the ledger encoder writes, in order.
func LedgerColumns() []string { return ledgerColumns }
