package simulate

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/yamlnode"
)

// ErrScenario is wrapped by every invalid-scenario error.
var ErrScenario = errors.New("invalid scenario")

// defaultYAML is the default scenario. Its canonical copy, the one to edit,
// is testdata/scenarios/default.yaml at the top of the module; a test keeps
// the two equal (go generate copies it).
//
//go:generate cp ../../testdata/scenarios/default.yaml scenarios/default.yaml
//go:embed scenarios/default.yaml
var defaultYAML []byte

// DefaultScenarioYAML returns the text of the default scenario.
func DefaultScenarioYAML() []byte { return bytes.Clone(defaultYAML) }

// DefaultScenario returns the default scenario of `cordon eval`, read from
// the embedded testdata/scenarios/default.yaml. It panics if that file is
// invalid, which a test rules out.
func DefaultScenario() Scenario {
	sc, err := ParseScenario("default.yaml", defaultYAML)
	if err != nil {
		panic(fmt.Sprintf("the embedded default scenario is invalid: %v", err))
	}
	return sc
}

// LoadScenario reads and validates a scenario file.
func LoadScenario(path string) (Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Scenario{}, fmt.Errorf("scenario: %w", err)
	}
	return ParseScenario(path, b)
}

// maxScenarioBytes bounds a scenario file.
const maxScenarioBytes = 1 << 20

