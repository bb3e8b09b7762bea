package enforce

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/token"
)

// Headers the middleware sets on an allowed request for the next handler.
// Incoming values are always removed first, so they cannot be forged.
const (
	HeaderTokenID = "X-Cordon-Token-Id"
	HeaderTenant  = "X-Cordon-Tenant"
	HeaderHolder  = "X-Cordon-Holder"
)

// Middleware enforces the enforcer's routes in front of next. It first
// requires a canonical request path (else ReasonBadPath, 400) and rewrites
// the request to it, so the path the route is matched on is exactly the
// path next sees (and the proxy forwards). Then it matches the request to a
// route (Options.Routes), whose path parameters' values are the resource
// the usage event reports, takes the bearer token from the Authorization
// header, the client address from the socket (or, from a trusted proxy,
// from X-Forwarded-For / X-Real-IP) and the device from the TLS client
// certificate (or a trusted proxy's device header), and calls Check. A
// denied request gets Reason.HTTPStatus with a JSON body naming the reason
// only. An allowed request reaches next without its Authorization header
// (unless Options.KeepAuthorization), without method- and URL-override
// headers, incoming X-Cordon-* headers, the device header and, unless the
// peer is a trusted proxy, client-supplied identity headers (X-Real-IP,
// Forwarded, X-Forwarded-*, True-Client-IP, …), and with the
// X-Cordon-Token-Id, -Tenant and -Holder headers set.
func (e *Enforcer) Middleware(next http.Handler) http.Handler {
	return &middleware{e: e, next: next}
}

type middleware struct {
	e    *Enforcer
	next http.Handler
}

// ServeHTTP implements http.Handler.
func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e := m.e
	peer := socketAddr(r.RemoteAddr)
	trusted := e.trusted(peer)
	req := Request{
		Token:      bearer(r.Header),
		Method:     r.Method,
		RemoteAddr: e.clientAddr(r, peer, trusted),
		UserAgent:  r.UserAgent(),
		Device:     e.device(r, trusted),
		Time:       time.Now(),
	}
	var d Decision
	if !canonicalizePath(r) {
		req.Route = r.URL.EscapedPath()
		d = e.checkUnrouted(&req, ReasonBadPath)
	} else if rt := e.routes.match(r); rt != nil {
		req.Route, req.Scope, req.Resource = rt.Path, rt.Scope, rt.resource(r.URL.Path)
		d = e.Check(&req)
	} else {
		req.Route = r.URL.Path
		d = e.checkUnrouted(&req, ReasonNoRoute)
	}
	if !d.Allow {
		e.writeDeny(w, d.Reason)
		return
	}
	h := r.Header
	stripHeaders(h, trusted, e.opts.DeviceHeader)
	if !e.opts.KeepAuthorization {
		h.Del("Authorization")
	}
	h.Set(HeaderTokenID, d.TokenID)
	h.Set(HeaderTenant, d.Tenant)
	h.Set(HeaderHolder, d.Holder)
	m.next.ServeHTTP(w, r)
}

// Pre-rendered deny bodies: the reason and nothing that helps an attacker.
var denyBodies = func() map[Reason][]byte {
	m := map[Reason][]byte{}
	for _, r := range Reasons() {
		m[r] = []byte(`{"error":"` + strings.ToLower(strings.ReplaceAll(http.StatusText(r.HTTPStatus()), " ", "_")) + `","reason":"` + string(r) + `"}` + "\n")
	}
	return m
}()

func (e *Enforcer) writeDeny(w http.ResponseWriter, r Reason) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	status := r.HTTPStatus()
	if r == ReasonThrottled {
		h.Set("Retry-After", strconv.Itoa(int((e.opts.ThrottleCooldown+time.Second-1)/time.Second)))
	}
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="cordon", error="invalid_token"`)
		if r == ReasonMissing {
			h.Set("WWW-Authenticate", `Bearer realm="cordon"`)
		}
	}
	w.WriteHeader(status)
	_, _ = w.Write(denyBodies[r])
}

// bearer returns the token of an "Authorization: Bearer …" header.
func bearer(h http.Header) string {
	v := h.Get("Authorization")
	if len(v) < 7 || !strings.EqualFold(v[:7], "bearer ") {
		return ""
	}
	return strings.TrimSpace(v[7:])
}

// socketAddr parses http.Request.RemoteAddr ("ip:port").
func socketAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap()
	}
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

func (e *Enforcer) trusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range e.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr is the socket peer, or, when the peer is a trusted proxy, the
// right-most X-Forwarded-For address that is not itself a trusted proxy
// (else X-Real-IP).
func (e *Enforcer) clientAddr(r *http.Request, peer netip.Addr, trusted bool) netip.Addr {
	if !trusted {
		return peer
	}
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		hops := strings.Split(strings.Join(xff, ","), ",")
		var client netip.Addr
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break // a garbled hop: trust nothing further left
			}
			client = a.Unmap()
			if !e.trusted(client) {
				return client
			}
		}
		if client.IsValid() {
			return client
		}
		return peer
	}
	if xr := r.Header.Get("X-Real-IP"); xr != "" {
		if a, err := netip.ParseAddr(strings.TrimSpace(xr)); err == nil {
			return a.Unmap()
		}
	}
	return peer
}

// device is the thumbprint of the client certificate: from a trusted
// proxy's device header when present, else from the TLS connection.
func (e *Enforcer) device(r *http.Request, trusted bool) string {
	if trusted {
		if v := r.Header.Get(e.opts.DeviceHeader); v != "" {
			return parseDeviceHeader(v)
		}
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return token.Thumbprint(r.TLS.PeerCertificates[0].Raw)
	}
	return ""
}

// parseDeviceHeader accepts a hex SHA-256 thumbprint (with or without
// colons, any case) or a URL-escaped PEM certificate; anything else yields
// no device.
func parseDeviceHeader(v string) string {
	v = strings.TrimSpace(v)
	if h := strings.ToLower(strings.ReplaceAll(v, ":", "")); len(h) == 64 {
		if _, err := hex.DecodeString(h); err == nil {
			return h
		}
	}
	s, err := url.QueryUnescape(v)
	if err != nil {
		return ""
	}
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE" {
		return ""
	}
	if _, err := x509.ParseCertificate(b.Bytes); err != nil {
		return ""
	}
	return token.Thumbprint(b.Bytes)
}
