package events

import "strings"

// ClientOther is what NormalizeClient returns for a user agent that names
// no product it can read (only punctuation, say).
const ClientOther = "other"

// Bounds of the parts of a normalised client: the family name and the major
// version. With the '/' between them, a client is never longer than
// MaxClientLen.
const (
	maxClientName  = 48
	maxClientMajor = 12
	// maxClientScan bounds the bytes of a user agent that are looked at.
	maxClientScan = 512
)

// tokenPrefix is the prefix of a Cordon token string (pkg/token.Prefix; this
// package imports nothing of ours, a test in pkg/enforce holds them equal).
// A product name that starts with it is never reported: a client that sends
// its token as the user agent must not have a piece of it recorded.
const tokenPrefix = "cordon_"

// NormalizeClient reduces a User-Agent header to the client's family and
// major version, the form usage events and the token ledger carry:
//
//	curl/8.5.0                                    → curl/8
//	python-requests/2.31.0                        → python-requests/2
//	Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 …      → Boto3/1
//	Mozilla/5.0 (…) Chrome/124.0.0.0 Safari/537.36 → Chrome/124
//	Mozilla/5.0 (…) Chrome/124… Safari/… Edg/124…  → Edge/124
//	Mozilla/5.0 (…) Version/17.4.1 Safari/605.1.15 → Safari/17
//
// Browsers (a user agent starting with "Mozilla/") are recognised by their
// own product token, whatever else they claim to be: Edge, Opera, Samsung
// Internet, Firefox, headless Chrome, Chrome, Safari, Internet Explorer,
// and crawlers that say "compatible; Name/version". Any other user agent is
// its first product token (RFC 9110 "product/version"), skipping tokens
// that only wrap another client ("APN/1.0", a leading "Python/3.x" before
// the library). The name keeps a–z, A–Z, 0–9, '.', '_' and '-' (others are
// dropped) and at most 48 bytes; the major version is the leading digits of
// the version, or its leading letters and digits when it starts with
// neither, at most 12 bytes. The result is "" for an empty user agent, and
// ClientOther when no product can be read. It is stable (the same input
// always gives the same output), never longer than MaxClientLen, and
// normalising its own output returns it unchanged.
//
// It uses no regular expression and, when the family and version are a
// substring of the input (most clients), allocates nothing.
func NormalizeClient(userAgent string) string {
	ua := strings.TrimSpace(userAgent)
	if ua == "" {
		return ""
	}
	if len(ua) > maxClientScan {
		ua = ua[:maxClientScan]
	}
	if strings.HasPrefix(ua, "Mozilla/") {
		if c := browser(ua); c != "" {
			return c
		}
	}
	return firstProduct(ua)
}

// browserMarks are the product tokens that name a browser, in the order
// they are looked for: a browser's UA also names the browsers it wants to
// be taken for (Edge says Chrome and Safari, Chrome says Safari), so the
// most specific token comes first.
var browserMarks = [...]struct{ token, family string }{
	{"Edg", "Edge"}, {"EdgA", "Edge"}, {"EdgiOS", "Edge"}, {"Edge", "Edge"},
	{"OPR", "Opera"}, {"OPiOS", "Opera"},
	{"SamsungBrowser", "SamsungBrowser"},
	{"Firefox", "Firefox"}, {"FxiOS", "Firefox"},
	{"HeadlessChrome", "HeadlessChrome"},
	{"CriOS", "Chrome"}, {"Chrome", "Chrome"}, {"Chromium", "Chromium"},
}

// browser recognises a browser or crawler in a "Mozilla/…" user agent, ""
// when it names none.
func browser(ua string) string {
	if v, ok := findProduct(ua, "MSIE", ' '); ok {
		return join(ua, "IE", v)
	}
	if strings.Contains(ua, "Trident/") {
		if v, ok := findProduct(ua, "rv", ':'); ok {
			return join(ua, "IE", v)
		}
	}
	if i := strings.Index(ua, "compatible; "); i >= 0 {
		if c := crawler(ua, ua[i+len("compatible; "):]); c != "" {
			return c
		}
	}
	for _, m := range browserMarks {
		if v, ok := findProduct(ua, m.token, '/'); ok {
			return join(ua, m.family, v)
		}
	}
	if _, ok := findProduct(ua, "Safari", '/'); ok {
		if v, ok := findProduct(ua, "Version", '/'); ok {
			return join(ua, "Safari", v)
		}
	}
	return ""
}

