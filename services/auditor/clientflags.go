package auditor

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// DefaultClientTimeout is how long a command waits for the analyst API's
// reply by default (--timeout).
const DefaultClientTimeout = 60 * time.Second

// ClientFlags are the flags of a command that calls the analyst API with
// a Client (cordon sql, anomalies, report, replay --nats): the file that
// holds the admin token the Client presents and how long to wait for a
// reply. The NATS connection's flags are the command's own.
type ClientFlags struct {
	// TokenFile holds a Cordon admin token with scope ScopeRead (--token-file).
	TokenFile string
	// Timeout bounds each call (--timeout).
	Timeout time.Duration
}

// RegisterFlags declares --token-file, defaulting to $CORDON_TOKEN_FILE or
// else tokenFile (where the issuer writes its bootstrap admin token), and
// --timeout.
func (f *ClientFlags) RegisterFlags(fs *flag.FlagSet, tokenFile string) {
	if v := os.Getenv("CORDON_TOKEN_FILE"); v != "" {
		tokenFile = v
	}
	fs.StringVar(&f.TokenFile, "token-file", tokenFile, "file holding a Cordon admin token with scope "+ScopeRead+" ($CORDON_TOKEN_FILE)")
	fs.DurationVar(&f.Timeout, "timeout", DefaultClientTimeout, "how long to wait for the auditor's reply")
}

// Explain adds to an error of a Client call what to do about it, in terms
// of the flags: a refused token, a forbidden one, a reply that did not
// come within --timeout. Other errors, and ErrNoAuditor (which says it
// already), are returned as they are.
func (f *ClientFlags) Explain(err error) error {
	switch {
	case errors.Is(err, ErrNoAuditor):
		return err
	case errors.Is(err, ErrUnauthenticated):
		return fmt.Errorf("%w\n(the admin token was refused: mint a fresh one with `cordon token issue` or point --token-file at the issuer's admin.token)", err)
	case errors.Is(err, ErrForbidden):
		return fmt.Errorf("%w\n(the analyst API needs a token of tenant %s with audience %s and scope %s)", err, events.AdminTenant, events.AdminAudience, ScopeRead)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w (raise --timeout for a long query)", err)
	}
	return err
}
