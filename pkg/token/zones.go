package token

import (
	"fmt"
	"sync"
	"time"
	_ "time/tzdata" // windows must resolve IANA zones on machines without a zone database
)

type zoneCache struct {
	mu sync.RWMutex
	m  map[string]*time.Location
}

func newZoneCache() *zoneCache { return &zoneCache{m: map[string]*time.Location{}} }

func (z *zoneCache) load(name string) (*time.Location, error) {
	z.mu.RLock()
	loc, ok := z.m[name]
	z.mu.RUnlock()
	if ok {
		return loc, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errZone, err)
	}
	z.mu.Lock()
	if len(z.m) < 1024 {
		z.m[name] = loc
	}
	z.mu.Unlock()
	return loc, nil
}
