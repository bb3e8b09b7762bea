package auditor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/token"
)

// Subjects of the analyst API (NATS request/reply, JSON). chDB can be open
// in one process only, so analysts query the store through the auditor
// that owns it.
const (
	// SubjectCmdSQL runs one read-only SQL statement (SQLRequest).
	SubjectCmdSQL = events.SubjectCmdSQL
	// SubjectCmdAnomalies lists recent anomalies (AnomaliesRequest).
	SubjectCmdAnomalies = events.SubjectCmdAnomalies
	// SubjectCmdReport reports on one token (ReportRequest).
	SubjectCmdReport = events.SubjectCmdReport
	// SubjectCmdStatus returns the auditor's counters (StatusRequest).
	SubjectCmdStatus = events.SubjectCmdAuditorStatus
)

// QuerySubjects lists the subjects the query service answers.
func QuerySubjects() []string {
	return []string{SubjectCmdSQL, SubjectCmdAnomalies, SubjectCmdReport, SubjectCmdStatus}
}

// ScopeRead is the scope a caller's Cordon admin token must hold, as the
// ledger recorded it (events.ScopeRead): the issuer's bootstrap admin token
// has it.
const ScopeRead = events.ScopeRead

// QueueGroup is the queue group of the query service's subscriptions.
const QueueGroup = "cordon-auditor-query"

// Reply codes of the analyst API.
const (
	CodeBadRequest   = "bad_request"   // malformed request
	CodeUnauthorized = "unauthorized"  // no, invalid, expired or revoked token, or one the ledger does not know as presented
	CodeForbidden    = "forbidden"     // a genuine admin token without tenant and audience "cordon" or scope cordon:read, or outside its windows, or bound to networks or a device (which NATS cannot prove)
	CodeNotReadOnly  = "not_read_only" // the SQL is not one SELECT over Cordon's tables (the error says what was refused)
	CodeQueryLimit   = "query_limit"   // the engine stopped the query at a limit (time, memory, result size)
	CodeNotFound     = "not_found"     // nothing is known about the token
	CodeQueryFailed  = "query_failed"  // ClickHouse refused or failed the query
	CodeInternal     = "internal"      // anything else
)

// Sentinel errors an Authorizer wraps: the control plane's admin
// authenticator's own (pkg/adminauth).
var (
	// ErrUnauthenticated: no token, or one that is not a valid admin token
	// (signature, expiry, revocation, not on the ledger as presented).
	ErrUnauthenticated = adminauth.ErrUnauthenticated
	// ErrForbidden: a genuine admin token that may not use the analyst API
	// (tenant, audience, scope, context).
	ErrForbidden = adminauth.ErrForbidden
	// ErrNoAuditor: no auditor answered a request.
	ErrNoAuditor = errors.New("no auditor answered")
)

// Authorizer authenticates the callers of the analyst API.
type Authorizer interface {
	// Authorize checks that token may be used with scope. It returns who
	// the caller is, for the audit log (never the token), or an error
	// wrapping ErrUnauthenticated, ErrForbidden or (the ledger could not
	// be read) adminauth.ErrUnavailable.
	Authorize(ctx context.Context, token, scope string) (caller string, err error)
}

// Querier is what the analyst API reads (*store.Store implements it).
type Querier interface {
	Query(ctx context.Context, q string) (*store.Result, error)
	Anomalies(ctx context.Context, since time.Time, limit int) ([]store.Anomaly, error)
	TokenReport(ctx context.Context, tokenID string) (*store.Report, error)
}

// SQLRequest is the body of a cordon.cmd.sql request. The query must be one
// SELECT or WITH statement over Cordon's tables (store.Store.Query).
type SQLRequest struct {
	// Auth is a Cordon token with audience "cordon" and scope
	// cordon:read. It is never logged.
	Auth  string `json:"auth"`
	Query string `json:"query"`
}

