package detect

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestHourOfWeek(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	ny, _ := time.LoadLocation("America/New_York")
	kolkata, _ := time.LoadLocation("Asia/Kolkata")
	tests := []struct {
		name string
		at   time.Time
		loc  *time.Location
		want int
	}{
		{"monday midnight utc", time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC), time.UTC, 0},
		{"sunday 23h utc", time.Date(2026, 3, 8, 23, 59, 0, 0, time.UTC), time.UTC, 167},
		{"paris is an hour ahead in winter", time.Date(2026, 3, 2, 0, 30, 0, 0, time.UTC), paris, 1},
		{"new york before dst", time.Date(2026, 3, 7, 15, 0, 0, 0, time.UTC), ny, 5*24 + 10},
		{"new york after dst", time.Date(2026, 3, 9, 15, 0, 0, 0, time.UTC), ny, 0*24 + 11},
		{"half-hour zone", time.Date(2026, 3, 3, 18, 45, 0, 0, time.UTC), kolkata, 2*24 + 0},
		{"before 1970", time.Date(1969, 12, 29, 5, 0, 0, 0, time.UTC), time.UTC, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hourOfWeek(tt.at, tt.loc); got != tt.want {
				t.Fatalf("hourOfWeek(%s in %s) = %d (%s), want %d (%s)", tt.at, tt.loc, got, hourName(got), tt.want, hourName(tt.want))
			}
		})
	}
}

func TestNetKey(t *testing.T) {
	tests := []struct {
		ip     string
		p4, p6 int
		want   string
	}{
		{"10.1.2.3", 24, 64, "10.1.2.0/24"},
		{"10.1.2.3", 32, 64, "10.1.2.3/32"},
		{"::ffff:10.1.2.3", 24, 64, "10.1.2.0/24"},
		{"2001:db8:1:2:3:4:5:6", 24, 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:3:4:5:6", 24, 48, "2001:db8:1::/48"},
		{"fd00::1", 24, 64, "fd00::/64"},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			k, v6 := netKey(netip.MustParseAddr(tt.ip), tt.p4, tt.p6)
			if got := netString(k, v6, tt.p4, tt.p6); got != tt.want {
				t.Fatalf("network of %s = %s, want %s", tt.ip, got, tt.want)
			}
		})
	}
	a, _ := netKey(netip.MustParseAddr("10.1.2.3"), 24, 64)
	b, _ := netKey(netip.MustParseAddr("10.1.2.200"), 24, 64)
	c, _ := netKey(netip.MustParseAddr("10.1.3.3"), 24, 64)
	if a != b || a == c {
		t.Fatalf("same /24 must share a key and another /24 must not: %x %x %x", a, b, c)
	}
}

func routeShape(method, route string) (shape uint32, id uint64, hasID bool) {
	route, start, end := idSegment(route)
	return shapeOf(method, route, start, end), idOf(route, start, end), start >= 0
}

func TestRouteShape(t *testing.T) {
	a, ida, oka := routeShape("GET", "/v1/users/1001")
	b, idb, _ := routeShape("GET", "/v1/users/1002")
	c, _, _ := routeShape("DELETE", "/v1/users/1001")
	d, _, okd := routeShape("GET", "/v1/users")
	_, ide, _ := routeShape("GET", "/v2/users/1001/history")
	if !oka || ida != 1001 || idb != 1002 || a != b {
		t.Fatalf("ids 1001 and 1002 of one route: shapes %x %x ids %d %d", a, b, ida, idb)
	}
	if a == c || a == d || okd {
		t.Fatal("method and id-less routes must give other shapes")
	}
	if ide != 1001 {
		t.Fatalf("the last digit run is the id, got %d", ide)
	}
}

