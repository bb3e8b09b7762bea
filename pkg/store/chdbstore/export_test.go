package chdbstore

// BeginWrite and EndWrite mark an insert under way, for tests.
var (
	BeginWrite = beginWrite
	EndWrite   = endWrite
)
