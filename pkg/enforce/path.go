package enforce

import (
	"net/http"
	"strings"
	"unicode/utf8"
)

// canonicalizePath checks the path of r and, when it is safe, rewrites r to
// its canonical form: r.URL.Path decoded, r.URL.RawPath empty (so the path
// that is matched, r.URL.EscapedPath(), is the default encoding of Path),
// and r.RequestURI rebuilt from them. The route is matched on that path and
// the proxy forwards that very path, so an upstream that decodes and cleans
// paths cannot resolve it to another route.
//
// Refused (false): a path not starting with '/'; in the raw form, an
// encoded '/', '\\' or '%' (%2F, %5C, %25: an upstream that decodes again
// would see a separator); after decoding, a dot segment ("." or "..", also
// before a ';' parameter, "..;x"), a segment that is only parameters
// (";x", which servers that drop parameters read as empty), an empty
// segment ("//", except a
// trailing '/'), a segment ending in '.' or ' ' (which Windows servers
// drop), a backslash, a '%' (double
// encoding), a control byte, invalid UTF-8, or a look-alike of '/', '\\' or
// '.' that some servers fold to it (full-width solidus and the like).
func canonicalizePath(r *http.Request) bool {
	u := r.URL
	p := u.Path
	if p == "" || p[0] != '/' {
		return false
	}
	if raw := u.RawPath; raw != "" && hasEncodedSeparator(raw) {
		return false
	}
	if !safeSegments(p) {
		return false
	}
	if u.RawPath != "" {
		u.RawPath = ""
	}
	if r.RequestURI != "" {
		r.RequestURI = u.RequestURI()
	}
	return true
}

// hasEncodedSeparator reports whether raw holds %2F, %5C or %25 (any case).
func hasEncodedSeparator(raw string) bool {
	for i := strings.IndexByte(raw, '%'); i >= 0 && i+2 < len(raw); {
		switch strings.ToUpper(raw[i+1 : i+3]) {
		case "2F", "5C", "25":
			return true
		}
		j := strings.IndexByte(raw[i+1:], '%')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}

// safeSegments checks a decoded path that starts with '/'.
func safeSegments(p string) bool {
	for i := 0; i < len(p); {
		c := p[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f || c == '\\' || c == '%' {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(p[i:])
		if r == utf8.RuneError && size == 1 {
			return false
		}
		if lookAlike(r) {
			return false
		}
		i += size
	}
	rest := p[1:]
	for rest != "" {
		seg, tail, more := strings.Cut(rest, "/")
		if seg == "" {
			return false // "//": only a trailing '/' may end in an empty segment
		}
		name, _, _ := strings.Cut(seg, ";")
		// "." and ".." end in '.'; a trailing '.' or ' ' (of the name or of
		// its parameters) is dropped by Windows servers.
		if name == "" || endsInDotOrSpace(name) || endsInDotOrSpace(seg) {
			return false
		}
		if !more {
			break
		}
		rest = tail
	}
	return true
}

func endsInDotOrSpace(s string) bool {
	c := s[len(s)-1]
	return c == '.' || c == ' '
}

// lookAlike reports runes that Unicode normalisation (NFKC) or a lenient
// server folds to '/', '\\' or '.', and C1 control characters.
func lookAlike(r rune) bool {
	switch r {
	case '\uff0f', // FULLWIDTH SOLIDUS
		'\u2215', // DIVISION SLASH
		'\u2044', // FRACTION SLASH
		'\u29f8', // BIG SOLIDUS
		'\ufe68', // SMALL REVERSE SOLIDUS
		'\uff3c', // FULLWIDTH REVERSE SOLIDUS
		'\u29f5', // REVERSE SOLIDUS OPERATOR
		'\u2216', // SET MINUS
		'\uff0e', // FULLWIDTH FULL STOP
		'\ufe52', // SMALL FULL STOP
		'\u2024', // ONE DOT LEADER
		'\u2025', // TWO DOT LEADER
		'\u2026', // HORIZONTAL ELLIPSIS
		'\uff61', // HALFWIDTH IDEOGRAPHIC FULL STOP
		'\u3002': // IDEOGRAPHIC FULL STOP
		return true
	}
	return r >= 0x80 && r <= 0x9f
}
