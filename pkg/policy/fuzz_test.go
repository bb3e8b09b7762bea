package policy

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the parser. It must never panic; an
// error must be a located *Error; and a policy it accepts must be usable: a
// request for everything a ceiling allows passes Check against it.
func FuzzParse(f *testing.F) {
	addFixtureSeeds(f, fixtures, filepath.Join(fixtures, "good"), filepath.Join(fixtures, "bad"))
	f.Add([]byte("version: 1\nholders: [{tenant: a, holder: b, scopes: [x:*], audiences: ['*'], max_ttl: 1s, windows: ['fri-mon 23:00-24:00 Asia/Kolkata']}]"))
	f.Add([]byte("version: 1\nx: &a {<<: *a}\nholders: []"))
	f.Add([]byte("version: 1\nholders: [&h {tenant: a, holder: b, scopes: [x:y], audiences: [s], max_ttl: 1d}, *h]"))

	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || !errors.Is(err, ErrInvalid) || pe.File != "fuzz.yaml" {
				t.Fatalf("error is not a located policy error: %#v", err)
			}
			return
		}
		if p.Version != Version || len(p.Digest) != 64 {
			t.Fatalf("accepted policy with version %d, digest %q", p.Version, p.Digest)
		}
		for i := range p.Holders {
			c := &p.Holders[i]
			if len(c.Scopes) == 0 || len(c.Audiences) == 0 || c.MaxTTL < minTTL {
				t.Fatalf("accepted ceiling without scopes, audiences or max_ttl: %+v", c)
			}
			if got, err := p.Lookup(c.Tenant, c.Holder); err != nil || got != c {
				t.Fatalf("lookup %s: %v", c.Name(), err)
			}
			r := Request{Tenant: c.Tenant, Holder: c.Holder, Scopes: c.Scopes, BreakGlass: c.BreakGlass}
			if len(c.Environments) > 0 {
				r.Environment = c.Environments[len(c.Environments)-1]
			}
			if c.RequireDevice {
				r.Device = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
			}
			if err := Check(c, Narrow(c, r)); err != nil {
				t.Fatalf("the whole ceiling of %s exceeds itself: %v", c.Name(), err)
			}
		}
	})
}

// FuzzParseDetectionOnly feeds arbitrary bytes to the detection-only
// parser: it must never panic, an error must be a located *Error, and it
// must accept every policy Parse accepts, with the same holders and
// sections (it only relaxes what is required).
func FuzzParseDetectionOnly(f *testing.F) {
	addFixtureSeeds(f, fixtures, filepath.Join(fixtures, "good"), filepath.Join(fixtures, "bad"), filepath.Join(fixtures, "detection"))
	f.Add([]byte("detectors: {cooldown: 1h}\nresponse: {rules: []}"))
	f.Add([]byte("version: 1\n"))
	f.Add([]byte("x-a: &a {cooldown: 1h}\ndetectors: {<<: *a}\nholders: ~"))

	f.Fuzz(func(t *testing.T, data []byte) {
		det, err := ParseDetectionOnly("fuzz.yaml", data)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || !errors.Is(err, ErrInvalid) || pe.File != "fuzz.yaml" {
				t.Fatalf("error is not a located policy error: %#v", err)
			}
		} else if det.Version != Version || len(det.Digest) != 64 {
			t.Fatalf("accepted policy with version %d, digest %q", det.Version, det.Digest)
		}
		full, ferr := Parse("fuzz.yaml", data)
		if ferr != nil {
			return
		}
		if err != nil {
			t.Fatalf("Parse accepts what ParseDetectionOnly refuses: %v", err)
		}
		if len(det.Holders) != len(full.Holders) || (det.Detectors == nil) != (full.Detectors == nil) || (det.Response == nil) != (full.Response == nil) {
			t.Fatalf("the two parses differ: %d/%d holders", len(det.Holders), len(full.Holders))
		}
	})
}

// addFixtureSeeds adds every policy fixture (*.yaml) in dirs to the corpus.
func addFixtureSeeds(f *testing.F, dirs ...string) {
	f.Helper()
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}
