package adminauth

import (
	"net/http"
	"net/netip"

	"github.com/cordonhq/cordon/pkg/token"
)

// PeerOf is what an HTTP request proves about its caller: the socket
// peer's address (forwarding headers are never believed: the control
// plane's APIs take no proxy in front of them) and the thumbprint of the
// TLS client certificate, whose private key the handshake proved the
// caller holds.
func PeerOf(r *http.Request) *Peer {
	p := &Peer{}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		p.Addr = ap.Addr().Unmap()
	} else if a, err := netip.ParseAddr(r.RemoteAddr); err == nil {
		p.Addr = a.Unmap()
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		p.Device = token.Thumbprint(r.TLS.PeerCertificates[0].Raw)
	}
	return p
}
