package revoker

import "github.com/cordonhq/cordon/pkg/follow"

// IndexReader is the reader that keeps r's token index current, for tests
// that place its consumer on a node and kill it.
func IndexReader(r *Revoker) *follow.Reader { return r.idx }

// AdminLedgerReader is the reader of r's admin-ledger view, likewise.
func AdminLedgerReader(r *Revoker) *follow.Reader { return r.adminLedger.Reader() }
