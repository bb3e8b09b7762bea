package auditor_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/auditor"
)

// analystCalls runs every analyst request with tok and returns their errors.
func analystCalls(q *queryEnv, tok string) map[string]error {
	ctx := context.Background()
	cl := q.client(tok)
	res, errSQL := cl.SQL(ctx, "SELECT count() FROM usage_events")
	if errSQL == nil && res == nil {
		errSQL = errors.New("no result and no error")
	}
	_, _, errAn := cl.Anomalies(ctx, time.Time{}, 10)
	_, errRep := cl.Report(ctx, "01940000-0000-7000-8000-000000000001")
	_, errSt := cl.Status(ctx)
	return map[string]error{"sql": errSQL, "anomalies": errAn, "report": errRep, "status": errSt}
}

// TestForgedAdminTokens is issue 8's finding 1 at the analyst API: tokens
// minted with the real signing key outside the issuer — a fresh id, a
// genuine admin token's id with wider scopes or a longer life, a token
// without cordon:read given cordon:* — are refused on every subject
// (cordon.cmd.sql, anomalies, report, auditor.status); genuine admin
// tokens still work.
func TestForgedAdminTokens(t *testing.T) {
	q := startQueryEnv(t, "query_forged", auditor.QueryOptions{Status: func() auditor.Stats { return auditor.Stats{} }})
	adminID, admin := q.mint(t, "cordon", []string{"cordon:read", "cordon:issue"}, []string{"cordon"})
	issuerID, _ := q.mint(t, "cordon", []string{"cordon:issue"}, []string{"cordon"})
	u, err := token.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	genuine := u.Claims
	withID := func(id string, mod func(*token.Claims)) func(*token.Claims) {
		return func(c *token.Claims) {
			c.ID, c.IssuedAt, c.NotBefore, c.Expiry = id, genuine.IssuedAt, genuine.NotBefore, genuine.Expiry
			mod(c)
		}
	}
	forged := map[string]func(*token.Claims){
		"fresh id with admin scopes":       func(c *token.Claims) { c.ID = uuid.Must(uuid.NewV7()).String() },
		"admin id with cordon:*":           withID(adminID, func(c *token.Claims) { c.Scopes = []string{"cordon:*"} }),
		"admin id living a year longer":    withID(adminID, func(c *token.Claims) { c.Scopes = slices.Clone(genuine.Scopes); c.Expiry += 365 * 24 * 3600 }),
		"cordon:issue token's id as admin": withID(issuerID, func(c *token.Claims) { c.Scopes = []string{"cordon:*"} }),
	}
	for name, mod := range forged {
		t.Run(name, func(t *testing.T) {
			_, tok := q.forge(t, "cordon", []string{"cordon:*"}, []string{"cordon"}, mod)
			for call, err := range analystCalls(q, tok) {
				if !errors.Is(err, auditor.ErrUnauthenticated) {
					t.Errorf("%s: %v, want unauthenticated", call, err)
				}
				if err != nil && strings.Contains(err.Error(), tok) {
					t.Errorf("%s: the error quotes the token", call)
				}
			}
		})
	}
	for call, err := range analystCalls(q, admin) {
		if err != nil && !(call == "report" && strings.Contains(err.Error(), "nothing is known")) {
			t.Errorf("genuine admin token, %s: %v", call, err)
		}
	}
}

// TestAdminContext: the analyst API is reached over NATS, which proves
// nothing about the caller's address or certificate: tokens bound to
// networks or a device are refused; windows are enforced (issue 8,
// finding 4).
func TestAdminContext(t *testing.T) {
	q := startQueryEnv(t, "query_context", auditor.QueryOptions{})
	now := time.Now().UTC()
	day := []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
	reader := func(mod func(*token.Claims)) string {
		_, tok := q.mint(t, "cordon", []string{"cordon:read"}, []string{"cordon"}, mod)
		return tok
	}
	tests := []struct {
		name, tok string
		want      error
		say       string
	}{
		{"networks", reader(func(c *token.Claims) { c.Networks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }), auditor.ErrForbidden, "use the HTTPS API"},
		{"device", reader(func(c *token.Claims) { c.Device = token.Thumbprint([]byte("laptop")) }), auditor.ErrForbidden, "bound to a device"},
		{"another day", reader(func(c *token.Claims) {
			c.Windows = []token.Window{{Days: []string{day[(now.Weekday()+3)%7]}, Start: "00:00", End: "24:00"}}
		}), auditor.ErrForbidden, "outside its time windows"},
		{"today", reader(func(c *token.Claims) {
			c.Windows = []token.Window{{Days: []string{day[now.Weekday()]}, Start: "00:00", End: "24:00"}}
		}), nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := q.client(tt.tok).SQL(context.Background(), "SELECT 1")
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(fmt.Sprint(err), tt.say) {
				t.Fatalf("%v, want %v saying %q", err, tt.want, tt.say)
			}
		})
	}
}
