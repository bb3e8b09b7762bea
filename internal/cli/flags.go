package cli

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
)

// The parsing helpers the commands share. The flags themselves are
// declared by the packages whose options they fill (RegisterFlags).

// invalidFlags makes the error of a Validate — a mistake in the flags,
// naming the flag — a usage error (exit status 2); nil stays nil.
func invalidFlags(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", errUsage, err)
}

// flagGiven says whether the flag name was given on fs's command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// parseInterspersed parses flags that may come before or after positional
// arguments (cordon token inspect ID -o json) and returns the positionals.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseArgs parses a subcommand's flags (interspersed with its arguments)
// and checks that exactly n positional arguments remain.
func parseArgs(fs *flag.FlagSet, args []string, n int, what string) ([]string, error) {
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, err
	}
	if err := wantArgs(pos, n, what); err != nil {
		return nil, err
	}
	return pos, nil
}

func wantArgs(pos []string, n int, what string) error {
	if len(pos) != n {
		return fmt.Errorf("%w: want %s, got %d argument(s)", errUsage, what, len(pos))
	}
	return nil
}

// outputFlag registers -o / --output.
func outputFlag(fs *flag.FlagSet, def, choices string) *string {
	o := new(string)
	fs.StringVar(o, "o", def, "output format: "+choices)
	fs.StringVar(o, "output", def, "output format: "+choices+" (same as -o)")
	return o
}

// checkFormat checks an output format against the allowed ones.
func checkFormat(format string, allowed ...string) error {
	for _, a := range allowed {
		if format == a {
			return nil
		}
	}
	return fmt.Errorf("%w: -o %q: want %s", errUsage, format, strings.Join(allowed, ", "))
}

// writeIndented writes v as indented JSON.
func writeIndented(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