// ParseScenario reads a scenario from YAML (JSON is YAML too). Unknown and
// repeated fields, values of the wrong kind and inconsistent settings are
// errors naming the file, line and field; every error wraps ErrScenario.
func ParseScenario(file string, data []byte) (Scenario, error) {
	d := &decoder{yamlnode.Decoder{File: file, Err: ErrScenario, Suggest: true}}
	if len(data) > maxScenarioBytes {
		return Scenario{}, d.Errorf(nil, "", "the file is %d bytes, at most %d", len(data), maxScenarioBytes)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Scenario{}, d.YAMLError(err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	if yamlnode.IsNull(root) {
		return Scenario{}, d.Errorf(root, "", "the scenario is empty")
	}
	var sc Scenario
	if err := d.decode(root, "", reflect.ValueOf(&sc).Elem()); err != nil {
		return Scenario{}, err
	}
	sc.File = file
	if err := sc.Validate(); err != nil {
		return Scenario{}, err
	}
	return sc, nil
}

// Scenario describes a world of API-token traffic and the behaviours
// injected into it: who calls what, from where, with which client, when,
// how often and over how many resources; how tokens are issued, rotated and
// re-issued; the benign drift that happens in any real deployment; and the
// attacks, each written from a description of a real one. Nothing in it is
// derived from a detector's threshold.
//
// The same scenario (seed included) always yields the same events, ids
// and labels.
type Scenario struct {
	// Name and Description say what the scenario is.
	Name        string `yaml:"name" json:"name"`
	Description string `yaml:"description" json:"description,omitempty"`
	// Seed drives every random choice.
	Seed uint64 `yaml:"seed" json:"seed"`
	// Start is the beginning of simulated time (UTC); Days its length.
	Start time.Time `yaml:"start" json:"start"`
	Days  int       `yaml:"days" json:"days"`
	// AttackAfter is how long every holder attacked as "learnt" has been
	// working before its attack: no such attack starts earlier.
	AttackAfter time.Duration `yaml:"attacks_after" json:"attack_after_ns"`

	// Holders, when not zero, scales the workloads' counts to about this
	// many holders; UsageEvents, when not zero, scales their rates so that
	// normal traffic is about this many usage events; AttacksPerKind, when
	// not zero, replaces every attack's count. They size a scenario for a
	// test without editing it.
	Holders        int `yaml:"holders" json:"holders,omitempty"`
	UsageEvents    int `yaml:"usage_events" json:"usage_events,omitempty"`
	AttacksPerKind int `yaml:"attacks_per_kind" json:"attacks_per_kind,omitempty"`

	// Enforcer is how the enforcers in front of the services behave.
	Enforcer EnforcerSpec `yaml:"enforcer" json:"enforcer"`
	// Tenants share the holders round-robin; tenant i owns 10.(10+i).0.0/16.
	Tenants []string `yaml:"tenants" json:"tenants"`
	// AttackerClients are raw user agents attackers' tools send.
	AttackerClients []string `yaml:"attacker_clients" json:"attacker_clients"`
	// Services are the APIs behind enforcers, with their routes.
	Services []ServiceSpec `yaml:"services" json:"services"`
	// Workloads are classes of holders (calling services).
	Workloads []WorkloadSpec `yaml:"workloads" json:"workloads"`
	// Monitors are token-less probes (uptime checks) of routes.
	Monitors []MonitorSpec `yaml:"monitors" json:"monitors,omitempty"`
	// Benign is the drift injected into normal work.
	Benign []BenignSpec `yaml:"benign" json:"benign"`
	// Attacks are the labelled attacks injected.
	Attacks []AttackSpec `yaml:"attacks" json:"attacks"`

	// File is where the scenario was read from (empty when built in code).
	File string `yaml:"-" json:"file,omitempty"`
}

// EnforcerSpec is how the simulated enforcers decide and report, as the
// real ones are configured (pkg/enforce Options).
type EnforcerSpec struct {
	// KeyID is the signing key of every token; Environment the enforcers'.
	KeyID       string `yaml:"key_id" json:"key_id"`
	Environment string `yaml:"environment" json:"environment"`
	// AggregateInterval: denials naming no token are folded into one usage
	// event per source, reason and key id and interval, with a count.
	AggregateInterval Duration `yaml:"aggregate_interval" json:"aggregate_interval"`
	// ThrottleBurst failed verifications from one source within
	// ThrottleWindow refuse its unverified tokens for ThrottleCooldown.
	ThrottleBurst    int      `yaml:"throttle_burst" json:"throttle_burst"`
	ThrottleWindow   Duration `yaml:"throttle_window" json:"throttle_window"`
	ThrottleCooldown Duration `yaml:"throttle_cooldown" json:"throttle_cooldown"`
}

// ServiceSpec is one API behind an enforcer (its audience name).
type ServiceSpec struct {
	Name string `yaml:"name" json:"name"`
	// IDs is the range of numeric resource ids ({id}-like parameters).
	IDs    Count       `yaml:"ids" json:"ids"`
	Routes []RouteSpec `yaml:"routes" json:"routes"`
	Line   int         `yaml:"-" json:"-"`
}

// RouteSpec is a route as the enforcer's routes file declares it.
type RouteSpec struct {
	// Route is "METHOD /path" with ServeMux parameters: "GET /v1/invoices/{id}",
	// "GET /v1/media/{path...}".
	Route string `yaml:"route" json:"route"`
	Scope string `yaml:"scope" json:"scope"`
	// Sensitive marks an action an attacker is after (exports, admin).
	Sensitive bool `yaml:"sensitive" json:"sensitive,omitempty"`
	Line      int  `yaml:"-" json:"-"`
}

// WorkloadSpec is a class of holders: Count services of one kind.
type WorkloadSpec struct {
	// Class names the holders: class-1, class-2, …
	Class       string `yaml:"class" json:"class"`
	Description string `yaml:"description" json:"description,omitempty"`
	Count       int    `yaml:"count" json:"count"`
	// Rhythm is office (weekdays in Hours, Weekend share on weekends),
	// always (around the clock, busier in the afternoon) or nightly (a job
	// in Hours every night).
	Rhythm  string  `yaml:"rhythm" json:"rhythm"`
	Hours   Hours   `yaml:"hours" json:"hours"`
	Weekend float64 `yaml:"weekend" json:"weekend"`
	// Zones are IANA zones its holders live in (one drawn per holder).
	Zones []string `yaml:"zones" json:"zones"`
	// WindowClaim puts the rhythm's hours in its tokens as a window claim.
	WindowClaim bool `yaml:"window_claim" json:"window_claim,omitempty"`
	// Rate is requests per hour at the rhythm's peak (drawn per holder).
	Rate Count `yaml:"rate" json:"rate"`
	// Fanout is the share of arrivals that fan out into 2–8 calls within
	// seconds (a page of records, a batch).
	Fanout float64 `yaml:"fanout" json:"fanout"`
	// Networks per holder (IPv4 /24s; an IPv6 /64 with probability IPv6)
	// and Addresses per network (pods, NAT egress).
	Networks  Count   `yaml:"networks" json:"networks"`
	Addresses Count   `yaml:"addresses" json:"addresses"`
	IPv6      float64 `yaml:"ipv6" json:"ipv6,omitempty"`
	// NetworkClaim is what its tokens' networks claim: exact (its own
	// networks), tenant (the tenant's /16) or none.
	NetworkClaim string `yaml:"network_claim" json:"network_claim"`
	// Clients are raw user agents; each holder uses one.
	Clients []string `yaml:"clients" json:"clients"`
	// IssuedBy is who requests its tokens: self (the workload, from its own
	// address), ci (the tenant's CI runners) or automation (a NATS
	// command: the issuer records no request context).
	IssuedBy string    `yaml:"issued_by" json:"issued_by"`
	Tokens   TokenSpec `yaml:"tokens" json:"tokens"`
	// Scopes its tokens carry; Ceiling further scopes its policy allows
	// (what someone minting a token for it could ask for).
	Scopes  []string `yaml:"scopes" json:"scopes"`
	Ceiling []string `yaml:"ceiling" json:"ceiling,omitempty"`
	// Calls are its usual actions and their weights.
	Calls []CallSpec `yaml:"calls" json:"calls"`
	// Resources is its working set: how many distinct resources of each
	// service it touches (drawn per holder); NewResources the share of
	// requests on a resource outside it.
	Resources    Count   `yaml:"resources" json:"resources"`
	NewResources float64 `yaml:"new_resources" json:"new_resources"`
	// Misconfigured is the share of its requests on a route of its
	// audience it holds no scope for (denied scope_missing).
	Misconfigured float64 `yaml:"misconfigured" json:"misconfigured"`
	Line          int     `yaml:"-" json:"-"`
}

// TokenSpec is a workload's token lifecycle.
type TokenSpec struct {
	// TTL is the lifetime of each token.
	TTL Duration `yaml:"ttl" json:"ttl"`
	// Renew is rotate (a successor every RotateEvery, the predecessor
	// revoked after Grace) or per_run (a nightly job gets a fresh token at
	// the start of each run and lets it expire).
	Renew       string   `yaml:"renew" json:"renew"`
	RotateEvery Span     `yaml:"rotate_every" json:"rotate_every"`
	Grace       Duration `yaml:"grace" json:"grace"`
	// Late is the share of rotations that come only after the token
	// expired (clients are denied "expired" for a few minutes).
	Late float64 `yaml:"late" json:"late"`
	// Stragglers is the probability that a client keeps presenting the
	// old token a few times after its revocation.
	Stragglers float64 `yaml:"stragglers" json:"stragglers"`
}

// CallSpec is one usual action of a workload.
type CallSpec struct {
	Route  string  `yaml:"route" json:"route"`
	Weight float64 `yaml:"weight" json:"weight"`
}

// MonitorSpec is a token-less probe of a route: an uptime checker that
// expects the 401 (denied "missing").
type MonitorSpec struct {
	Name  string   `yaml:"name" json:"name"`
	Route string   `yaml:"route" json:"route"`
	Every Duration `yaml:"every" json:"every"`
	From  string   `yaml:"from" json:"from"`
	Agent string   `yaml:"agent" json:"agent"`
	Line  int      `yaml:"-" json:"-"`
}

// Benign drift kinds.
const (
	DriftNetworkMove    = "network_move"
	DriftBackfill       = "backfill"
	DriftNewRoute       = "new_route"
	DriftDaylightSaving = "daylight_saving"
	DriftRotation       = "rotation_reissue"
	DriftNewHolder      = "new_holder"
	DriftBrokenClient   = "broken_client"
)

// Steady is the benign variant of everything no drift covers.
const Steady = "steady"

var driftKinds = []string{DriftNetworkMove, DriftBackfill, DriftNewRoute, DriftDaylightSaving, DriftRotation, DriftNewHolder, DriftBrokenClient}

// BenignSpec is one benign drift: a change any real deployment sees.
// False alarms are counted per variant, over the holders and times its
// Exposures cover.
type BenignSpec struct {
	// Variant names it in the results; Kind is one of the Drift… kinds.
	Variant     string `yaml:"variant" json:"variant"`
	Kind        string `yaml:"kind" json:"kind"`
	Description string `yaml:"description" json:"description"`
	// Holders is how many holders it happens to (network_move, backfill,
	// new_route, new_holder, broken_client); Class restricts them to a
	// workload class (new_holder: the class of the new holders).
	Holders int    `yaml:"holders" json:"holders,omitempty"`
	Class   string `yaml:"class" json:"class,omitempty"`
	// At is when it happens, as an offset from the start (kept a day
	// before the end when Days shortens the scenario).
	At Span `yaml:"at" json:"at"`
	// Over is how long it lasts (backfill, broken_client).
	Over Span `yaml:"over" json:"over"`
	// Volume and Breadth multiply the holder's rate and working set
	// (backfill).
	Volume  float64 `yaml:"volume" json:"volume,omitempty"`
	Breadth float64 `yaml:"breadth" json:"breadth,omitempty"`
	// Route and Scope are the route a deployment adds (new_route) and the
	// scope it requires; Share the part of the holder's traffic it takes.
	Route string  `yaml:"route" json:"route,omitempty"`
	Scope string  `yaml:"scope" json:"scope,omitempty"`
	Share float64 `yaml:"share" json:"share,omitempty"`
	// Every is the spacing of a broken client's retries.
	Every Span `yaml:"every" json:"every"`
	// Redeploys is how many re-issues (a fresh token, not a rotation) a
	// holder gets per week (rotation_reissue).
	Redeploys float64 `yaml:"redeploys_per_week" json:"redeploys_per_week,omitempty"`
	// Within is how long after the change its exposure lasts
	// (daylight_saving, rotation_reissue, and the tail of the others).
	Within Duration `yaml:"within" json:"within"`
	Line   int      `yaml:"-" json:"-"`
}

// Attack targets, tokens, sources, clients, times and actions.
const (
	TargetLearnt   = "learnt"
	TargetLearning = "learning"

	TokenCurrent              = "current"
	TokenRevoked              = "revoked"
	TokenRevokedBeforeHistory = "revoked_before_history"
	TokenMinted               = "minted"
	TokenNone                 = "none"

	FromNewNetwork    = "new_network"
	FromNewNetworks   = "new_networks"
	FromHolderAddress = "holder_address"
	FromHolderNetwork = "holder_network"

	ClientAttacker = "attacker"
	ClientHolder   = "holder"

	WhenOffHours = "off_hours"
	WhenActive   = "active"
	WhenAny      = "any"

	ActUsual         = "usual"
	ActUsualReads    = "usual_reads"
	ActUnseenAllowed = "unseen_allowed"
	ActProbe         = "probe"
	ActSensitive     = "sensitive"
	ActSweepHeld     = "sweep_held"
	ActSweepUnheld   = "sweep_unheld"

	IDsUsual      = "usual"
	IDsRandom     = "random"
	IDsSequential = "sequential"
)

var (
	attackTargets = []string{TargetLearnt, TargetLearning}
	attackTokens  = []string{TokenCurrent, TokenRevoked, TokenRevokedBeforeHistory, TokenMinted, TokenNone}
	attackFroms   = []string{FromNewNetwork, FromNewNetworks, FromHolderAddress, FromHolderNetwork}
	attackClients = []string{ClientAttacker, ClientHolder}
	attackWhens   = []string{WhenOffHours, WhenActive, WhenAny}
	attackActions = []string{ActUsual, ActUsualReads, ActUnseenAllowed, ActProbe, ActSensitive, ActSweepHeld, ActSweepUnheld}
	attackIDs     = []string{IDsUsual, IDsRandom, IDsSequential}
	forgedReasons = []string{events.ReasonMalformed, events.ReasonBadSignature, events.ReasonUnknownKey}
)

// AttackSpec is one kind of attack, written from a description of a real
// one: what the attacker holds, where from, with which tool, when, how
// much and what they do.
type AttackSpec struct {
	// Variant names it in the results; Description says what happens and
	// Reference where the pattern was described.
	Variant     string `yaml:"variant" json:"variant"`
	Description string `yaml:"description" json:"description"`
	Reference   string `yaml:"reference" json:"reference,omitempty"`
	// Count is how many are injected, each on its own token.
	Count int `yaml:"count" json:"count"`
	// Target is a learnt holder (working for at least AttackAfter) or a
	// learning one (a holder deployed during the scenario, attacked within
	// After of its first token).
	Target string `yaml:"target" json:"target"`
	// Token is what the attacker presents: the holder's current token, a
	// revoked one (After its revocation), one revoked before the scenario
	// began, tokens minted for the holder (Tokens of them, requested from
	// the attacker) or none (forged strings: Forged is the enforcer's
	// verdict, Varied whether each request carries a different one).
	Token  string `yaml:"token" json:"token"`
	Tokens Count  `yaml:"tokens" json:"tokens"`
	Forged string `yaml:"forged" json:"forged,omitempty"`
	Varied bool   `yaml:"varied" json:"varied,omitempty"`
	// From is where the requests come from; Networks how many for
	// new_networks.
	From     string `yaml:"from" json:"from"`
	Networks Count  `yaml:"networks" json:"networks"`
	// Client is the attacker's tool or the holder's own client.
	Client string `yaml:"client" json:"client"`
	// When is off_hours (the holder's quietest hours), active or any.
	When string `yaml:"when" json:"when"`
	// Requests per token (per network for new_networks), spread uniformly
	// Over a duration or one Every interval.
	Requests Count `yaml:"requests" json:"requests"`
	Over     Span  `yaml:"over" json:"over"`
	Every    Span  `yaml:"every" json:"every"`
	// Actions is what the requests do; IDs which resources they name.
	Actions string `yaml:"actions" json:"actions"`
	IDs     string `yaml:"ids" json:"ids"`
	// After: revoked — delay since the revocation; learning — delay since
	// the holder's first token.
	After Span `yaml:"after" json:"after"`
	// DetectWithin bounds detection: an anomaly counts only when its event
	// comes within this long of the attack's start (default: the attack's
	// length plus 15 minutes).
	DetectWithin Duration `yaml:"detect_within" json:"detect_within,omitempty"`
	Line         int      `yaml:"-" json:"-"`
}

// End is the end of simulated time.
func (s Scenario) End() time.Time { return s.Start.Add(time.Duration(s.Days) * 24 * time.Hour) }

var (
	nameRE  = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,39}$`)
	scopeRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*:[a-z][a-z0-9_-]*$`)
	methods = []string{"GET", "POST", "PUT", "PATCH", "DELETE"}
)

