package detect

import "strings"

// chunkBits sizes the slabs a table grows by; slabs never move, so a
// growing table never copies state.
const (
	chunkBits = 10
	chunkSize = 1 << chunkBits
)

// link places an entry in the least-recently-seen list (indices into the
// table, -1 none): prev is more recently seen, next less recently seen.
// Links live apart from the states, densely, so that moving an entry to the
// front does not pull its neighbours' whole states into the cache.
type link struct{ prev, next int32 }

type chunk[S any] struct {
	states [chunkSize]S
	links  [chunkSize]link
	keys   [chunkSize]string
}

// table holds fixed-size states (tokens, holders, tenants, sources) in
// slabs, indexed by key, linked in least-recently-seen order, with at most
// max entries: a new key in a full table takes the place of the least
// recently seen one.
type table[S any] struct {
	index   map[string]int32
	chunks  []*chunk[S]
	n       int32
	head    int32 // most recently seen
	tail    int32 // least recently seen
	max     int
	evicted uint64
}

func newTable[S any](max int) table[S] {
	return table[S]{index: make(map[string]int32), head: -1, tail: -1, max: max}
}

func (t *table[S]) at(i int32) *S      { return &t.chunks[i>>chunkBits].states[i&(chunkSize-1)] }
func (t *table[S]) link(i int32) *link { return &t.chunks[i>>chunkBits].links[i&(chunkSize-1)] }
func (t *table[S]) key(i int32) string { return t.chunks[i>>chunkBits].keys[i&(chunkSize-1)] }
func (t *table[S]) len() int           { return len(t.index) }
func (t *table[S]) find(k string) (int32, bool) {
	i, ok := t.index[k]
	return i, ok
}

// findBytes looks a key up without allocating.
func (t *table[S]) findBytes(k []byte) (int32, bool) {
	i, ok := t.index[string(k)]
	return i, ok
}

// touch returns the entry's index, marked most recently seen, creating it
// (and evicting the least recently seen entry when full) if needed.
func (t *table[S]) touch(k string) (i int32, created bool) {
	if i, ok := t.find(k); ok {
		t.moveFront(i)
		return i, false
	}
	return t.create(k), true
}

// touchBytes is touch for a key held in a buffer: no allocation unless the
// entry is created.
func (t *table[S]) touchBytes(k []byte) (i int32, created bool) {
	if i, ok := t.findBytes(k); ok {
		t.moveFront(i)
		return i, false
	}
	return t.create(string(k)), true
}

// lookup returns the entry's state without touching it, or nil.
func (t *table[S]) lookup(k string) *S {
	if i, ok := t.find(k); ok {
		return t.at(i)
	}
	return nil
}

func (t *table[S]) create(k string) int32 {
	var i int32
	if t.len() >= t.max && t.tail >= 0 {
		i = t.tail
		t.unlink(i)
		delete(t.index, t.key(i))
		t.evicted++
	} else {
		i = t.n
		t.n++
		if int(i>>chunkBits) == len(t.chunks) {
			t.chunks = append(t.chunks, new(chunk[S]))
		}
	}
	var zero S
	*t.at(i) = zero
	// Own the key: the caller's string may pin a whole decoded message.
	k = strings.Clone(k)
	t.chunks[i>>chunkBits].keys[i&(chunkSize-1)] = k
	t.index[k] = i
	t.pushFront(i)
	return i
}

func (t *table[S]) unlink(i int32) {
	l := t.link(i)
	if l.prev >= 0 {
		t.link(l.prev).next = l.next
	} else {
		t.head = l.next
	}
	if l.next >= 0 {
		t.link(l.next).prev = l.prev
	} else {
		t.tail = l.prev
	}
	l.prev, l.next = -1, -1
}

func (t *table[S]) pushFront(i int32) {
	l := t.link(i)
	l.prev, l.next = -1, t.head
	if t.head >= 0 {
		t.link(t.head).prev = i
	}
	t.head = i
	if t.tail < 0 {
		t.tail = i
	}
}

func (t *table[S]) moveFront(i int32) {
	if t.head == i {
		return
	}
	t.unlink(i)
	t.pushFront(i)
}