func TestWilsonUpper(t *testing.T) {
	if u := wilsonUpper(0, 100); u < 0.02 || u > 0.03 {
		t.Fatalf("0 of 100: upper bound %.4f, want about 0.027", u)
	}
	if u := wilsonUpper(0, 1000); u > 0.003 {
		t.Fatalf("0 of 1000: upper bound %.4f, want about 0.0027", u)
	}
	if u := wilsonUpper(50, 100); u < 0.5 || u > 0.6 {
		t.Fatalf("50 of 100: upper bound %.4f", u)
	}
	if wilsonUpper(0, 0) != 1 {
		t.Fatal("no data must not look rare")
	}
}

func TestNetStateInsertEvictsOutsideBaselineFirst(t *testing.T) {
	var n netState
	for i := 0; i < maxNetworks; i++ {
		s := n.insert(uint64(i), false, uint32(100+i))
		if i%2 == 0 {
			n.known |= bit(s)
		}
	}
	// Slot 1 is the least recently used slot outside the baseline.
	s := n.insert(999, false, 500)
	if n.keys[s] != 999 || s != 1 {
		t.Fatalf("new network went to slot %d, want 1 (oldest unknown)", s)
	}
	if n.find(0, false) < 0 {
		t.Fatal("a baseline network was evicted while unknown ones remained")
	}
	if n.find(999, true) >= 0 {
		t.Fatal("an IPv4 key must not match an IPv6 lookup")
	}
}

func TestHourProfileHalvesKeepingUsedHours(t *testing.T) {
	var h hourProfile
	h.add(3)
	for i := 0; i < 300; i++ {
		h.add(10)
	}
	if h[3] == 0 {
		t.Fatal("an hour ever used must stay used after halving")
	}
	if h[10] < 100 || h[10] == 255 {
		t.Fatalf("busy hour count %d, want halved and growing", h[10])
	}
}

func TestTableEvictsLeastRecentlySeen(t *testing.T) {
	tab := newTable[tokenState](3)
	for _, id := range []string{"a", "b", "c"} {
		tab.touch(id)
	}
	tab.touch("a") // order now a, c, b (most to least recent)
	tab.touch("d") // evicts b
	tab.touch("c") // c, d, a
	tab.touch("e") // evicts a
	for id, want := range map[string]bool{"a": false, "b": false, "c": true, "d": true, "e": true} {
		if got := tab.lookup(id) != nil; got != want {
			t.Errorf("token %s kept = %v, want %v", id, got, want)
		}
	}
	var order []string
	for i := tab.head; i >= 0; i = tab.link(i).next {
		order = append(order, tab.key(i))
	}
	if got := fmt.Sprint(order); got != "[e c d]" || tab.evicted != 2 || tab.len() != 3 {
		t.Fatalf("order %s, %d evicted, %d held", got, tab.evicted, tab.len())
	}
}

// TestKnownNetworksOrder: the known networks of a baseline are listed most
// recently used first, ties in address order (IPv4 first) whatever slots
// they occupy, networks merely seen left out.
func TestKnownNetworksOrder(t *testing.T) {
	e, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	key := func(s string) (uint64, bool) { return netKey(netip.MustParseAddr(s), 24, 64) }
	h := &holderState{}
	for _, n := range []struct {
		ip    string
		last  uint32
		known bool
	}{
		{"2001:db8::1", 100, true},
		{"10.9.0.1", 100, true},
		{"10.2.0.1", 100, true},
		{"10.3.0.1", 300, false},
		{"10.4.0.1", 200, true},
		{"10.1.0.1", 50, true},
	} {
		k, v6 := key(n.ip)
		i := h.nets.insert(k, v6, n.last)
		if n.known {
			h.nets.known |= bit32(i)
		}
	}
	s := &tokenState{}
	list, level := e.knownNetworks(s, &obs{h: h, holderLearned: true})
	if want := "10.4.0.0/24,10.2.0.0/24,10.9.0.0/24,2001:db8::/64,10.1.0.0/24"; list != want || level != LevelHolder {
		t.Fatalf("known networks %q (level %q), want %q (level holder)", list, level, want)
	}
	if list, level := e.knownNetworks(s, &obs{h: h, tokLearned: false}); list != "" || level != "" {
		t.Fatalf("no learnt baseline: known networks %q (level %q), want none", list, level)
	}
}