// verr is a validation error at a line and field.
func (s *Scenario) verr(line int, field, format string, args ...any) error {
	return &yamlnode.Error{File: s.File, Line: line, Field: field, Msg: fmt.Sprintf(format, args...), Err: ErrScenario}
}

// Validate reports the first unusable setting.
func (s *Scenario) Validate() error {
	type check struct {
		ok    bool
		field string
		want  string
		got   any
	}
	top := []check{
		{nameRE.MatchString(s.Name), "name", "a lowercase name", s.Name},
		{!s.Start.IsZero(), "start", "set", s.Start},
		{s.Days >= 2 && s.Days <= 366, "days", "between 2 and 366", s.Days},
		{s.AttackAfter >= 0 && s.AttackAfter < time.Duration(s.Days-1)*24*time.Hour, "attacks_after", "in [0, days-1)", formatDuration(s.AttackAfter)},
		{s.Holders >= 0 && s.Holders <= 10_000, "holders", "between 0 (as described) and 10000", s.Holders},
		{s.UsageEvents >= 0 && s.UsageEvents <= 50_000_000, "usage_events", "between 0 (as described) and 50000000", s.UsageEvents},
		{s.AttacksPerKind >= 0 && s.AttacksPerKind <= 100, "attacks_per_kind", "between 0 (as described) and 100", s.AttacksPerKind},
		{events.ValidateName(s.Enforcer.KeyID) == nil, "enforcer.key_id", "a name", s.Enforcer.KeyID},
		{s.Enforcer.AggregateInterval.D() >= time.Millisecond, "enforcer.aggregate_interval", "at least 1ms", s.Enforcer.AggregateInterval},
		{s.Enforcer.ThrottleBurst >= 1, "enforcer.throttle_burst", "at least 1", s.Enforcer.ThrottleBurst},
		{s.Enforcer.ThrottleWindow > 0 && s.Enforcer.ThrottleCooldown > 0, "enforcer.throttle_window", "a window and a cooldown", s.Enforcer.ThrottleWindow},
		{len(s.Tenants) >= 1 && len(s.Tenants) <= 200, "tenants", "between 1 and 200", len(s.Tenants)},
		{len(s.AttackerClients) >= 1, "attacker_clients", "at least one user agent", len(s.AttackerClients)},
		{len(s.Services) >= 1, "services", "at least one", len(s.Services)},
		{len(s.Workloads) >= 1, "workloads", "at least one", len(s.Workloads)},
	}
	for _, c := range top {
		if !c.ok {
			return s.verr(0, c.field, "want %s, got %v", c.want, c.got)
		}
	}
	for i, t := range s.Tenants {
		if events.ValidateName(t) != nil || !nameRE.MatchString(t) {
			return s.verr(0, fmt.Sprintf("tenants[%d]", i), "%q is not a tenant name", t)
		} else if slices.Index(s.Tenants, t) != i {
			return s.verr(0, fmt.Sprintf("tenants[%d]", i), "duplicate tenant %q", t)
		}
	}
	routes := map[string]string{} // "GET /path" → scope
	services := map[string]bool{}
	for i, sv := range s.Services {
		p := fmt.Sprintf("services[%d]", i)
		if events.ValidateName(sv.Name) != nil {
			return s.verr(sv.Line, p+".name", "%q is not a service name", sv.Name)
		}
		if services[sv.Name] {
			return s.verr(sv.Line, p+".name", "duplicate service %q", sv.Name)
		}
		services[sv.Name] = true
		if sv.IDs.Min < 1 || sv.IDs.Max-sv.IDs.Min < 1000 {
			return s.verr(sv.Line, p+".ids", "want a range of at least 1000 ids from 1, got %s", sv.IDs)
		}
		if len(sv.Routes) == 0 {
			return s.verr(sv.Line, p+".routes", "a service needs routes")
		}
		for j, r := range sv.Routes {
			rp := fmt.Sprintf("%s.routes[%d]", p, j)
			if err := checkRoute(r.Route); err != nil {
				return s.verr(r.Line, rp+".route", "%v", err)
			}
			if !scopeRE.MatchString(r.Scope) {
				return s.verr(r.Line, rp+".scope", "%q is not a resource:action scope", r.Scope)
			}
			if _, dup := routes[r.Route]; dup {
				return s.verr(r.Line, rp+".route", "route %q is declared twice", r.Route)
			}
			routes[r.Route] = r.Scope
		}
	}
	classes := map[string]bool{}
	for i := range s.Workloads {
		if err := s.validateWorkload(i, routes, classes); err != nil {
			return err
		}
	}
	for i, m := range s.Monitors {
		p := fmt.Sprintf("monitors[%d]", i)
		if _, ok := routes[m.Route]; !ok {
			return s.verr(m.Line, p+".route", "%q is not a route of any service", m.Route)
		}
		if m.Every.D() < time.Second {
			return s.verr(m.Line, p+".every", "want at least 1s, got %s", m.Every)
		}
		if _, err := netip.ParseAddr(m.From); err != nil {
			return s.verr(m.Line, p+".from", "%q is not an IP address", m.From)
		}
	}
	variants := map[string]bool{Steady: true}
	for i := range s.Benign {
		if err := s.validateBenign(i, variants, classes, services); err != nil {
			return err
		}
	}
	for i := range s.Attacks {
		if err := s.validateAttack(i, variants); err != nil {
			return err
		}
	}
	return nil
}

