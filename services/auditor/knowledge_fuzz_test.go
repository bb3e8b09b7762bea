package auditor

import (
	"strconv"
	"testing"

	"github.com/cordonhq/cordon/pkg/detect"
)

// FuzzKnowledgeEntry feeds arbitrary knowledge bucket entries to the
// parsers the follower uses: they never panic, and what they accept is
// exactly what the writer would write for it (the key and value it would
// produce read back the same), so a malformed entry is refused, never
// misread. Seeds: testdata/fuzz/FuzzKnowledgeEntry.
func FuzzKnowledgeEntry(f *testing.F) {
	for _, s := range [][2]string{
		{"net.abc", "1700000000"}, {"space.1f.6.fd000b0000000000", "5"}, {"learnt.ffffffffffffffff", "3"},
		{"mark.p3", "1700000000:42"}, {"mark.p03", "1:1"}, {"net.10000000000000000", "1"}, {"space.1.5.2", "1"},
	} {
		f.Add(s[0], []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		if p, m, err := parseMark(key, value); err == nil {
			if MarkKey(p) != key {
				t.Fatalf("mark %q read as partition %d", key, p)
			}
			if back := strconv.FormatInt(m.T, 10) + ":" + strconv.FormatUint(m.Seq, 10); back != string(value) {
				t.Fatalf("mark %q=%q read as %+v", key, value, m)
			}
		}
		fact, err := ParseFact(key, value)
		if err != nil {
			return
		}
		if fact.Time <= 0 || fact.Kind != detect.FactWorkNetwork && fact.Kind != detect.FactTenantSpace && fact.Kind != detect.FactTenantLearnt {
			t.Fatalf("%q=%q read as %+v", key, value, fact)
		}
		again, err := ParseFact(FactKey(fact), []byte(strconv.FormatInt(fact.Time, 10)))
		if err != nil || again != fact {
			t.Fatalf("%q=%q read as %+v, written back as %q: %+v, %v", key, value, fact, FactKey(fact), again, err)
		}
	})
}