// AnomaliesRequest is the body of a cordon.cmd.anomalies request.
type AnomaliesRequest struct {
	Auth string `json:"auth"`
	// Since keeps anomalies detected at or after it (all when zero).
	Since time.Time `json:"since,omitzero"`
	// Limit bounds the list (store.DefaultAnomalyLimit when 0).
	Limit int `json:"limit,omitempty"`
}

// ReportRequest is the body of a cordon.cmd.report request.
type ReportRequest struct {
	Auth    string `json:"auth"`
	TokenID string `json:"token_id"`
}

// StatusRequest is the body of a cordon.cmd.auditor.status request.
type StatusRequest struct {
	Auth string `json:"auth"`
}

// Reply is the common part of every reply: ok, or an error with its code.
type Reply struct {
	OK    bool   `json:"ok"`
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}

// SQLReply answers a SQLRequest. Result is ClickHouse's JSONCompact form
// ({"meta":[…],"data":[…]}), which store.DecodeJSONCompact turns back
// into exactly the store.Result the auditor got. A result larger than a
// NATS message is cut: Truncated is set and TotalRows says how many rows
// the query returned.
type SQLReply struct {
	Reply
	Result    json.RawMessage `json:"result,omitempty"`
	Rows      int             `json:"rows"`
	TotalRows int             `json:"total_rows"`
	Truncated bool            `json:"truncated,omitempty"`
}

// AnomaliesReply answers an AnomaliesRequest, newest first.
type AnomaliesReply struct {
	Reply
	Anomalies []store.Anomaly `json:"anomalies"`
	Truncated bool            `json:"truncated,omitempty"`
}

// ReportReply answers a ReportRequest.
type ReportReply struct {
	Reply
	Report *store.Report `json:"report,omitempty"`
	// Truncated says the report's anomaly list was cut to fit a message.
	Truncated bool `json:"truncated,omitempty"`
}

// StatusReply answers a StatusRequest. Every auditor instance answers it
// (no queue group): Client.StatusAll gathers the replies.
type StatusReply struct {
	Reply
	Stats Stats `json:"stats"`
	// Instance says which instance answered.
	Instance InstanceInfo `json:"instance,omitzero"`
	// Checkpoints are when each owned partition last saved its
	// checkpoint in this process (none yet: absent).
	Checkpoints map[int]time.Time `json:"checkpoints,omitempty"`
}

// InstanceInfo names an auditor instance in its status.
type InstanceInfo struct {
	// Name is its instance name (--instance; the lease holder's name in
	// lease mode).
	Name string `json:"name,omitempty"`
	// Source is the name it records in its events (--source).
	Source string `json:"source,omitempty"`
	// Lease says it shares the partitions by leases (--lease); otherwise
	// it runs a static list (--partitions) or every partition.
	Lease bool `json:"lease,omitempty"`
}

// QueryOptions configure a QueryServer.
type QueryOptions struct {
	// NC is the connection the service subscribes on.
	NC *nats.Conn
	// Store answers the queries.
	Store Querier
	// Auth authenticates callers (required: the store holds usage history).
	Auth Authorizer
	// Status, when set, answers SubjectCmdStatus (an Auditor's Stats).
	Status func() Stats
	// Instance names this instance in its status replies; Checkpoints,
	// when set, says when each partition last saved its checkpoint.
	Instance    InstanceInfo
	Checkpoints func() map[int]time.Time
	// Timeout bounds each request (default 60s).
	Timeout time.Duration
	// MaxConcurrent bounds the requests served at once (default 4).
	MaxConcurrent int
	// MaxReply bounds a reply's size (default: the server's max payload).
	MaxReply int
	Log      zerolog.Logger
}

// QueryServer answers analysts' requests over NATS.
type QueryServer struct {
	o    QueryOptions
	subs []*nats.Subscription
	sem  chan struct{}
	wg   sync.WaitGroup
	ctx  context.Context
	stop context.CancelFunc
}

