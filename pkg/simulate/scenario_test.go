package simulate_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/simulate"
	"github.com/cordonhq/cordon/pkg/yamlnode"
)

// TestDefaultScenarioIsCanonical: the embedded default is the file under
// testdata/scenarios, byte for byte (go generate ./pkg/simulate copies it).
func TestDefaultScenarioIsCanonical(t *testing.T) {
	want, err := os.ReadFile("../../testdata/scenarios/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(simulate.DefaultScenarioYAML(), want) {
		t.Fatal("pkg/simulate/scenarios/default.yaml differs from testdata/scenarios/default.yaml: run go generate ./pkg/simulate")
	}
	sc := simulate.DefaultScenario()
	if sc.Name != "default" || len(sc.Attacks) == 0 || len(sc.Benign) == 0 {
		t.Fatalf("default scenario: %+v", sc)
	}
}

// TestScenarioFiles: every scenario under testdata/scenarios parses.
func TestScenarioFiles(t *testing.T) {
	files, err := filepath.Glob("../../testdata/scenarios/*.yaml")
	if err != nil || len(files) < 2 {
		t.Fatalf("scenario files: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			sc, err := simulate.LoadScenario(f)
			if err != nil {
				t.Fatal(err)
			}
			if sc.File != f {
				t.Errorf("File = %q", sc.File)
			}
		})
	}
}

// minimal is a valid scenario the error cases below break one line of.
const minimal = `name: mini
seed: 3
start: 2026-10-19T00:00:00Z
days: 6
attacks_after: 3d
enforcer: {key_id: k1, environment: prod, aggregate_interval: 1s, throttle_burst: 32, throttle_window: 10s, throttle_cooldown: 30s}
tenants: [acme]
attacker_clients: [curl/8.5.0]
services:
  - name: invoices-api
    ids: 1-10000
    routes:
      - {route: "GET /v1/invoices/{id}", scope: "invoices:read"}
      - {route: "DELETE /v1/invoices/{id}", scope: "invoices:admin", sensitive: true}
workloads:
  - class: billing
    count: 4
    rhythm: always
    zones: [UTC]
    rate: 10-20
    networks: 1
    addresses: 2
    network_claim: exact
    clients: [Go-http-client/1.1]
    issued_by: self
    tokens: {ttl: 24h, renew: rotate, rotate_every: 20h, grace: 10m}
    scopes: [invoices:read]
    calls:
      - {route: "GET /v1/invoices/{id}", weight: 1}
    resources: 50
benign:
  - variant: moves
    kind: network_move
    description: a move
    holders: 1
    at: 2d
attacks:
  - variant: leak
    description: a leak
    count: 1
    target: learnt
    token: current
    from: new_network
    client: attacker
    when: any
    requests: 5
    over: 5m
    actions: usual_reads
    ids: usual
`

func TestParseScenario(t *testing.T) {
	sc, err := simulate.ParseScenario("mini.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	w := sc.Workloads[0]
	if w.Rate != (simulate.Count{Min: 10, Max: 20}) || w.Tokens.RotateEvery.Min != 20*time.Hour || sc.AttackAfter != 72*time.Hour ||
		sc.Attacks[0].Over.Max != 5*time.Minute || sc.Enforcer.ThrottleCooldown.D() != 30*time.Second || w.Line != 16 {
		t.Fatalf("decoded %+v / %+v", sc, w)
	}
	ds, err := simulate.Generate(sc)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Attacks) != 1 || ds.UsageEvents == 0 {
		t.Fatalf("generated %d attacks, %d usage events", len(ds.Attacks), ds.UsageEvents)
	}
}

