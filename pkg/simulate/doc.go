// Package simulate generates labelled API-token traffic for Cordon from a
// scenario description, and scores detectors against it.
//
// A Scenario (YAML; the default one is testdata/scenarios/default.yaml,
// embedded) describes a deployment — tenants, the services behind
// enforcers and their routes, the workloads that call them: their
// networks and addresses, client, hours and zone, rate, usual actions and
// breadth of resources, and how their tokens are issued, rotated and
// re-issued — and what happens to it: benign drift (a move to a new
// network, a backfill, a new route, daylight saving, rotation and
// re-issue, new workloads, a broken client) and attacks, each written from
// a description of a real one. Nothing in a scenario or in this package is
// derived from a detector's threshold: the package does not import
// pkg/detect (TestSimulatorIndependentOfDetectors keeps it so).
//
// Generate turns a scenario, deterministically from its seed, into the
// events the issuer and the real enforcers would publish: token.issued
// with where the token was requested from, rotations, revocations and
// expiries; usage.decided with the route pattern ("/v1/invoices/{id}"),
// the resource apart ("42"), the raw user agent and the normalised client,
// decided in pkg/enforce's order with its reasons, and the denials that
// name no token folded per source and second with a count, throttled as a
// real enforcer throttles forged tokens (tests compare all of this with a
// real enforcer). The output is a time-ordered list of envelopes, written
// as JSONL for `cordon replay`, and its Labels: the attacks (tokens or
// sources, start, the bound within which a detection counts) and the
// exposures of the benign variants with their benign token-days.
//
// ScoreLabels compares anomalies with the labels: recall per attack
// variant, false alarms per benign variant per 1,000 benign tokens in use
// per day, precision, and time to detect; Report.Gate holds them to a bar.
package simulate