// NewQueryServer validates the options.
func NewQueryServer(o QueryOptions) (*QueryServer, error) {
	if o.NC == nil || o.Store == nil || o.Auth == nil {
		return nil, errors.New("auditor query service: NATS connection, store and authorizer are required")
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 4
	}
	ctx, stop := context.WithCancel(context.Background())
	return &QueryServer{o: o, sem: make(chan struct{}, o.MaxConcurrent), ctx: ctx, stop: stop}, nil
}

// Start subscribes to the query subjects: in QueueGroup, except the status
// subject, which every instance answers (Client.StatusAll gathers them).
func (s *QueryServer) Start() error {
	for _, subj := range QuerySubjects() {
		if subj == SubjectCmdStatus && s.o.Status == nil {
			continue
		}
		queue := QueueGroup
		if subj == SubjectCmdStatus {
			queue = ""
		}
		sub, err := s.o.NC.QueueSubscribe(subj, queue, s.dispatch)
		if err != nil {
			s.Close()
			return fmt.Errorf("auditor query service: subscribe %s: %w", subj, err)
		}
		s.subs = append(s.subs, sub)
	}
	if err := s.o.NC.Flush(); err != nil {
		s.Close()
		return fmt.Errorf("auditor query service: %w", err)
	}
	s.o.Log.Info().Strs("subjects", QuerySubjects()).Msg("serving analyst queries")
	return nil
}

// Close stops taking requests and waits for those being served.
func (s *QueryServer) Close() error {
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
	s.subs = nil
	s.wg.Wait()
	s.stop()
	return nil
}

// dispatch runs a request on its own goroutine, at most MaxConcurrent at
// once (the subscription waits meanwhile).
func (s *QueryServer) dispatch(m *nats.Msg) {
	s.sem <- struct{}{}
	s.wg.Add(1)
	go func() {
		defer func() { <-s.sem; s.wg.Done() }()
		s.serve(m)
	}()
}

func (s *QueryServer) serve(m *nats.Msg) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(s.ctx, s.o.Timeout)
	defer cancel()
	var (
		out    []byte
		caller string
		rep    *Reply
		detail = map[string]any{}
	)
	switch m.Subject {
	case SubjectCmdSQL:
		var req SQLRequest
		r := &SQLReply{}
		rep = &r.Reply
		if caller = s.begin(ctx, m.Data, &req, &req.Auth, rep); rep.Code == "" {
			s.sql(ctx, req.Query, r)
			detail["query"] = req.Query
			detail["rows"] = r.Rows
		}
		out = s.marshal(r)
	case SubjectCmdAnomalies:
		var req AnomaliesRequest
		r := &AnomaliesReply{}
		rep = &r.Reply
		if caller = s.begin(ctx, m.Data, &req, &req.Auth, rep); rep.Code == "" {
			s.anomalies(ctx, req, r)
			detail["anomalies"] = len(r.Anomalies)
		}
		out = s.marshal(r)
		for r.OK && len(out) > s.maxReply() && len(r.Anomalies) > 0 {
			r.Anomalies, r.Truncated = r.Anomalies[:len(r.Anomalies)/2], true
			out = s.marshal(r)
		}
	case SubjectCmdReport:
		var req ReportRequest
		r := &ReportReply{}
		rep = &r.Reply
		if caller = s.begin(ctx, m.Data, &req, &req.Auth, rep); rep.Code == "" {
			s.report(ctx, req.TokenID, r)
			detail["token_id"] = req.TokenID
		}
		out = s.marshal(r)
		for r.OK && len(out) > s.maxReply() && len(r.Report.Anomalies) > 0 {
			r.Report.Anomalies, r.Truncated = r.Report.Anomalies[len(r.Report.Anomalies)/2:], true
			out = s.marshal(r)
		}
	case SubjectCmdStatus:
		var req StatusRequest
		r := &StatusReply{}
		rep = &r.Reply
		if caller = s.begin(ctx, m.Data, &req, &req.Auth, rep); rep.Code == "" {
			r.OK, r.Stats, r.Instance = true, s.o.Status(), s.o.Instance
			if s.o.Checkpoints != nil {
				r.Checkpoints = s.o.Checkpoints()
			}
		}
		out = s.marshal(r)
	default:
		return
	}
	ev := s.o.Log.Info()
	if !rep.OK {
		ev = s.o.Log.Warn().Str("code", rep.Code).Str("error", rep.Error)
	}
	if m.Subject == SubjectCmdStatus && rep.OK {
		ev = s.o.Log.Debug()
	}
	ev.Str("subject", m.Subject).Str("caller", caller).Fields(detail).Dur("took", time.Since(start)).Int("bytes", len(out)).Msg("analyst request")
	if m.Reply == "" {
		return
	}
	if err := m.Respond(out); err != nil {
		s.o.Log.Warn().Err(err).Str("subject", m.Subject).Msg("reply not sent")
	}
}

