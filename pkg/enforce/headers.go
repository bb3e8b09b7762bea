package enforce

import "net/http"

// alwaysStripped are request headers that never reach the protected
// service: method overrides (the route was matched on the request's own
// method) and URL overrides (the route was matched on the request's own
// path), whoever sent them.
var alwaysStripped = []string{
	"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override",
	"X-Original-URL", "X-Rewrite-URL", "X-Original-URI", "X-Override-URL",
}

// identityHeaders claim who the client is or how it reached the service.
// They are believed only from a trusted proxy (Options.TrustedProxies);
// from anyone else they are removed before the request goes upstream (the
// proxy then sets X-Forwarded-For, -Host and -Proto itself).
var identityHeaders = []string{
	"X-Forwarded-For", "X-Real-IP", "Forwarded", "X-Forwarded-Host", "X-Forwarded-Proto",
	"X-Forwarded-Port", "X-Forwarded-Prefix", "X-Forwarded-Server", "X-Forwarded-Scheme",
	"X-Forwarded-Ssl", "Front-End-Https", "X-Original-Forwarded-For", "X-Client-IP",
	"True-Client-IP", "CF-Connecting-IP", "Fastly-Client-IP", "X-Cluster-Client-IP",
	"Client-IP", "X-ProxyUser-IP", "X-Envoy-External-Address", "X-Host", "X-Original-Host",
}

// cordonHeaderPrefix starts the headers the middleware sets itself
// (HeaderTokenID, HeaderTenant, HeaderHolder); incoming ones are removed.
const cordonHeaderPrefix = "x-cordon-"

// stripHeaders removes from h the headers a client must not pass to the
// protected service: method and URL overrides, any X-Cordon-* header, the
// device header, and, unless the peer is a trusted proxy, the identity
// headers. Names are compared case-insensitively with '_' taken as '-',
// because CGI-style upstreams (and nginx with underscores_in_headers) read
// X_Real_IP as X-Real-IP.
func stripHeaders(h http.Header, trusted bool, deviceHeader string) {
	for name := range h {
		if stripped(name, trusted, deviceHeader) {
			delete(h, name)
		}
	}
}

func stripped(name string, trusted bool, deviceHeader string) bool {
	if len(name) >= len(cordonHeaderPrefix) && headerNameEqual(name[:len(cordonHeaderPrefix)], cordonHeaderPrefix) {
		return true
	}
	if headerNameEqual(name, deviceHeader) {
		return true
	}
	for _, s := range alwaysStripped {
		if headerNameEqual(name, s) {
			return true
		}
	}
	if !trusted {
		for _, s := range identityHeaders {
			if headerNameEqual(name, s) {
				return true
			}
		}
	}
	return false
}

// headerNameEqual compares header names ignoring ASCII case and treating
// '_' as '-'.
func headerNameEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == '_' {
			x = '-'
		}
		if y == '_' {
			y = '-'
		}
		if x != y && lowerASCII(x) != lowerASCII(y) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
