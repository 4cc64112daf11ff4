package httpin

import (
	"context"
	"sync"
	"time"
)

// waitContext is context.WithTimeout(parent, wait) made lazily: the timer and the registration
// with parent (which allocate, take locks and touch the runtime's timer heap) are made only
// when Done, Err or Deadline is first called; the deadline is wait from now all the same. The engine's Dispatch
// looks at its context only when the input has no room for another message, so an input that
// keeps up pays for neither. cancel releases what was made; after it the context is done
// (context.Canceled) if it was not already. Values come from parent.
func waitContext(parent context.Context, wait time.Duration) (context.Context, context.CancelFunc) {
	c := &waitCtx{Context: parent, deadline: time.Now().Add(wait)}
	return c, c.cancel
}

type waitCtx struct {
	context.Context // parent, for Value
	deadline        time.Time

	once sync.Once
	ctx  context.Context // the timeout context, or canceledCtx
	stop context.CancelFunc
}

// canceledCtx is a context that is already canceled.
var canceledCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

func (c *waitCtx) init() {
	c.once.Do(func() { c.ctx, c.stop = context.WithDeadline(c.Context, c.deadline) })
}

func (c *waitCtx) Deadline() (time.Time, bool) { c.init(); return c.ctx.Deadline() }
func (c *waitCtx) Done() <-chan struct{}       { c.init(); return c.ctx.Done() }
func (c *waitCtx) Err() error                  { c.init(); return c.ctx.Err() }

func (c *waitCtx) cancel() {
	c.once.Do(func() { c.ctx = canceledCtx })
	if c.stop != nil {
		c.stop()
	}
}