// checkRoute checks a "METHOD /path" route with ServeMux parameters.
func checkRoute(r string) error {
	m, path, ok := strings.Cut(r, " ")
	if !ok || !slices.Contains(methods, m) {
		return fmt.Errorf("%q: want \"METHOD /path\" with METHOD one of %s", r, strings.Join(methods, ", "))
	}
	if !strings.HasPrefix(path, "/") || strings.Contains(path, "//") || strings.ContainsAny(path, " ?#%\\") {
		return fmt.Errorf("%q: the path must be absolute and plain", r)
	}
	for i, seg := range strings.Split(path[1:], "/") {
		if strings.HasPrefix(seg, "{") != strings.HasSuffix(seg, "}") {
			return fmt.Errorf("%q: segment %d: a parameter is a whole segment, {name}", r, i+1)
		}
		if strings.HasSuffix(seg, "...}") && i != strings.Count(path[1:], "/") {
			return fmt.Errorf("%q: {name...} must be the last segment", r)
		}
	}
	return nil
}

func (s *Scenario) validateWorkload(i int, routes map[string]string, classes map[string]bool) error {
	w := &s.Workloads[i]
	p := fmt.Sprintf("workloads[%d]", i)
	bad := func(field, format string, args ...any) error { return s.verr(w.Line, p+"."+field, format, args...) }
	switch {
	case !nameRE.MatchString(w.Class):
		return bad("class", "%q is not a lowercase name", w.Class)
	case classes[w.Class]:
		return bad("class", "duplicate class %q", w.Class)
	case w.Count < 1 || w.Count > 10_000:
		return bad("count", "want between 1 and 10000, got %d", w.Count)
	case !slices.Contains([]string{rhythmOffice, rhythmAlways, rhythmNightly}, w.Rhythm):
		return bad("rhythm", "%q is not one of office, always, nightly", w.Rhythm)
	case w.Rhythm != rhythmAlways && w.Hours.IsZero():
		return bad("hours", "an %s rhythm needs its hours (such as 08:00-19:00)", w.Rhythm)
	case w.Weekend < 0 || w.Weekend > 1:
		return bad("weekend", "want a share in [0, 1], got %v", w.Weekend)
	case len(w.Zones) == 0:
		return bad("zones", "want at least one IANA zone")
	case w.Rate.Min < 1 || w.Rate.Max > 1_000_000:
		return bad("rate", "want requests per hour between 1 and 1000000, got %s", w.Rate)
	case w.Fanout < 0 || w.Fanout > 0.5:
		return bad("fanout", "want a share in [0, 0.5], got %v", w.Fanout)
	case w.Networks.Min < 1 || w.Networks.Max > 4:
		return bad("networks", "want between 1 and 4, got %s", w.Networks)
	case w.Addresses.Min < 1 || w.Addresses.Max > 64:
		return bad("addresses", "want between 1 and 64, got %s", w.Addresses)
	case w.IPv6 < 0 || w.IPv6 > 1:
		return bad("ipv6", "want a share in [0, 1], got %v", w.IPv6)
	case !slices.Contains([]string{claimExact, claimTenant, claimNone}, w.NetworkClaim):
		return bad("network_claim", "%q is not one of exact, tenant, none", w.NetworkClaim)
	case len(w.Clients) == 0:
		return bad("clients", "want at least one user agent")
	case !slices.Contains([]string{issuedSelf, issuedCI, issuedAutomation}, w.IssuedBy):
		return bad("issued_by", "%q is not one of self, ci, automation", w.IssuedBy)
	case w.Tokens.TTL.D() < time.Hour:
		return bad("tokens.ttl", "want at least 1h, got %s", w.Tokens.TTL)
	case !slices.Contains([]string{renewRotate, renewPerRun}, w.Tokens.Renew):
		return bad("tokens.renew", "%q is not one of rotate, per_run", w.Tokens.Renew)
	case w.Tokens.Renew == renewPerRun && w.Rhythm != rhythmNightly:
		return bad("tokens.renew", "per_run needs a nightly rhythm")
	case w.Tokens.Renew == renewRotate && (w.Tokens.RotateEvery.Min < time.Hour || w.Tokens.RotateEvery.Max >= w.Tokens.TTL.D()):
		return bad("tokens.rotate_every", "want at least 1h and less than the ttl %s, got %s", w.Tokens.TTL, w.Tokens.RotateEvery)
	case w.Tokens.Grace < 0 || w.Tokens.Grace.D() >= w.Tokens.RotateEvery.Min/2 && w.Tokens.Renew == renewRotate:
		return bad("tokens.grace", "want less than half of rotate_every, got %s", w.Tokens.Grace)
	case w.Tokens.Late < 0 || w.Tokens.Late > 1 || w.Tokens.Stragglers < 0 || w.Tokens.Stragglers > 1:
		return bad("tokens", "late and stragglers are shares in [0, 1]")
	case len(w.Scopes) == 0:
		return bad("scopes", "want at least one scope")
	case len(w.Calls) == 0:
		return bad("calls", "want at least one usual action")
	case w.Resources.Min < 1:
		return bad("resources", "want a working set of at least 1, got %s", w.Resources)
	case w.NewResources < 0 || w.NewResources > 1:
		return bad("new_resources", "want a share in [0, 1], got %v", w.NewResources)
	case w.Misconfigured < 0 || w.Misconfigured > 0.5:
		return bad("misconfigured", "want a share in [0, 0.5], got %v", w.Misconfigured)
	}
	classes[w.Class] = true
	for j, z := range w.Zones {
		if _, err := time.LoadLocation(z); err != nil {
			return bad(fmt.Sprintf("zones[%d]", j), "%q is not an IANA time zone", z)
		}
	}
	for j, sc := range append(slices.Clone(w.Scopes), w.Ceiling...) {
		if !scopeRE.MatchString(sc) {
			return bad(fmt.Sprintf("scopes[%d]", j), "%q is not a resource:action scope", sc)
		}
	}
	for j, c := range w.Calls {
		scope, ok := routes[c.Route]
		switch {
		case !ok:
			return bad(fmt.Sprintf("calls[%d].route", j), "%q is not a route of any service", c.Route)
		case !slices.Contains(w.Scopes, scope):
			return bad(fmt.Sprintf("calls[%d].route", j), "%q needs scope %s, which the class's tokens do not carry", c.Route, scope)
		case c.Weight <= 0:
			return bad(fmt.Sprintf("calls[%d].weight", j), "want a positive weight, got %v", c.Weight)
		}
	}
	return nil
}

