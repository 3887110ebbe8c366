package scheduler

// Waker asks the claimer for a round: the cron tick and dispatch (when it has room again) call
// Wake, the claimer listens. Wakes while a round is under way merge into one.
type Waker struct{ c chan struct{} }

// NewWaker returns a waker.
func NewWaker() *Waker { return &Waker{c: make(chan struct{}, 1)} }

// Wake asks for a round soon.
func (w *Waker) Wake() {
	select {
	case w.c <- struct{}{}:
	default:
	}
}