// crawler reads "Name/version" at the start of rest, the text after
// "compatible; " ("Googlebot/2.1; +http://…").
func crawler(ua, rest string) string {
	end := strings.IndexAny(rest, ";)")
	if end < 0 {
		end = len(rest)
	}
	name, ver, ok := strings.Cut(rest[:end], "/")
	if !ok || name == "" || !cleanName(name) {
		return ""
	}
	return join(ua, name, ver)
}

// findProduct finds the token name followed by sep ("Chrome/", "MSIE ",
// "rv:") where it starts a token (at the start of ua or after a space,
// '(', ';' or ',') and returns the text after sep up to the next
// delimiter.
func findProduct(ua, name string, sep byte) (string, bool) {
	for from := 0; from < len(ua); {
		i := strings.Index(ua[from:], name)
		if i < 0 {
			return "", false
		}
		i += from
		end := i + len(name)
		from = end
		if end >= len(ua) || ua[end] != sep {
			continue
		}
		if i > 0 {
			switch ua[i-1] {
			case ' ', '(', ';', ',':
			default:
				continue
			}
		}
		v := ua[end+1:]
		if j := strings.IndexAny(v, " ;(),"); j >= 0 {
			v = v[:j]
		}
		return v, true
	}
	return "", false
}

// firstProduct is the first product token of ua that names a client.
func firstProduct(ua string) string {
	var fallback string // a wrapper product, when nothing follows it
	for n := 0; ua != "" && n < 16; n++ {
		switch ua[0] {
		case ' ', '\t', ';', ',', ')':
			ua = ua[1:]
			continue
		case '(':
			// A comment: skip it, with its nested comments.
			depth, i := 0, 0
			for ; i < len(ua); i++ {
				if ua[i] == '(' {
					depth++
				} else if ua[i] == ')' {
					if depth--; depth == 0 {
						break
					}
				}
			}
			ua = ua[min(i+1, len(ua)):]
			continue
		}
		end := strings.IndexAny(ua, " \t;,()")
		if end < 0 {
			end = len(ua)
		}
		tok := ua[:end]
		ua = ua[end:]
		name, ver, _ := strings.Cut(tok, "/")
		if !hasNameByte(name) {
			continue
		}
		c := join(tok, name, ver)
		if wrapper(name) {
			if fallback == "" {
				fallback = c
			}
			continue
		}
		return c
	}
	if fallback != "" {
		return fallback
	}
	return ClientOther
}

// wrapper reports product names that only say what another client runs
// in or on behalf of: the next product names the client.
func wrapper(name string) bool {
	switch name {
	case "APN", "HashiCorp", "Python":
		return true
	}
	return false
}

// join returns "name/major". When src holds exactly that text (name clean
// and short enough, version starting with its major) it is returned as a
// substring of src, without allocating.
func join(src, name, version string) string {
	major := majorOf(version)
	if !cleanName(name) {
		name = cleaned(name)
	}
	if name == "" || strings.Contains(name, tokenPrefix) {
		return ClientOther
	}
	if major == "" {
		return substr(src, name)
	}
	if i := strings.Index(src, name); i >= 0 {
		rest := src[i+len(name):]
		if len(rest) > len(major) && rest[0] == '/' && rest[1:1+len(major)] == major {
			return src[i : i+len(name)+1+len(major)]
		}
	}
	return name + "/" + major
}

// substr returns s as a substring of src when src holds it (no copy).
func substr(src, s string) string {
	if i := strings.Index(src, s); i >= 0 {
		return src[i : i+len(s)]
	}
	return s
}

// majorOf is the major part of a version: its leading digits, else its
// leading letters and digits, at most maxClientMajor bytes.
func majorOf(v string) string {
	n := 0
	for n < len(v) && v[n] >= '0' && v[n] <= '9' {
		n++
	}
	if n == 0 {
		for n < len(v) && isAlnum(v[n]) {
			n++
		}
	}
	return v[:min(n, maxClientMajor)]
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func nameByte(c byte) bool { return isAlnum(c) || c == '.' || c == '_' || c == '-' }

// cleanName reports whether name is short enough and only of name bytes.
func cleanName(name string) bool {
	if len(name) > maxClientName {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !nameByte(name[i]) {
			return false
		}
	}
	return true
}

// hasNameByte reports whether name holds a byte cleaned keeps.
func hasNameByte(name string) bool {
	for i := 0; i < len(name); i++ {
		if nameByte(name[i]) {
			return true
		}
	}
	return false
}

// cleaned keeps the name bytes of name, at most maxClientName.
func cleaned(name string) string {
	var b strings.Builder
	for i := 0; i < len(name) && b.Len() < maxClientName; i++ {
		if nameByte(name[i]) {
			b.WriteByte(name[i])
		}
	}
	return b.String()
}
