package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// DefaultAnomalyLimit is how many anomalies Anomalies returns when the limit
// is 0 or negative.
const DefaultAnomalyLimit = 1000

// reportListLimit bounds each per-value list of a Report (scopes, services,
// source IPs, clients, devices, denial reasons, routes with resources),
// busiest first.
const reportListLimit = 100

// reportResourceLimit bounds the resources a Report lists for one route,
// busiest first; RouteResources.Distinct counts them all.
const reportResourceLimit = 50

// Anomaly is a row of the anomalies view.
type Anomaly struct {
	AnomalyID string    `json:"anomaly_id"`
	Time      time.Time `json:"time"` // when it was detected
	Detector  string    `json:"detector"`
	Severity  string    `json:"severity"`
	TokenID   string    `json:"token_id"`
	Tenant    string    `json:"tenant"`
	Holder    string    `json:"holder"`
	// EventID and EventTime identify the usage event that triggered it.
	EventID   string          `json:"event_id"`
	EventTime time.Time       `json:"event_time"`
	SourceIP  string          `json:"source_ip,omitempty"`
	Evidence  events.Evidence `json:"evidence"`
}

// LedgerEntry is a row of the token_ledger view. Fields a type does not
// carry are zero.
type LedgerEntry struct {
	EventID     string          `json:"event_id"`
	Time        time.Time       `json:"time"`
	Type        string          `json:"type"` // issued, rotated, revoked, expired, restricted, released
	TokenID     string          `json:"token_id"`
	Tenant      string          `json:"tenant"`
	Holder      string          `json:"holder"`
	KeyID       string          `json:"kid,omitempty"`
	Scopes      []string        `json:"scopes,omitempty"`
	Audience    []string        `json:"audience,omitempty"`
	Networks    []string        `json:"networks,omitempty"`
	Environment string          `json:"environment,omitempty"`
	Windows     []events.Window `json:"windows,omitempty"`
	Device      string          `json:"device,omitempty"`
	NotBefore   time.Time       `json:"nbf,omitzero"`
	Expiry      time.Time       `json:"exp,omitzero"`
	GraceUntil  time.Time       `json:"grace_until,omitzero"`
	Actor       string          `json:"actor,omitempty"`
	Reason      string          `json:"reason,omitempty"`
	Kind        string          `json:"kind,omitempty"`
	SuccessorID string          `json:"successor_id,omitempty"`
	RotatedFrom string          `json:"rotated_from,omitempty"`
	BreakGlass  bool            `json:"break_glass,omitempty"`
	AnomalyID   string          `json:"anomaly_id,omitempty"`
	// RequestedIP and RequestedClient are where an issued token was
	// requested from (events.TokenIssued.Requested), when known.
	RequestedIP     string `json:"requested_ip,omitempty"`
	RequestedClient string `json:"requested_client,omitempty"`
	// Step is, for a restricted entry, the step taken (events.StepNarrow,
	// StepStepUp or StepShadow), for a released entry the step lifted.
	// Scopes and Networks of a restricted entry are what a quarantined
	// token keeps, Expiry the token's expiry.
	Step string `json:"step,omitempty"`
	// Would is, for a shadow step, the step the rule would have taken.
	Would string `json:"would,omitempty"`
	// Until is when a narrow or step-up restriction ends.
	Until time.Time `json:"until,omitzero"`
	// Rule and Risk are the response rule that chose an automatic step
	// and its anomaly's risk score (stored as Float32).
	Rule string  `json:"rule,omitempty"`
	Risk float64 `json:"risk,omitempty"`
}

// UsageCount is how often one value (a scope, a service, a source IP) was
// used by a token.
type UsageCount struct {
	Value    string `json:"value"`
	Requests uint64 `json:"requests"`
	Allowed  uint64 `json:"allowed"`
	Denied   uint64 `json:"denied"`
}

