package auditor_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/services/auditor"
)

// TestClientFlags: --token-file defaults to $CORDON_TOKEN_FILE, else to
// the file the command names; --timeout to a minute.
func TestClientFlags(t *testing.T) {
	for _, c := range []struct {
		env  string
		args []string
		want auditor.ClientFlags
	}{
		{"", nil, auditor.ClientFlags{TokenFile: "data/admin.token", Timeout: time.Minute}},
		{"/run/secrets/admin.token", nil, auditor.ClientFlags{TokenFile: "/run/secrets/admin.token", Timeout: time.Minute}},
		{"/run/secrets/admin.token", []string{"--token-file", "t", "--timeout", "5m"}, auditor.ClientFlags{TokenFile: "t", Timeout: 5 * time.Minute}},
	} {
		t.Setenv("CORDON_TOKEN_FILE", c.env)
		var f auditor.ClientFlags
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f.RegisterFlags(fs, "data/admin.token")
		if err := fs.Parse(c.args); err != nil || f != c.want {
			t.Errorf("env %q, args %v: %+v, %v; want %+v", c.env, c.args, f, err, c.want)
		}
	}
}

// TestClientFlagsExplain: a refused token, a forbidden one and a reply too
// late say what to do, and stay the errors they were; others are left as
// they are.
func TestClientFlagsExplain(t *testing.T) {
	var f auditor.ClientFlags
	unauth := &auditor.ReplyError{Subject: auditor.SubjectCmdSQL, Code: auditor.CodeUnauthorized, Message: "token not on the ledger"}
	forbidden := &auditor.ReplyError{Subject: auditor.SubjectCmdSQL, Code: auditor.CodeForbidden, Message: "scope"}
	noAuditor := fmt.Errorf("%w on %s", auditor.ErrNoAuditor, auditor.SubjectCmdSQL)
	other := errors.New("query failed")
	for _, c := range []struct {
		err  error
		is   error
		hint string
	}{
		{unauth, auditor.ErrUnauthenticated, "point --token-file at the issuer's admin.token"},
		{forbidden, auditor.ErrForbidden, "a token of tenant cordon with audience cordon and scope cordon:read"},
		{fmt.Errorf("cordon.cmd.sql: %w", context.DeadlineExceeded), context.DeadlineExceeded, "(raise --timeout for a long query)"},
	} {
		got := f.Explain(c.err)
		if !errors.Is(got, c.is) || !strings.HasPrefix(got.Error(), c.err.Error()) || !strings.Contains(got.Error(), c.hint) {
			t.Errorf("Explain(%v) = %v, want it with %q", c.err, got, c.hint)
		}
	}
	for _, err := range []error{nil, noAuditor, other} {
		if got := f.Explain(err); got != err {
			t.Errorf("Explain(%v) = %v, want it unchanged", err, got)
		}
	}
}
