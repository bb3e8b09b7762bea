// Package svcconfig holds what the configurations of Cordon's services
// (services/issuer, services/auditor, services/revoker, services/enforcer)
// share, so that each is written once: the error that marks a
// configuration mistake (a command reports it as a usage error), the
// environment defaults of flags, the trust anchor that verifiers are
// given, listen address checks and the default instance name.
package svcconfig

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// ErrInvalid marks a configuration mistake: a flag or value that is wrong
// as given (as opposed to a file that fails to parse or a server that
// cannot be reached). Errors made by Invalidf match it with errors.Is.
var ErrInvalid = errors.New("invalid configuration")

// invalid is an error that matches ErrInvalid without saying so in its
// message: the message names the flag and the value.
type invalid struct{ err error }

func (e *invalid) Error() string   { return e.err.Error() }
func (e *invalid) Unwrap() []error { return []error{ErrInvalid, e.err} }

// Invalidf formats an error as fmt.Errorf does (%w included) and marks it
// as a configuration mistake (errors.Is(err, ErrInvalid)). The message is
// exactly the formatted text.
func Invalidf(format string, args ...any) error {
	return &invalid{fmt.Errorf(format, args...)}
}

// Invalid marks err as a configuration mistake; nil stays nil.
func Invalid(err error) error {
	if err == nil || errors.Is(err, ErrInvalid) {
		return err
	}
	return &invalid{err}
}

// Getenv returns $name, or def when it is unset or empty: the default of a
// flag that an environment variable may set.
func Getenv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// CheckListen checks a listen address given by flag name: empty (off) or
// host:port.
func CheckListen(name, addr string) error {
	if addr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return Invalidf("--%s %q: %v", name, addr, err)
	}
	return nil
}

// DefaultDataDir is the data directory of `cordon up` and `cordon issuer`
// when none is given.
const DefaultDataDir = ".cordon"

// TrustAnchorFile is where the issuer writes its trust anchor's public
// half in its data directory.
const TrustAnchorFile = "trust-anchor.pub"

// DefaultTrustAnchor is the trust anchor a verifier reads when none is
// given: the one `cordon issuer` and `cordon up` write with the default
// data directory.
var DefaultTrustAnchor = filepath.Join(DefaultDataDir, TrustAnchorFile)

// TrustAnchorHelp is the help of --trust-anchor for the enforcer and the
// revoker.
const TrustAnchorHelp = "the issuer's trust anchor: a `file` written by cordon issuer (DATA/" + TrustAnchorFile +
	") or cordon anchor generate, or the " + token.AnchorPrefix + "… text itself ($CORDON_TRUST_ANCHOR)"

// TrustAnchorFlag registers --trust-anchor into p, defaulting to
// $CORDON_TRUST_ANCHOR or DefaultTrustAnchor, with the help given.
func TrustAnchorFlag(fs *flag.FlagSet, p *string, help string) {
	fs.StringVar(p, "trust-anchor", Getenv("CORDON_TRUST_ANCHOR", DefaultTrustAnchor), help)
}

// TrustAnchors returns given when it is not empty, else loads the
// --trust-anchor value v: a file holding an anchor key, or the key's text.
// Errors are configuration mistakes (ErrInvalid).
func TrustAnchors(v string, given token.Anchors) (token.Anchors, error) {
	if len(given) > 0 {
		return given, nil
	}
	if v == "" {
		return nil, Invalidf("--trust-anchor is required: signing keys are accepted only when the issuer's trust anchor endorses them")
	}
	k, err := token.LoadAnchorKey(v)
	if err != nil {
		return nil, Invalidf("--trust-anchor: %v", err)
	}
	return token.Anchors{k}, nil
}

// DefaultSource is the instance name a service of kind records in its
// events when none is given: "kind/<hostname up to its first dot>".
func DefaultSource(kind string) string {
	host, _ := os.Hostname()
	return kind + "/" + strings.SplitN(host, ".", 2)[0]
}

// UsagePartitionsFlag registers --usage-partitions into p: the USAGE
// stream's partition count (1 to events.MaxUsagePartitions), defaulting to
// $CORDON_USAGE_PARTITIONS or events.DefaultUsagePartitions. A value out
// of range is refused when parsed; one from the environment by
// CheckUsagePartitions (Validate).
func UsagePartitionsFlag(fs *flag.FlagSet, p *int) {
	*p = events.DefaultUsagePartitions
	if v := os.Getenv(usagePartitionsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			n = -1 // refused by CheckUsagePartitions
		}
		*p = n
	}
	fs.Func("usage-partitions", fmt.Sprintf("partitions of the USAGE stream: a `count` from 1 to %d (default %d; $%s): the same on every service; "+
		"a stream that exists keeps its count and another one is refused (docs/operations.md says how to change it)",
		events.MaxUsagePartitions, events.DefaultUsagePartitions, usagePartitionsEnv), func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > events.MaxUsagePartitions {
			return fmt.Errorf("%q: want a partition count from 1 to %d", v, events.MaxUsagePartitions)
		}
		*p = n
		return nil
	})
}

const usagePartitionsEnv = "CORDON_USAGE_PARTITIONS"

// CheckUsagePartitions checks a configured USAGE partition count: 0 (not
// configured: the stream's own, events.DefaultUsagePartitions when it is
// created) or 1 to events.MaxUsagePartitions.
func CheckUsagePartitions(n int) error {
	if n < 0 || n > events.MaxUsagePartitions {
		return Invalidf("--usage-partitions ($%s): %d is not a partition count: want 1 to %d", usagePartitionsEnv, n, events.MaxUsagePartitions)
	}
	return nil
}
