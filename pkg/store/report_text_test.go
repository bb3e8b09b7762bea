package store_test

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
)

var textAt = time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC)

func textAnomaly(seen string) store.Anomaly {
	return store.Anomaly{AnomalyID: "a1", Time: textAt.Add(time.Second), Detector: "new_network", Severity: "medium", TokenID: "t1",
		Tenant: "acme", Holder: "billing", EventID: "e1", EventTime: textAt, SourceIP: "203.0.113.9",
		Evidence: events.Evidence{Seen: seen, Baseline: "10.0.0.0/24"}}
}

func TestWriteAnomalies(t *testing.T) {
	long := "use from network 203.0.113.0/24\n" + strings.Repeat("x", 80)
	cases := []struct {
		name, format string
		as           []store.Anomaly
		want         string   // exact, when set
		has          []string // otherwise, in this order
		err          string
	}{
		{name: "table, none", format: store.FormatTable, want: "no anomalies\n"},
		{name: "default is the table", format: "", want: "no anomalies\n"},
		{name: "json, none", format: store.FormatJSON, want: "[]\n"},
		{name: "csv, none", format: store.FormatCSV, want: "detected,event_time,detector,severity,token_id,tenant,holder,source_ip,seen,baseline,anomaly_id,event_id\n"},
		{name: "table", format: store.FormatTable, as: []store.Anomaly{textAnomaly("203.0.113.0/24")},
			want: "TIME                  DETECTOR     SEVERITY  TOKEN  HOLDER        SOURCE IP    SEEN            BASELINE\n" +
				"2026-11-27T09:30:00Z  new_network  medium    t1     acme/billing  203.0.113.9  203.0.113.0/24  10.0.0.0/24\n" +
				"(1 anomalies)\n"},
		{name: "table clips evidence to one line of 60", format: store.FormatTable, as: []store.Anomaly{textAnomaly(long)},
			has: []string{"use from network 203.0.113.0/24 " + strings.Repeat("x", 27) + "…  10.0.0.0/24\n"}},
		{name: "csv keeps everything", format: store.FormatCSV, as: []store.Anomaly{textAnomaly(long)},
			has: []string{"\n2026-11-27T09:30:01Z,2026-11-27T09:30:00Z,new_network,medium,t1,acme,billing,203.0.113.9,\"" + long + "\",10.0.0.0/24,a1,e1\n"}},
		{name: "unknown format", format: "yaml", err: `unknown output format "yaml"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			err := store.WriteAnomalies(&b, tc.as, tc.format)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != "" && b.String() != tc.want {
				t.Errorf("got\n%q\nwant\n%q", b.String(), tc.want)
			}
			for _, h := range tc.has {
				if !strings.Contains(b.String(), h) {
					t.Errorf("output lacks %q:\n%s", h, b.String())
				}
			}
		})
	}

	// JSON and CSV read back to what was written.
	as := []store.Anomaly{textAnomaly(long), textAnomaly("second")}
	var j, c strings.Builder
	if err := store.WriteAnomalies(&j, as, store.FormatJSON); err != nil {
		t.Fatal(err)
	}
	var back []store.Anomaly
	if err := json.Unmarshal([]byte(j.String()), &back); err != nil || len(back) != 2 || back[0].Evidence.Seen != long || !back[1].EventTime.Equal(textAt) {
		t.Errorf("json read back: %+v, %v", back, err)
	}
	if err := store.WriteAnomalies(&c, as, store.FormatCSV); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(c.String())).ReadAll()
	if err != nil || len(rows) != 3 || rows[1][8] != long || rows[2][8] != "second" {
		t.Errorf("csv read back: %q, %v", rows, err)
	}
}

func TestReportWriteText(t *testing.T) {
	full := &store.Report{TokenID: "t1", Tenant: "acme", Holder: "billing", Status: "revoked",
		Grant: &store.LedgerEntry{Type: "issued", Time: textAt, Actor: "cordon/admin", KeyID: "k1", Scopes: []string{"invoices:read", "invoices:write"},
			Audience: []string{"invoices"}, Networks: []string{"10.0.0.0/8"}, Environment: "prod",
			Windows: []events.Window{{Days: []string{"mon", "tue"}, Start: "08:00", End: "18:00", Zone: "Europe/Paris"}},
			Device:  "ab12", NotBefore: textAt, Expiry: textAt.Add(48 * time.Hour), RotatedFrom: "t0", BreakGlass: true,
			RequestedIP: "10.20.1.7", RequestedClient: "Boto3/1"},
		Ledger: []store.LedgerEntry{{Type: "issued", Time: textAt},
			{Type: "rotated", Time: textAt.Add(time.Hour), Actor: "cordon/admin", SuccessorID: "t2", GraceUntil: textAt.Add(70 * time.Minute)},
			{Type: "revoked", Time: textAt.Add(2 * time.Hour), Actor: "revoker/up", Reason: "new_network anomaly", AnomalyID: "a1"}},
		Requests: 12, Allowed: 9, Denied: 3, FirstSeen: textAt, LastSeen: textAt.Add(11 * time.Hour),
		Scopes:    []store.UsageCount{{Value: "invoices:read", Requests: 9, Allowed: 9}, {Value: "admin:write", Requests: 3, Denied: 3}},
		Services:  []store.UsageCount{{Value: "invoices", Requests: 12, Allowed: 9, Denied: 3}},
		SourceIPs: []store.UsageCount{{Value: "10.0.0.1", Requests: 9, Allowed: 9}, {Value: "203.0.113.9", Requests: 3, Denied: 3}},
		Clients:   []store.UsageCount{{Value: "", Requests: 12, Allowed: 9, Denied: 3}}, // none reported: no section
		Devices:   []store.UsageCount{{Value: "ab12", Requests: 12, Allowed: 9, Denied: 3}},
		Resources: []store.RouteResources{{Method: "GET", Route: "/invoices/{id}", Requests: 12, Distinct: 3,
			Resources: []store.UsageCount{{Value: "40", Requests: 4, Allowed: 4}, {Value: "41", Requests: 4, Allowed: 3, Denied: 1}, {Value: "42", Requests: 4, Allowed: 2, Denied: 2}}}},
		Denials:         []store.ReasonCount{{Reason: "network_not_allowed", Count: 1}, {Reason: "scope_missing", Count: 2}},
		UnusedScopes:    []string{"invoices:write"},
		UngrantedScopes: []string{"admin:write"},
		Anomalies:       []store.Anomaly{textAnomaly("203.0.113.0/24")},
	}
	full.Hours[9], full.Hours[10] = 10, 2
	var b strings.Builder
	if err := full.WriteText(&b, textAt.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	want := `token t1  acme/billing  status: revoked

MAY (the ledger)
  issued      2026-11-27T09:30:00Z by cordon/admin (key k1)
  requested   from 10.20.1.7 with Boto3/1
  scopes      invoices:read, invoices:write
  audience    invoices
  networks    10.0.0.0/8
  environment prod
  window      mon,tue 08:00-18:00 Europe/Paris
  device      ab12
  valid 2026-11-27T09:30:00Z → 2026-11-29T09:30:00Z (expires in 24h0m0s)
  rotated from t0
  break-glass token
  rotated     2026-11-27T10:30:00Z by cordon/admin → t2 (grace until 2026-11-27T10:40:00Z)
  revoked     2026-11-27T11:30:00Z by revoker/up: new_network anomaly (anomaly a1)

DID (usage)
  12 requests: 9 allowed, 3 denied; first 2026-11-27T09:30:00Z, last 2026-11-27T20:30:00Z
  scopes
      invoices:read  9 requests  9 allowed  0 denied
        admin:write  3 requests  0 allowed  3 denied
  services
      invoices  12 requests  9 allowed  3 denied
  source IPs
         10.0.0.1  9 requests  9 allowed  0 denied
      203.0.113.9  3 requests  0 allowed  3 denied
  devices (client certificate)
      ab12  12 requests  9 allowed  3 denied
  resources by route
    GET /invoices/{id}: 3 distinct in 12 requests
        40  4 requests  4 allowed  0 denied
        41  4 requests  3 allowed  1 denied
        42  4 requests  2 allowed  2 denied
  hours (UTC)
    09h ██████████████████████████████ 10
    10h ██████                         2
  granted, never used: invoices:write  (narrow the grant?)
  asked for, not granted: admin:write

DENIALS (3)
  scope_missing        2
  network_not_allowed  1

ANOMALIES (1)
  2026-11-27T09:30:00Z  new_network      medium   from 203.0.113.9
      seen:     203.0.113.0/24
      baseline: 10.0.0.0/24
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}

	t.Run("unknown token", func(t *testing.T) {
		var b strings.Builder
		r := &store.Report{TokenID: "t9", Status: "unknown"}
		if err := r.WriteText(&b, textAt); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"token t9  -/-  status: unknown", "no issue record", "0 requests: 0 allowed, 0 denied\n",
			"DENIALS (0)\n  none", "ANOMALIES (0)\n  none"} {
			if !strings.Contains(b.String(), want) {
				t.Errorf("report lacks %q:\n%s", want, b.String())
			}
		}
		if strings.Contains(b.String(), "hours") || strings.Contains(b.String(), "never used") {
			t.Errorf("sections without data:\n%s", b.String())
		}
	})

	t.Run("graduated response", func(t *testing.T) {
		until := textAt.Add(time.Hour)
		tests := []struct {
			name string
			e    store.LedgerEntry
			want string
		}{
			{"quarantine by hand, no read scope", store.LedgerEntry{Type: "restricted", Time: textAt, Actor: "ops", Reason: "leak?", Step: events.StepNarrow,
				Until: until, Networks: []string{"10.0.0.0/8"}},
				"  narrowed    2026-11-27T09:30:00Z by ops until 2026-11-27T10:30:00Z: leak? (keeps scopes none from 10.0.0.0/8)\n"},
			{"automatic step-up", store.LedgerEntry{Type: "restricted", Time: textAt, Actor: "revoker/auditor", Reason: "new device", Step: events.StepStepUp,
				Until: until, Rule: "step-up-new-device", Risk: 0.6000000238418579, AnomalyID: "a1"},
				"  step-up     2026-11-27T09:30:00Z by revoker/auditor until 2026-11-27T10:30:00Z: new device (rule step-up-new-device, risk 0.6, anomaly a1)\n"},
			{"shadow", store.LedgerEntry{Type: "restricted", Time: textAt, Actor: "revoker/auditor", Reason: "travel", Step: events.StepShadow,
				Would: events.StepNarrow, Rule: "r"},
				"  shadow      2026-11-27T09:30:00Z by revoker/auditor: would narrow: travel (rule r)\n"},
			{"a step this build does not know", store.LedgerEntry{Type: "restricted", Time: textAt, Actor: "x", Reason: "y", Step: "sandbox"},
				"  restricted  2026-11-27T09:30:00Z by x (step sandbox): y\n"},
			{"release", store.LedgerEntry{Type: "released", Time: textAt, Actor: "ops", Reason: "false alarm", Step: events.StepNarrow},
				"  released    2026-11-27T09:30:00Z by ops: narrow lifted: false alarm\n"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				r := &store.Report{TokenID: "t1", Status: "active", Ledger: []store.LedgerEntry{tc.e}}
				var b strings.Builder
				if err := r.WriteText(&b, textAt); err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(b.String(), "\n"+tc.want) {
					t.Errorf("report lacks %q:\n%s", tc.want, b.String())
				}
			})
		}
	})

	t.Run("busy route", func(t *testing.T) {
		rr := store.RouteResources{Method: "GET", Route: "/files/{name}", Requests: 500, Distinct: 400}
		for i := range 50 {
			rr.Resources = append(rr.Resources, store.UsageCount{Value: fmt.Sprintf("f%02d", i), Requests: 1, Allowed: 1})
		}
		r := &store.Report{TokenID: "t1", Status: "active", Requests: 500, Allowed: 500, Resources: []store.RouteResources{rr}}
		var b strings.Builder
		if err := r.WriteText(&b, textAt); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), "f09  1 requests") || strings.Contains(b.String(), "f10") ||
			!strings.Contains(b.String(), "… and 390 more (-o json lists the 50 busiest)") {
			t.Errorf("a route's resources are not cut to 10:\n%s", b.String())
		}
	})
}