// begin decodes a request strictly and authorizes its token; on failure
// rep carries the code.
func (s *QueryServer) begin(ctx context.Context, data []byte, req any, auth *string, rep *Reply) (caller string) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(req); err != nil {
		fail(rep, CodeBadRequest, "request is not valid JSON: %v", err)
		return ""
	}
	if dec.More() {
		fail(rep, CodeBadRequest, "request has trailing data")
		return ""
	}
	caller, err := s.o.Auth.Authorize(ctx, *auth, ScopeRead)
	switch {
	case err == nil:
		return caller
	case errors.Is(err, ErrForbidden):
		fail(rep, CodeForbidden, "%v", err)
	case errors.Is(err, ErrUnauthenticated):
		fail(rep, CodeUnauthorized, "%v", err)
	default:
		fail(rep, CodeInternal, "authorize: %v", err)
	}
	return caller
}

func fail(rep *Reply, code, format string, args ...any) {
	rep.OK, rep.Code, rep.Error = false, code, fmt.Sprintf(format, args...)
}

func (s *QueryServer) marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(`{"ok":false,"code":"internal","error":"encode reply"}`)
	}
	return b
}

// maxReply is the largest reply the connection can send.
func (s *QueryServer) maxReply() int {
	if s.o.MaxReply > 0 {
		return s.o.MaxReply
	}
	if n := s.o.NC.MaxPayload(); n > 0 {
		return int(n)
	}
	return 1 << 20
}

func (s *QueryServer) sql(ctx context.Context, q string, r *SQLReply) {
	if strings.TrimSpace(q) == "" {
		fail(&r.Reply, CodeBadRequest, "query is empty")
		return
	}
	res, err := s.o.Store.Query(ctx, q)
	switch {
	case errors.Is(err, store.ErrNotReadOnly):
		fail(&r.Reply, CodeNotReadOnly, "%v", err)
		return
	case errors.Is(err, store.ErrQueryLimit):
		fail(&r.Reply, CodeQueryLimit, "%v", err)
		return
	case err != nil:
		fail(&r.Reply, CodeQueryFailed, "%v", err)
		return
	}
	// Leave room for the reply's own fields.
	enc, rows, err := EncodeResult(res, s.maxReply()-512)
	if err != nil {
		fail(&r.Reply, CodeInternal, "encode result: %v", err)
		return
	}
	r.OK, r.Result, r.Rows, r.TotalRows, r.Truncated = true, enc, rows, len(res.Rows), rows < len(res.Rows)
}

