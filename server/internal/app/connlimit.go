package app

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"golang.org/x/net/netutil"
)

// connBound keeps the connections a node holds open under a bound, so that many clients (or a
// flood of connections) cannot grow its memory without end: the listener accepts no more than
// the bound, and when the bound is reached the server closes its idle keep-alive connections
// and answers without keep-alive until it is back under three quarters of the bound, so that
// clients that hold idle connections do not keep new ones waiting.
type connBound struct {
	server *http.Server
	max    int

	mu      sync.Mutex
	open    int
	closing bool // keep-alives are off until open falls under the low mark

	// applying is held by the one caller that brings the server's keep-alives in line with
	// closing; pending says the state changed meanwhile and needs another look.
	applying sync.Mutex
	pending  atomic.Bool
	applied  bool // keep-alives off, as last set
}

// bindConnections bounds srv's connections through ln at max (0: no bound) and returns the
// listener to serve.
func bindConnections(srv *http.Server, ln net.Listener, max int) net.Listener {
	if max <= 0 {
		return ln
	}
	b := &connBound{server: srv, max: max}
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		b.track(st)
		if prev != nil {
			prev(c, st)
		}
	}
	return netutil.LimitListener(ln, max)
}

func (b *connBound) track(st http.ConnState) {
	b.mu.Lock()
	switch st {
	case http.StateNew:
		b.open++
	case http.StateClosed, http.StateHijacked:
		b.open--
	default:
		b.mu.Unlock()
		return
	}
	switch {
	case !b.closing && b.open >= b.max:
		b.closing = true
	case b.closing && b.open < b.max*3/4:
		b.closing = false
	}
	b.mu.Unlock()
	b.apply()
}

// apply sets the server's keep-alives as closing says. Turning them off closes the idle
// connections, whose ConnState calls come back here from inside the call: they find applying
// held, mark the state pending and return, and the caller that holds it looks again.
func (b *connBound) apply() {
	for {
		b.pending.Store(true)
		if !b.applying.TryLock() {
			return
		}
		b.pending.Store(false)
		b.mu.Lock()
		off := b.closing
		b.mu.Unlock()
		if off != b.applied {
			b.server.SetKeepAlivesEnabled(!off)
			b.applied = off
		}
		b.applying.Unlock()
		if !b.pending.Load() {
			return
		}
	}
}