func (s *Scenario) validateBenign(i int, variants, classes, services map[string]bool) error {
	b := &s.Benign[i]
	p := fmt.Sprintf("benign[%d]", i)
	bad := func(field, format string, args ...any) error { return s.verr(b.Line, p+"."+field, format, args...) }
	if !nameRE.MatchString(b.Variant) {
		return bad("variant", "%q is not a lowercase name", b.Variant)
	}
	if variants[b.Variant] {
		return bad("variant", "duplicate variant %q", b.Variant)
	}
	variants[b.Variant] = true
	if !slices.Contains(driftKinds, b.Kind) {
		return bad("kind", "%q is not one of %s", b.Kind, strings.Join(driftKinds, ", "))
	}
	if b.Class != "" && !classes[b.Class] {
		return bad("class", "%q is not a workload class", b.Class)
	}
	needsHolders := b.Kind != DriftDaylightSaving && b.Kind != DriftRotation
	switch {
	case strings.TrimSpace(b.Description) == "":
		return bad("description", "say what happens: the scenario is read by people")
	case needsHolders && (b.Holders < 1 || b.Holders > 1000):
		return bad("holders", "want between 1 and 1000, got %d", b.Holders)
	case needsHolders && b.At.IsZero():
		return bad("at", "say when it happens, as an offset from the start (such as 6d-13d; kept a day before the end of a shorter run)")
	case (b.Kind == DriftBackfill || b.Kind == DriftBrokenClient) && b.Over.Min <= 0:
		return bad("over", "a %s needs a length (such as 2h-6h)", b.Kind)
	case b.Kind == DriftBackfill && (b.Volume < 1 || b.Breadth < 1):
		return bad("volume", "a backfill multiplies volume and breadth by at least 1")
	case b.Kind == DriftBrokenClient && b.Every.Min < 100*time.Millisecond:
		return bad("every", "want the spacing of the retries, at least 100ms, got %s", b.Every)
	case b.Kind == DriftNewRoute && (checkRoute(b.Route) != nil || !scopeRE.MatchString(b.Scope) || b.Share <= 0 || b.Share >= 1):
		return bad("route", "a new route needs route (\"GET /path\"), scope and a share in (0, 1)")
	case b.Kind == DriftRotation && (b.Redeploys < 0 || b.Redeploys > 50):
		return bad("redeploys_per_week", "want between 0 and 50, got %v", b.Redeploys)
	case (b.Kind == DriftDaylightSaving || b.Kind == DriftRotation) && b.Within <= 0:
		return bad("within", "a %s exposure needs its length (such as 2h)", b.Kind)
	}
	if b.Kind == DriftNewRoute {
		svc := routeService(s, b.Route)
		if svc == "" {
			return bad("route", "%q: its path must start like the routes of one service", b.Route)
		}
		if !services[svc] {
			return bad("route", "%q: unknown service %q", b.Route, svc)
		}
	}
	return nil
}