func (s *QueryServer) anomalies(ctx context.Context, req AnomaliesRequest, r *AnomaliesReply) {
	if req.Limit < 0 {
		fail(&r.Reply, CodeBadRequest, "limit %d is negative", req.Limit)
		return
	}
	as, err := s.o.Store.Anomalies(ctx, req.Since, req.Limit)
	if err != nil {
		fail(&r.Reply, CodeQueryFailed, "%v", err)
		return
	}
	if as == nil {
		as = []store.Anomaly{}
	}
	r.OK, r.Anomalies = true, as
}

func (s *QueryServer) report(ctx context.Context, tokenID string, r *ReportReply) {
	if tokenID == "" {
		fail(&r.Reply, CodeBadRequest, "token_id is required")
		return
	}
	rep, err := s.o.Store.TokenReport(ctx, tokenID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		fail(&r.Reply, CodeNotFound, "nothing is known about token %s: no ledger entry, usage or anomaly", tokenID)
		return
	case err != nil:
		fail(&r.Reply, CodeQueryFailed, "%v", err)
		return
	}
	r.OK, r.Report = true, rep
}

// AdminAuth is the analyst API's Authorizer: the control plane's one admin
// authenticator (pkg/adminauth) over what an enforcer for service
// "cordon" follows — the issuer's keys and the denylist — and a view of
// the admin tokens' ledger. A caller's token must be one the ledger
// recorded with exactly its claims, neither revoked nor expired, whose
// recorded scopes hold cordon:read; a NATS request proves nothing about
// its sender, so a token bound to networks or a device is refused.
type AdminAuth struct {
	enf    *enforce.Enforcer
	ledger *adminauth.Follower
	auth   *adminauth.Authenticator
}

// StartAdminAuth starts on js what AdminAuth needs — an enforcer
// (enforce.Options{ID: "auditor-api", Service: "cordon"}, no usage events)
// following the keys and denylist buckets, and a follower of the admin
// ledger — and returns once both are current. Close it when done.
func StartAdminAuth(ctx context.Context, js jetstream.JetStream, anchors token.Anchors, log zerolog.Logger) (*AdminAuth, error) {
	enf, err := enforce.New(enforce.Options{ID: "auditor-api", Service: events.AdminAudience, DisableUsage: true, TrustAnchors: anchors, Log: log})
	if err != nil {
		return nil, fmt.Errorf("analyst API: %w", err)
	}
	if err := enf.Start(ctx, js); err != nil {
		enf.Close()
		return nil, fmt.Errorf("analyst API: %w", err)
	}
	ledger, err := adminauth.Follow(ctx, adminauth.FollowOptions{JS: js, Log: log})
	if err != nil {
		enf.Close()
		return nil, fmt.Errorf("analyst API: %w", err)
	}
	auth, err := adminauth.New(adminauth.Options{Keys: enf, Ledger: ledger, Denylist: enf})
	if err != nil {
		ledger.Close()
		enf.Close()
		return nil, fmt.Errorf("analyst API: %w", err)
	}
	return &AdminAuth{enf: enf, ledger: ledger, auth: auth}, nil
}

// Authorize implements Authorizer; the caller is "tenant/holder:token-id".
func (a *AdminAuth) Authorize(ctx context.Context, tok, scope string) (string, error) {
	c, err := a.auth.Authenticate(ctx, adminauth.Request{Token: tok, Scope: scope})
	if err != nil {
		return "", err
	}
	return c.Actor(), nil
}

// Close stops following the buckets and the ledger.
func (a *AdminAuth) Close() error {
	a.ledger.Close()
	return a.enf.Close()
}

