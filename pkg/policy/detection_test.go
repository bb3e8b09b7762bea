package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const holderYAML = "holders:\n  - tenant: acme\n    holder: billing-api\n    scopes: [invoices:read]\n    audiences: [payments]\n    max_ttl: 24h\n"

// TestParseDetectionOnly: replay and eval accept a file with only the
// detectors: and response: sections, and still validate what it holds.
func TestParseDetectionOnly(t *testing.T) {
	good := []struct {
		name, data         string
		holders            int
		detectors, respons bool
	}{
		{"detectors only", "detectors:\n  cooldown: 30m\n", 0, true, false},
		{"response only", "response:\n  rules: []\n", 0, false, true},
		{"both with version", "version: 1\ndetectors: {cooldown: 1h}\nresponse: {rules: []}\n", 0, true, true},
		{"empty detectors section", "detectors:\n", 0, false, false},
		{"a whole policy", "version: 1\n" + holderYAML + "detectors: {cooldown: 1h}\n", 1, true, false},
		{"holders without version", holderYAML, 1, false, false},
		{"anchors", "x-d: &d {cooldown: 1h}\ndetectors: *d\n", 0, true, false},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseDetectionOnly("det.yaml", []byte(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Holders) != tc.holders || (p.Detectors != nil) != tc.detectors || (p.Response != nil) != tc.respons {
				t.Fatalf("got %d holders, detectors %v, response %v", len(p.Holders), p.Detectors != nil, p.Response != nil)
			}
			if p.Version != Version || len(p.Digest) != 64 || p.File != "det.yaml" {
				t.Errorf("version %d, digest %q, file %q", p.Version, p.Digest, p.File)
			}
		})
	}

	bad := []struct{ name, data, want string }{
		{"empty", "", "det.yaml: empty policy: want at least a detectors: or response: section"},
		{"comment only", "# nothing\n", "det.yaml: empty policy: want at least a detectors: or response: section"},
		{"version only", "version: 1\n", "det.yaml:1: no detectors: or response: section"},
		{"bad version", "version: 2\ndetectors: {}\n", "det.yaml:1: version: 2 is not supported"},
		{"misspelt section", "detector:\n  cooldown: 1h\n", `det.yaml:1: unknown field "detector" (did you mean "detectors"?)`},
		{"bad holder still refused", "detectors: {}\nholders:\n  - tenant: acme\n    holder: b\n    scopes: [x]\n    audiences: [s]\n    max_ttl: 1h\n",
			`det.yaml:5: holders[0].scopes[0]: "x" is not a scope`},
		{"holders not a list", "detectors: {}\nholders: {a: b}\n", "det.yaml:2: holders: want a list of holders"},
		{"two documents", "detectors: {}\n---\ndetectors: {}\n", "a second YAML document"},
		{"not a mapping", "[detectors]\n", "want a mapping"},
		{"huge", "detectors: {}\n" + strings.Repeat("#", MaxFileSize), "at most"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseDetectionOnly("det.yaml", []byte(tc.data))
			if err == nil {
				t.Fatal("accepted")
			}
			var pe *Error
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &pe) || pe.File != "det.yaml" {
				t.Errorf("not a located policy error: %#v", err)
			}
			if !strings.HasPrefix(err.Error(), tc.want) && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n got %s\nwant %s", err, tc.want)
			}
		})
	}
}

// TestIssuerStillRefusesDetectionOnly: the narrow entry point changes
// nothing for the issuer, which reads policies with Load/Parse: a file
// without holders (or version) is refused there.
func TestIssuerStillRefusesDetectionOnly(t *testing.T) {
	path := filepath.Join(fixtures, "detection", "detectors-only.yaml")
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), `missing required field "version"`) {
		t.Errorf("Load of a detectors-only file: %v, want it refused", err)
	}
	if _, err := Parse("x.yaml", []byte("version: 1\ndetectors: {cooldown: 1h}\n")); err == nil ||
		!strings.Contains(err.Error(), `missing required field "holders"`) {
		t.Errorf("Parse without holders: %v, want it refused", err)
	}
	p, err := LoadDetectionOnly(path)
	if err != nil || p.Detectors == nil || len(p.Holders) != 0 {
		t.Fatalf("LoadDetectionOnly: %+v, %v", p, err)
	}
	if _, err := LoadDetectionOnly(filepath.Join(fixtures, "detection", "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// TestDetectionOnlyAcceptsEveryPolicy: every fixture the issuer accepts is
// accepted for detection with the same holders and sections, and every bad
// holders fixture is refused the same way.
func TestDetectionOnlyAcceptsEveryPolicy(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(fixtures, "good", "*.yaml"))
	files = append(files, filepath.Join(fixtures, "default.yaml"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		full, err := Parse(f, b)
		if err != nil {
			t.Fatal(err)
		}
		det, err := ParseDetectionOnly(f, b)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(det.Holders) != len(full.Holders) || (det.Detectors == nil) != (full.Detectors == nil) || det.Digest != full.Digest {
			t.Errorf("%s: detection-only parse differs", f)
		}
	}
	bad, _ := filepath.Glob(filepath.Join(fixtures, "bad", "*.yaml"))
	for _, f := range bad {
		base := filepath.Base(f)
		if base == "missing-version.yaml" || base == "empty.yaml" {
			continue // what detection-only relaxes
		}
		b, _ := os.ReadFile(f)
		_, errFull := Parse(base, b)
		_, errDet := ParseDetectionOnly(base, b)
		if errDet == nil || errDet.Error() != errFull.Error() {
			t.Errorf("%s: detection-only error %v, want %v", base, errDet, errFull)
		}
	}
}