// RouteResources is what a token's requests named on one route: the
// distinct resources (the values of the route's path parameters, see
// events.UsageDecided.Resource), with how often each was requested.
type RouteResources struct {
	Method string `json:"method"`
	Route  string `json:"route"`
	// Requests counts the token's requests to the route that named a
	// resource; Distinct how many different resources they named.
	Requests uint64 `json:"requests"`
	Distinct uint64 `json:"distinct"`
	// Resources are the busiest resources, at most 50 (Distinct says how
	// many there are in all).
	Resources []UsageCount `json:"resources"`
}

// ReasonCount is how many requests were denied for one reason.
type ReasonCount struct {
	Reason string `json:"reason"`
	Count  uint64 `json:"count"`
}

// Report compares what the ledger says a token may do with what it did.
type Report struct {
	TokenID string `json:"token_id"`
	Tenant  string `json:"tenant"`
	Holder  string `json:"holder"`
	// Status is the token's state by its ledger: active, rotated (a
	// successor exists), revoked, expired, or unknown (no ledger entry).
	// An issued token past its expiry is expired even before the expired
	// event is written.
	Status string `json:"status"`
	// Grant is the token.issued entry: what the token may do. Nil when
	// the ledger has no issued entry for it.
	Grant *LedgerEntry `json:"grant,omitempty"`
	// Ledger is the token's whole ledger history, oldest first.
	Ledger []LedgerEntry `json:"ledger"`

	// Requests, Allowed and Denied count its usage events (each once).
	Requests  uint64    `json:"requests"`
	Allowed   uint64    `json:"allowed"`
	Denied    uint64    `json:"denied"`
	FirstSeen time.Time `json:"first_seen,omitzero"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
	// Scopes, Services and SourceIPs are what it used, busiest first (at
	// most 100 each). Requests without a scope are under "".
	Scopes    []UsageCount `json:"scopes"`
	Services  []UsageCount `json:"services"`
	SourceIPs []UsageCount `json:"source_ips"`
	// Clients are the normalised clients (events.NormalizeClient) and
	// Devices the TLS client certificate thumbprints it was used with,
	// busiest first (at most 100 each); requests that reported none are
	// under "".
	Clients []UsageCount `json:"clients"`
	Devices []UsageCount `json:"devices"`
	// Resources are, per method and route, the distinct resources its
	// requests named, busiest routes first (at most 100 routes, 50
	// resources each). Routes without parameters name none and are left
	// out.
	Resources []RouteResources `json:"resources"`
	// Hours counts requests by hour of day (UTC).
	Hours [24]uint64 `json:"hours"`
	// Denials counts its denied requests by deny reason, most first.
	Denials []ReasonCount `json:"denials"`
	// UnusedScopes are granted scopes it never used successfully;
	// UngrantedScopes are scopes it asked for that the grant does not
	// list (compared as exact strings). Both are empty without a Grant.
	UnusedScopes    []string `json:"unused_scopes"`
	UngrantedScopes []string `json:"ungranted_scopes"`
	// Anomalies found for it, oldest first.
	Anomalies []Anomaly `json:"anomalies"`
}

// CountUsage returns the number of distinct usage events stored.
func (s *Store) CountUsage(ctx context.Context) (uint64, error) {
	res, err := s.query(ctx, "SELECT count() FROM "+s.table("usage_events"))
	if err != nil {
		return 0, fmt.Errorf("count usage: %w", err)
	}
	if len(res.Rows) != 1 {
		return 0, fmt.Errorf("count usage: %d rows", len(res.Rows))
	}
	return asUint(res.Rows[0][0]), nil
}

const anomalySelect = "anomaly_id, time, toString(detector), toString(severity), token_id, toString(tenant), toString(holder), event_id, event_time, source_ip, evidence_seen, evidence_baseline, evidence_details"

// Anomalies returns the anomalies detected at or after since (all when since
// is zero), newest first, at most limit (DefaultAnomalyLimit when limit <= 0).
func (s *Store) Anomalies(ctx context.Context, since time.Time, limit int) ([]Anomaly, error) {
	if limit <= 0 {
		limit = DefaultAnomalyLimit
	}
	q := "SELECT " + anomalySelect + " FROM " + s.table("anomalies")
	if !since.IsZero() {
		q += " WHERE time >= " + timeLiteral(since)
	}
	q += fmt.Sprintf(" ORDER BY time DESC, anomaly_id LIMIT %d", limit)
	res, err := s.query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("list anomalies: %w", err)
	}
	return anomaliesOf(res), nil
}

func anomaliesOf(res *Result) []Anomaly {
	out := make([]Anomaly, 0, len(res.Rows))
	for _, r := range res.Rows {
		out = append(out, Anomaly{
			AnomalyID: asString(r[0]), Time: asTime(r[1]), Detector: asString(r[2]), Severity: asString(r[3]),
			TokenID: asString(r[4]), Tenant: asString(r[5]), Holder: asString(r[6]), EventID: asString(r[7]),
			EventTime: asTime(r[8]), SourceIP: asString(r[9]),
			Evidence: events.Evidence{Seen: asString(r[10]), Baseline: asString(r[11]), Details: asStringMap(r[12])},
		})
	}
	return out
}

// TokenReport reports on one token: its ledger (what it may do) against its
// usage (what it did) and its anomalies. It returns ErrNotFound when the
// store has nothing about the token.
func (s *Store) TokenReport(ctx context.Context, tokenID string) (*Report, error) {
	if tokenID == "" {
		return nil, fmt.Errorf("token report: empty token id")
	}
	tok := quoteString(tokenID)
	usage := s.table("usage_events")
	rep := &Report{TokenID: tokenID, Status: "unknown"}

	ledger, err := s.query(ctx, "SELECT event_id, time, toString(type), toString(tenant), toString(holder), toString(kid), "+
		"arrayMap(x -> toString(x), scopes), arrayMap(x -> toString(x), audience), networks, toString(environment), windows, device, "+
		"nbf, exp, grace_until, toString(actor), reason, toString(kind), successor_id, rotated_from, break_glass, anomaly_id, "+
		"requested_ip, toString(requested_client), toString(step), toString(would), until, rule, risk "+
		"FROM "+s.table("token_ledger")+" WHERE token_id = "+tok+" ORDER BY time, event_id")
	if err != nil {
		return nil, fmt.Errorf("token report %s: ledger: %w", tokenID, err)
	}
	for _, r := range ledger.Rows {
		e := LedgerEntry{
			EventID: asString(r[0]), Time: asTime(r[1]), Type: asString(r[2]), TokenID: tokenID, Tenant: asString(r[3]),
			Holder: asString(r[4]), KeyID: asString(r[5]), Scopes: asStrings(r[6]), Audience: asStrings(r[7]),
			Networks: asStrings(r[8]), Environment: asString(r[9]), Device: asString(r[11]), NotBefore: asTime(r[12]),
			Expiry: asTime(r[13]), GraceUntil: asTime(r[14]), Actor: asString(r[15]), Reason: asString(r[16]),
			Kind: asString(r[17]), SuccessorID: asString(r[18]), RotatedFrom: asString(r[19]), BreakGlass: r[20] == true,
			AnomalyID: asString(r[21]), RequestedIP: asString(r[22]), RequestedClient: asString(r[23]),
			Step: asString(r[24]), Would: asString(r[25]), Until: asTime(r[26]), Rule: asString(r[27]), Risk: asFloat(r[28]),
		}
		if w := asString(r[10]); w != "" && w != "[]" {
			if err := json.Unmarshal([]byte(w), &e.Windows); err != nil {
				return nil, fmt.Errorf("token report %s: ledger event %s: windows: %w", tokenID, e.EventID, err)
			}
		}
		rep.Ledger = append(rep.Ledger, e)
	}
	rep.Status = ledgerStatus(rep.Ledger, time.Now())
	for i := range rep.Ledger {
		if e := &rep.Ledger[i]; e.Type == "issued" {
			rep.Grant = e
		}
		rep.Tenant, rep.Holder = rep.Ledger[i].Tenant, rep.Ledger[i].Holder
	}

	sum, err := s.query(ctx, "SELECT count(), countIf(decision = 'allow'), countIf(decision = 'deny'), min(time), max(time), "+
		"toString(any(tenant)), toString(any(holder)) FROM "+usage+" WHERE token_id = "+tok)
	if err != nil {
		return nil, fmt.Errorf("token report %s: usage: %w", tokenID, err)
	}
	if len(sum.Rows) == 1 && asUint(sum.Rows[0][0]) > 0 {
		r := sum.Rows[0]
		rep.Requests, rep.Allowed, rep.Denied = asUint(r[0]), asUint(r[1]), asUint(r[2])
		rep.FirstSeen, rep.LastSeen = asTime(r[3]), asTime(r[4])
		if rep.Tenant == "" {
			rep.Tenant, rep.Holder = asString(r[5]), asString(r[6])
		}
	}

	for _, l := range []struct {
		column string
		dst    *[]UsageCount
	}{{"scope", &rep.Scopes}, {"service", &rep.Services}, {"source_ip", &rep.SourceIPs}, {"client", &rep.Clients}, {"device", &rep.Devices}} {
		res, err := s.query(ctx, fmt.Sprintf("SELECT toString(%s) AS value, count() AS n, countIf(decision = 'allow'), countIf(decision = 'deny') "+
			"FROM %s WHERE token_id = %s GROUP BY value ORDER BY n DESC, value LIMIT %d", l.column, usage, tok, reportListLimit))
		if err != nil {
			return nil, fmt.Errorf("token report %s: %s: %w", tokenID, l.column, err)
		}
		*l.dst = make([]UsageCount, 0, len(res.Rows))
		for _, r := range res.Rows {
			*l.dst = append(*l.dst, UsageCount{Value: asString(r[0]), Requests: asUint(r[1]), Allowed: asUint(r[2]), Denied: asUint(r[3])})
		}
	}

	if rep.Resources, err = s.routeResources(ctx, usage, tok); err != nil {
		return nil, fmt.Errorf("token report %s: %w", tokenID, err)
	}

	hours, err := s.query(ctx, "SELECT toHour(time) AS h, count() FROM "+usage+" WHERE token_id = "+tok+" GROUP BY h")
	if err != nil {
		return nil, fmt.Errorf("token report %s: hours: %w", tokenID, err)
	}
	for _, r := range hours.Rows {
		if h := asUint(r[0]); h < 24 {
			rep.Hours[h] = asUint(r[1])
		}
	}

	denials, err := s.query(ctx, fmt.Sprintf("SELECT toString(reason) AS r, count() AS n FROM %s WHERE token_id = %s AND decision = 'deny' "+
		"GROUP BY r ORDER BY n DESC, r LIMIT %d", usage, tok, reportListLimit))
	if err != nil {
		return nil, fmt.Errorf("token report %s: denials: %w", tokenID, err)
	}
	rep.Denials = make([]ReasonCount, 0, len(denials.Rows))
	for _, r := range denials.Rows {
		rep.Denials = append(rep.Denials, ReasonCount{Reason: asString(r[0]), Count: asUint(r[1])})
	}

	anomalies, err := s.query(ctx, "SELECT "+anomalySelect+" FROM "+s.table("anomalies")+" WHERE token_id = "+tok+" ORDER BY time, anomaly_id")
	if err != nil {
		return nil, fmt.Errorf("token report %s: anomalies: %w", tokenID, err)
	}
	rep.Anomalies = anomaliesOf(anomalies)

	if len(rep.Ledger) == 0 && rep.Requests == 0 && len(rep.Anomalies) == 0 {
		return nil, fmt.Errorf("token report %s: %w", tokenID, ErrNotFound)
	}
	rep.UnusedScopes, rep.UngrantedScopes = compareScopes(rep.Grant, rep.Scopes)
	return rep, nil
}

// routeResources lists, per method and route, the distinct resources the
// requests of token tok (a quoted literal) named, bounded as Report says.
func (s *Store) routeResources(ctx context.Context, usage, tok string) ([]RouteResources, error) {
	routes, err := s.query(ctx, fmt.Sprintf("SELECT toString(method) AS m, toString(route) AS r, count() AS n, uniqExact(resource) "+
		"FROM %s WHERE token_id = %s AND resource != '' GROUP BY m, r ORDER BY n DESC, m, r LIMIT %d", usage, tok, reportListLimit))
	if err != nil {
		return nil, fmt.Errorf("resources: %w", err)
	}
	out := make([]RouteResources, 0, len(routes.Rows))
	at := make(map[[2]string]int, len(routes.Rows))
	for _, r := range routes.Rows {
		rr := RouteResources{Method: asString(r[0]), Route: asString(r[1]), Requests: asUint(r[2]), Distinct: asUint(r[3]), Resources: []UsageCount{}}
		at[[2]string{rr.Method, rr.Route}] = len(out)
		out = append(out, rr)
	}
	if len(out) == 0 {
		return out, nil
	}
	res, err := s.query(ctx, fmt.Sprintf("SELECT toString(method) AS m, toString(route) AS r, resource, count() AS n, "+
		"countIf(decision = 'allow'), countIf(decision = 'deny') FROM %s WHERE token_id = %s AND resource != '' "+
		"GROUP BY m, r, resource ORDER BY n DESC, resource LIMIT %d BY m, r", usage, tok, reportResourceLimit))
	if err != nil {
		return nil, fmt.Errorf("resources: %w", err)
	}
	for _, r := range res.Rows {
		i, ok := at[[2]string{asString(r[0]), asString(r[1])}]
		if !ok {
			continue // a route past the limit
		}
		out[i].Resources = append(out[i].Resources, UsageCount{Value: asString(r[2]), Requests: asUint(r[3]), Allowed: asUint(r[4]), Denied: asUint(r[5])})
	}
	return out, nil
}

// ledgerStatus derives a token's status from its ledger history at now.
func ledgerStatus(ledger []LedgerEntry, now time.Time) string {
	status := "unknown"
	var exp time.Time
	for _, e := range ledger {
		switch e.Type {
		case "issued":
			if status == "unknown" {
				status = "active"
			}
			exp = e.Expiry
		case "rotated":
			if status == "active" || status == "unknown" {
				status = "rotated"
			}
		case "revoked":
			status = "revoked"
		case "expired":
			if status != "revoked" {
				status = "expired"
			}
		}
	}
	if (status == "active" || status == "rotated") && !exp.IsZero() && now.After(exp) {
		status = "expired"
	}
	return status
}

// compareScopes returns the granted scopes never allowed, and the requested
// scopes the grant does not list.
func compareScopes(grant *LedgerEntry, used []UsageCount) (unused, ungranted []string) {
	unused, ungranted = []string{}, []string{}
	if grant == nil {
		return unused, ungranted
	}
	granted := make(map[string]bool, len(grant.Scopes))
	for _, sc := range grant.Scopes {
		granted[sc] = true
	}
	allowed := make(map[string]bool, len(used))
	for _, u := range used {
		if u.Value == "" {
			continue
		}
		if u.Allowed > 0 {
			allowed[u.Value] = true
		}
		if !granted[u.Value] {
			ungranted = append(ungranted, u.Value)
		}
	}
	for _, sc := range grant.Scopes {
		if !allowed[sc] {
			unused = append(unused, sc)
		}
	}
	sort.Strings(unused)
	sort.Strings(ungranted)
	return unused, ungranted
}

// timeLiteral returns t as a DateTime64(6, 'UTC') literal.
func timeLiteral(t time.Time) string {
	return "toDateTime64(" + quoteString(formatTime(t)) + ", 6, 'UTC')"
}