// EncodeResult encodes a result as ClickHouse's JSONCompact output, from
// which store.DecodeJSONCompact rebuilds the same Go values. It stops
// before the encoding exceeds maxBytes (no bound when 0 or negative) and
// returns how many rows it holds.
func EncodeResult(res *store.Result, maxBytes int) (json.RawMessage, int, error) {
	var b bytes.Buffer
	meta, err := json.Marshal(res.Columns)
	if err != nil {
		return nil, 0, err
	}
	if res.Columns == nil {
		meta = []byte("[]")
	}
	b.WriteString(`{"meta":`)
	b.Write(meta)
	b.WriteString(`,"data":[`)
	var row []byte
	n := 0
	for i, r := range res.Rows {
		row = row[:0]
		if i > 0 {
			row = append(row, ',')
		}
		row = append(row, '[')
		for j, v := range r {
			if j > 0 {
				row = append(row, ',')
			}
			typ := ""
			if j < len(res.Columns) {
				typ = res.Columns[j].Type
			}
			if row, err = appendCell(row, typ, v); err != nil {
				return nil, 0, fmt.Errorf("row %d column %d: %w", i, j, err)
			}
		}
		row = append(row, ']')
		if maxBytes > 0 && b.Len()+len(row)+2 > maxBytes {
			break
		}
		b.Write(row)
		n++
	}
	b.WriteString("]}")
	return b.Bytes(), n, nil
}

