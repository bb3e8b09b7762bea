package token

import (
	"regexp"
	"strings"
)

// ScanPattern is the regular expression to register with a secret scanner
// (GitHub's partner program, gitleaks, trufflehog…): the prefix, the
// header and claims segments, the 86-character Ed25519 signature and the
// six-character checksum, between non-token characters. A match is a
// candidate; CheckChecksum tells the scanner whether it is a token at all.
const ScanPattern = `(?:^|[^A-Za-z0-9_-])(cordon_[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{86}[0-9A-Za-z]{6})(?:$|[^A-Za-z0-9_.-])`

// ChecksumRule states the checksum rule for a scanner's documentation.
const ChecksumRule = "the last 6 characters are the CRC-32 (IEEE) of everything before them, " +
	"written as a 6-digit big-endian base-62 number with the digits 0-9A-Za-z"

var scanRE = regexp.MustCompile(ScanPattern)

// Scan returns every candidate token in text whose checksum holds, in
// order, once each. It never verifies a signature: a match is a string
// shaped and checksummed like a Cordon token.
func Scan(text string) []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range scanRE.FindAllStringSubmatch(text, -1) {
		s := m[1]
		if !seen[s] && CheckChecksum(s) {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// CheckChecksum reports whether s has the token prefix and a checksum that
// matches: a typo, a truncation or a look-alike fails without any
// cryptography.
func CheckChecksum(s string) bool {
	if len(s) > MaxLen || !strings.HasPrefix(s, Prefix) || len(s) < len(Prefix)+checksumLen+5 {
		return false
	}
	body, sum := s[:len(s)-checksumLen], s[len(s)-checksumLen:]
	return checksum(body) == sum
}
