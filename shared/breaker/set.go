package breaker

import (
	"context"
	"sync"
)

// Set is the breakers of a worker's dependencies. A nil *Set has no
// breakers: nothing is ever paused.
type Set struct {
	breakers map[Dependency]*Breaker
}

// NewSet groups breakers, one per dependency.
func NewSet(bs ...*Breaker) *Set {
	s := &Set{breakers: map[Dependency]*Breaker{}}
	for _, b := range bs {
		s.breakers[b.dep] = b
	}
	return s
}

// Get returns the breaker of dep, or nil.
func (s *Set) Get(dep Dependency) *Breaker {
	if s == nil {
		return nil
	}
	return s.breakers[dep]
}

// Blocking returns the first open breaker among deps, or nil.
func (s *Set) Blocking(deps ...Dependency) *Breaker {
	for _, d := range deps {
		if b := s.Get(d); b != nil && b.Open() {
			return b
		}
	}
	return nil
}

// WaitClosed waits until none of deps' breakers is open, or ctx ends.
func (s *Set) WaitClosed(ctx context.Context, deps ...Dependency) error {
	for {
		b := s.Blocking(deps...)
		if b == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.Closed():
		}
	}
}

// Paused returns the fault of every open breaker.
func (s *Set) Paused() map[Dependency]Fault {
	out := map[Dependency]Fault{}
	if s == nil {
		return out
	}
	for d, b := range s.breakers {
		if open, f, _ := b.State(); open {
			out[d] = f
		}
	}
	return out
}

// Run runs every breaker's prober until ctx ends.
func (s *Set) Run(ctx context.Context) {
	if s == nil {
		return
	}
	var wg sync.WaitGroup
	for _, b := range s.breakers {
		wg.Go(func() { b.Run(ctx) })
	}
	wg.Wait()
}
