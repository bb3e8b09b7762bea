package events

// Leaked-token reports (issue 13): a scanner that found a Cordon token in
// public reports it to the issuer, which raises a critical anomaly of
// detector DetectorLeakedPublic for the token; the revoker's response
// policy acts on it like on any other anomaly (revoke by default) and
// alerts on-call with where it was found.
const (
	// DetectorLeakedPublic is the detector name of a leak report.
	DetectorLeakedPublic = "leaked_public"
	// SubjectCmdReportLeak reports leaked tokens over NATS: the body is
	// a JSON array of {token, type, url, source}, the reply says which
	// were Cordon's.
	SubjectCmdReportLeak = "cordon.cmd.report-leak"
)

// Evidence.Details keys of a leak report.
const (
	LeakDetailURL      = "url"
	LeakDetailSource   = "source"
	LeakDetailType     = "type"
	LeakDetailReporter = "reporter"
)