func TestParseScenarioErrors(t *testing.T) {
	tests := []struct {
		name, old, new string
		want           string // file:line: field: message part
	}{
		{"unknown field with a suggestion", "    rate: 10-20", "    rates: 10-20", `mini.yaml:20: workloads[0]: unknown field "rates" (did you mean "rate"?)`},
		{"wrong kind", "days: 6", "days: six", "mini.yaml:4: days: want a number"},
		{"bad duration", "attacks_after: 3d", "attacks_after: 3 days", `mini.yaml:5: attacks_after: "3 days" is not a duration`},
		{"inverted range", "    rate: 10-20", "    rate: 20-10", `mini.yaml:20: workloads[0].rate: "20-10": the end of the range is below its start`},
		{"bad route", `"GET /v1/invoices/{id}", scope: "invoices:read"}`, `"FETCH /v1/invoices/{id}", scope: "invoices:read"}`, "mini.yaml:13: services[0].routes[0].route"},
		{"call of an unknown route", `- {route: "GET /v1/invoices/{id}", weight: 1}`, `- {route: "GET /v1/bills/{id}", weight: 1}`, `workloads[0].calls[0].route: "GET /v1/bills/{id}" is not a route of any service`},
		{"call without its scope", "    scopes: [invoices:read]", "    scopes: [invoices:write]", "needs scope invoices:read, which the class's tokens do not carry"},
		{"unknown zone", "    zones: [UTC]", "    zones: [Mars/Olympus]", `workloads[0].zones[0]: "Mars/Olympus" is not an IANA time zone`},
		{"unknown attack token", "    token: current", "    token: borrowed", `attacks[0].token: "borrowed" is not one of current`},
		{"attack without description", "    description: a leak", "    description: \"  \"", "attacks[0].description: say what the attacker does"},
		{"duplicate variant", "  - variant: leak", "  - variant: moves", `attacks[0].variant: duplicate variant "moves"`},
		{"unknown drift kind", "    kind: network_move", "    kind: weather", `benign[0].kind: "weather" is not one of`},
		{"rotation longer than the ttl", "rotate_every: 20h", "rotate_every: 30h", "workloads[0].tokens.rotate_every: want at least 1h and less than the ttl"},
		{"spread and spacing both", "    over: 5m", "    over: 5m\n    every: 1m", "attacks[0].over: give either over (spread) or every (spacing)"},
		{"not yaml", "name: mini", "name: [mini", "mini.yaml"},
		{"set twice", "seed: 3", "seed: 3\nseed: 4", `field "seed" is set twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(minimal, tt.old) {
				t.Fatalf("the minimal scenario has no %q", tt.old)
			}
			_, err := simulate.ParseScenario("mini.yaml", []byte(strings.Replace(minimal, tt.old, tt.new, 1)))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, simulate.ErrScenario) {
				t.Errorf("error %v does not wrap ErrScenario", err)
			}
			var ye *yamlnode.Error
			if !errors.As(err, &ye) || ye.File != "mini.yaml" {
				t.Errorf("error %v does not name the file", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestGenerateRefusesAnInvalidScenario: a scenario built in code is
// validated too.
func TestGenerateRefusesAnInvalidScenario(t *testing.T) {
	for _, mod := range []func(*simulate.Scenario){
		func(s *simulate.Scenario) { s.Days = 1 },
		func(s *simulate.Scenario) { s.AttackAfter = time.Duration(s.Days) * 24 * time.Hour },
		func(s *simulate.Scenario) { s.Holders = -1 },
	} {
		sc := simulate.DefaultScenario()
		mod(&sc)
		if _, err := simulate.Generate(sc); !errors.Is(err, simulate.ErrScenario) {
			t.Errorf("Generate: %v, want ErrScenario", err)
		}
	}
}

// FuzzParseScenario: whatever the bytes, ParseScenario returns a scenario
// or an ErrScenario; it never panics. Seeds are in testdata/fuzz.
func FuzzParseScenario(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add(simulate.DefaultScenarioYAML())
	f.Add([]byte("name: x\ndays: 1e99\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := simulate.ParseScenario("fuzz.yaml", data)
		if err != nil {
			if !errors.Is(err, simulate.ErrScenario) {
				t.Fatalf("error %v does not wrap ErrScenario", err)
			}
			return
		}
		if err := sc.Validate(); err != nil {
			t.Fatalf("parsed scenario does not validate: %v", err)
		}
	})
}