// routeService returns the service whose routes share the longest path
// prefix with route: where a deployment adds it.
func routeService(s *Scenario, route string) string {
	_, path, _ := strings.Cut(route, " ")
	best, bestLen := "", 0
	for _, sv := range s.Services {
		for _, r := range sv.Routes {
			_, p, _ := strings.Cut(r.Route, " ")
			n := commonSegments(p, path)
			if n > bestLen {
				best, bestLen = sv.Name, n
			}
		}
	}
	if bestLen < 2 {
		return ""
	}
	return best
}

func commonSegments(a, b string) int {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	n := 0
	for n < len(as) && n < len(bs) && as[n] == bs[n] {
		n++
	}
	return n
}

func (s *Scenario) validateAttack(i int, variants map[string]bool) error {
	a := &s.Attacks[i]
	p := fmt.Sprintf("attacks[%d]", i)
	bad := func(field, format string, args ...any) error { return s.verr(a.Line, p+"."+field, format, args...) }
	oneOf := func(field, v string, set []string) error {
		if !slices.Contains(set, v) {
			return bad(field, "%q is not one of %s", v, strings.Join(set, ", "))
		}
		return nil
	}
	if !nameRE.MatchString(a.Variant) {
		return bad("variant", "%q is not a lowercase name", a.Variant)
	}
	if variants[a.Variant] {
		return bad("variant", "duplicate variant %q", a.Variant)
	}
	variants[a.Variant] = true
	for _, c := range []struct {
		field, v string
		set      []string
	}{
		{"target", a.Target, attackTargets}, {"token", a.Token, attackTokens}, {"from", a.From, attackFroms},
		{"client", a.Client, attackClients}, {"when", a.When, attackWhens},
	} {
		if err := oneOf(c.field, c.v, c.set); err != nil {
			return err
		}
	}
	if a.Token == TokenNone {
		if err := oneOf("forged", a.Forged, forgedReasons); err != nil {
			return err
		}
	} else {
		if err := oneOf("actions", a.Actions, attackActions); err != nil {
			return err
		}
		if err := oneOf("ids", a.IDs, attackIDs); err != nil {
			return err
		}
	}
	switch {
	case strings.TrimSpace(a.Description) == "":
		return bad("description", "say what the attacker does: the scenario is read by people")
	case a.Count < 1 || a.Count > 100:
		return bad("count", "want between 1 and 100, got %d", a.Count)
	case a.Requests.Min < 1 || a.Requests.Max > 100_000:
		return bad("requests", "want between 1 and 100000, got %s", a.Requests)
	case a.Over.IsZero() == a.Every.IsZero() && a.Requests.Max > 1:
		return bad("over", "give either over (spread) or every (spacing)")
	case a.Token == TokenMinted && a.Tokens.Min < 1:
		return bad("tokens", "minted tokens: say how many (such as 3-5)")
	case a.Token == TokenNone && a.From != FromNewNetwork && a.From != FromHolderAddress:
		return bad("from", "forged tokens come from new_network or holder_address")
	case a.From == FromNewNetworks && a.Networks.Min < 2:
		return bad("networks", "new_networks: say how many (at least 2)")
	case a.Target == TargetLearning && a.After.IsZero():
		return bad("after", "a learning target is attacked some time after its first token (such as 1h-12h)")
	case a.Token == TokenRevoked && a.After.IsZero():
		return bad("after", "a revoked token is used some time after its revocation (such as 2h-30h)")
	case a.Target == TargetLearning && (a.Token != TokenCurrent && a.Token != TokenMinted):
		return bad("token", "a learning holder has no old tokens: current or minted")
	}
	return nil
}
