// Package simulate generates realistic, labelled API-token traffic for
// Cordon and scores detectors against it.
//
// Generate builds, deterministically from a seed, a world of tenants,
// holders (services) and target services: each holder has its own tokens
// with claims (scopes, audience, networks, time-of-use windows in its time
// zone), a small pool of source addresses in its networks, a daily and
// weekly rhythm, the occasional normal denial, and tokens that rotate (a
// successor issued, the predecessor revoked after its grace, a few clients
// late to switch). Into that traffic it injects labelled attacks: a leaked
// token replayed from a new network at night, scope probing, use after
// revocation, slow low-volume exfiltration and a token shared across
// networks. The output is a time-ordered list of event envelopes (ledger and
// usage, UUIDv7 ids, event times in simulated time) that can be written as
// JSONL — the format `cordon replay` reads — and the attack labels as JSON.
//
// Score matches anomalies against the labels and reports precision and
// recall per detector and overall, the attacks that went undetected and the
// time each attack took to be noticed.
package simulate