// appendCell encodes one value of ClickHouse type typ as store's decoder
// expects it: times of DateTime types as Unix seconds with nanoseconds,
// of Date types as dates, containers by their element types.
func appendCell(b []byte, typ string, v any) ([]byte, error) {
	typ = store.BaseType(typ)
	name, args := store.SplitType(typ)
	switch t := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, t), nil
	case int64:
		return strconv.AppendInt(b, t, 10), nil
	case uint64:
		return strconv.AppendUint(b, t, 10), nil
	case float64:
		return strconv.AppendFloat(b, t, 'g', -1, 64), nil
	case string:
		s, _ := json.Marshal(t)
		return append(b, s...), nil
	case time.Time:
		switch name {
		case "Date", "Date32":
			return append(append(append(b, '"'), t.UTC().Format("2006-01-02")...), '"'), nil
		}
		return append(appendUnix(append(b, '"'), t), '"'), nil
	case []any:
		b = append(b, '[')
		for i, e := range t {
			if i > 0 {
				b = append(b, ',')
			}
			elem := ""
			switch {
			case name == "Array" && len(args) == 1:
				elem = args[0]
			case name == "Tuple" && i < len(args):
				elem = tupleElemType(args[i])
			}
			var err error
			if b, err = appendCell(b, elem, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		types := map[string]string{}
		valueType := ""
		switch {
		case name == "Map" && len(args) == 2:
			valueType = args[1]
		case name == "Tuple":
			for _, a := range args {
				if n, ty, ok := strings.Cut(a, " "); ok {
					types[strings.Trim(n, "`\"")] = ty
				}
			}
		}
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sortStrings(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			ks, _ := json.Marshal(k)
			b = append(append(b, ks...), ':')
			ty := valueType
			if name == "Tuple" {
				ty = types[k]
			}
			var err error
			if b, err = appendCell(b, ty, t[k]); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	}
	return nil, fmt.Errorf("unsupported value %T", v)
}

// appendUnix writes t as "seconds.nanoseconds" since the Unix epoch, signed
// as store's parser reads it.
func appendUnix(b []byte, t time.Time) []byte {
	sec, nsec := t.Unix(), int64(t.Nanosecond())
	if sec < 0 {
		b = append(b, '-')
		if nsec == 0 {
			sec = -sec
		} else {
			sec, nsec = -sec-1, 1_000_000_000-nsec
		}
	}
	b = strconv.AppendInt(b, sec, 10)
	frac := strconv.FormatInt(nsec+1_000_000_000, 10)[1:]
	return append(append(b, '.'), frac...)
}

// tupleElemType drops the name of a named tuple element ("a UInt8").
func tupleElemType(arg string) string {
	if n, ty, ok := strings.Cut(arg, " "); ok && !strings.ContainsAny(n, "(,") {
		return ty
	}
	return arg
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// Client calls the analyst API of a running auditor.
type Client struct {
	// NC is the NATS connection requests go over.
	NC *nats.Conn
	// Token is the caller's Cordon admin token (audience "cordon", scope
	// cordon:read). It travels in each request and is never logged.
	Token string
}

// ReplyError is a refusal or failure reported by the auditor.
type ReplyError struct {
	Subject, Code, Message string
}

// Error implements error.
func (e *ReplyError) Error() string { return fmt.Sprintf("%s (%s): %s", e.Subject, e.Code, e.Message) }

// Is makes a ReplyError match the sentinel its code stands for
// (ErrUnauthenticated, ErrForbidden, store.ErrNotReadOnly,
// store.ErrQueryLimit, store.ErrNotFound).
func (e *ReplyError) Is(target error) bool {
	switch e.Code {
	case CodeUnauthorized:
		return target == ErrUnauthenticated
	case CodeForbidden:
		return target == ErrForbidden
	case CodeNotReadOnly:
		return target == store.ErrNotReadOnly
	case CodeQueryLimit:
		return target == store.ErrQueryLimit
	case CodeNotFound:
		return target == store.ErrNotFound
	}
	return false
}

// SQLResult is the outcome of Client.SQL.
type SQLResult struct {
	*store.Result
	// Truncated says the result was cut to fit one NATS message; TotalRows
	// is how many rows the query returned.
	Truncated bool
	TotalRows int
}

// SQL runs one read-only statement on the auditor's store.
func (c *Client) SQL(ctx context.Context, query string) (*SQLResult, error) {
	var rep SQLReply
	if err := c.call(ctx, SubjectCmdSQL, SQLRequest{Auth: c.Token, Query: query}, &rep, &rep.Reply); err != nil {
		return nil, err
	}
	res, err := store.DecodeJSONCompact(rep.Result)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", SubjectCmdSQL, err)
	}
	return &SQLResult{Result: res, Truncated: rep.Truncated, TotalRows: rep.TotalRows}, nil
}

// Anomalies lists the anomalies detected at or after since, newest first,
// at most limit (store.DefaultAnomalyLimit when 0). truncated says the
// list was cut to fit one NATS message.
func (c *Client) Anomalies(ctx context.Context, since time.Time, limit int) (as []store.Anomaly, truncated bool, err error) {
	var rep AnomaliesReply
	if err := c.call(ctx, SubjectCmdAnomalies, AnomaliesRequest{Auth: c.Token, Since: since, Limit: limit}, &rep, &rep.Reply); err != nil {
		return nil, false, err
	}
	return rep.Anomalies, rep.Truncated, nil
}

// Report returns the report on one token.
func (c *Client) Report(ctx context.Context, tokenID string) (*store.Report, error) {
	var rep ReportReply
	if err := c.call(ctx, SubjectCmdReport, ReportRequest{Auth: c.Token, TokenID: tokenID}, &rep, &rep.Reply); err != nil {
		return nil, err
	}
	if rep.Report == nil {
		return nil, fmt.Errorf("%s: reply without a report", SubjectCmdReport)
	}
	return rep.Report, nil
}

// Status returns the auditor's counters.
func (c *Client) Status(ctx context.Context) (Stats, error) {
	var rep StatusReply
	if err := c.call(ctx, SubjectCmdStatus, StatusRequest{Auth: c.Token}, &rep, &rep.Reply); err != nil {
		return Stats{}, err
	}
	return rep.Stats, nil
}

func (c *Client) call(ctx context.Context, subject string, req, rep any, common *Reply) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	m, err := c.NC.RequestWithContext(ctx, subject, body)
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("%w on %s: is `cordon up` (or `cordon auditor`) running and connected to this NATS server?", ErrNoAuditor, subject)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	if err := json.Unmarshal(m.Data, rep); err != nil {
		return fmt.Errorf("%s: malformed reply: %w", subject, err)
	}
	if !common.OK {
		return &ReplyError{Subject: subject, Code: common.Code, Message: common.Error}
	}
	return nil
}
