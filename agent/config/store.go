package config

import (
	"sync"
)

// Store holds the configuration in use. Readers call Current for a
// consistent snapshot; PUT /1.0/config swaps in a new one with Update, and
// everything that caches mutable options (the heartbeat sender) waits on
// Changed. There is exactly one Store per process, so a change is seen by
// every part of the agent at once.
type Store struct {
	mu      sync.Mutex // guards the following
	cur     *Config
	changed chan struct{}
}

// NewStore returns a Store holding c.
func NewStore(c *Config) *Store {
	return &Store{cur: c, changed: make(chan struct{})}
}

// Current returns the configuration in use. Callers must not modify it.
func (s *Store) Current() *Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Changed returns a channel that is closed at the next Update.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Update replaces the configuration and wakes every Changed waiter.
func (s *Store) Update(c *Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = c
	close(s.changed)
	s.changed = make(chan struct{})
}
