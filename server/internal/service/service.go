// Package service gives every long-running part of a node one shape: it is built from a params
// struct, started once with Start and stopped once with Stop, and a List runs several in order.
package service

import (
	"context"
	"errors"
	"fmt"
)

// Service is a long-running part of a node: a loop, a writer, a cache refresher.
//
// Start begins its work and returns once it is running; ctx bounds the start itself, not the
// service's life. Stop ends the work gracefully within ctx: what it holds in memory is written
// or given back, and every goroutine it started has returned when Stop returns. Stop after a
// failed or missing Start does nothing.
type Service interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context)
}

// Killer is a Service that can also stop the way a crash would: at once, writing nothing and
// giving nothing back. Tests use it to prove that a node's death loses nothing.
type Killer interface {
	Kill()
}

// Named pairs a service with the name its errors and logs use.
type Named struct {
	Name    string
	Service Service
}

// List starts services in order and stops them in reverse, once.
type List struct {
	items   []Named
	started int
}

// NewList returns a list of the services in start order.
func NewList(items ...Named) *List { return &List{items: items} }

// Start starts each service in order. When one fails, those already started are stopped in
// reverse within ctx and the error names the one that failed.
func (l *List) Start(ctx context.Context) error {
	for _, it := range l.items[l.started:] {
		if err := it.Service.Start(ctx); err != nil {
			l.Stop(ctx)
			return fmt.Errorf("start %s: %w", it.Name, err)
		}
		l.started++
	}
	return nil
}

// Stop stops the started services in reverse order, all within ctx: a service that overruns
// ctx leaves the later ones less time, never more.
func (l *List) Stop(ctx context.Context) {
	for i := l.started - 1; i >= 0; i-- {
		l.items[i].Service.Stop(ctx)
	}
	l.started = 0
}

// Kill stops the started services in reverse order the way a crash would: a Killer is killed,
// any other service is stopped with a context that is already done.
func (l *List) Kill() {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for i := l.started - 1; i >= 0; i-- {
		if k, ok := l.items[i].Service.(Killer); ok {
			k.Kill()
			continue
		}
		l.items[i].Service.Stop(done)
	}
	l.started = 0
}

// ErrStarted is returned by a service's Start when it is already running.
var ErrStarted = errors.New("service already started")
