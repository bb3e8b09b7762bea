package token_test

import (
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/token"
)

// TestScanFindsMintedTokens: the pattern a scanner registers finds every
// minted token wherever it sits in text (quoted, in a URL, at a line's
// end), and the checksum rule drops a typo, a truncation and a look-alike.
func TestScanFindsMintedTokens(t *testing.T) {
	s := newSigner(t)
	tok, err := s.Mint(testClaims())
	if err != nil {
		t.Fatal(err)
	}
	typo := tok[:20] + string(tok[20]^1) + tok[21:]
	tests := []struct {
		name, text string
		want       []string
	}{
		{"alone", tok, []string{tok}},
		{"env file", "export CORDON_TOKEN=" + tok + "\n", []string{tok}},
		{"quoted json", `{"token":"` + tok + `"}`, []string{tok}},
		{"header", "Authorization: Bearer " + tok + "\r\n", []string{tok}},
		{"url query", "https://api.example/x?access_token=" + tok + "&y=1", []string{tok}},
		{"twice", tok + " " + tok, []string{tok}},
		{"typo", "token: " + typo, nil},
		{"truncated", tok[:len(tok)-1], nil},
		{"longer run", tok + "Z", nil},
		{"glued in a word", "x" + tok, nil},
		{"other prefix", "cordonx_" + tok[len(token.Prefix):], nil},
		{"anchor key", "cordonanchor_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := token.Scan(tt.text)
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("Scan found %d tokens, want %d", len(got), len(tt.want))
			}
		})
	}
	if !token.CheckChecksum(tok) || token.CheckChecksum(typo) {
		t.Error("CheckChecksum disagrees with Parse")
	}
}

// FuzzScan: whatever Scan returns passes Parse's checksum check, and Scan
// never panics.
func FuzzScan(f *testing.F) {
	f.Add("cordon_abc.def.ghi")
	f.Add("")
	f.Fuzz(func(t *testing.T, text string) {
		for _, s := range token.Scan(text) {
			if _, err := token.Parse(s); err == token.ErrChecksum {
				t.Fatalf("Scan returned %q, whose checksum Parse refuses", s)
			}
		}
	})
}
