package httpin

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWaitContext(t *testing.T) {
	t.Run("times out like WithTimeout", func(t *testing.T) {
		start := time.Now()
		ctx, cancel := waitContext(context.Background(), 50*time.Millisecond)
		defer cancel()
		if d, ok := ctx.Deadline(); !ok || d.Before(start.Add(50*time.Millisecond)) || d.After(time.Now().Add(50*time.Millisecond)) {
			t.Errorf("deadline %v, %v; want 50ms after the call", d, ok)
		}
		<-ctx.Done()
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Errorf("Err = %v, want DeadlineExceeded", ctx.Err())
		}
	})
	t.Run("deadline counts from the call, not from the first Done", func(t *testing.T) {
		ctx, cancel := waitContext(context.Background(), 20*time.Millisecond)
		defer cancel()
		time.Sleep(30 * time.Millisecond)
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Errorf("Err = %v after the wait passed, want DeadlineExceeded", ctx.Err())
		}
	})
	t.Run("parent's cancellation and values", func(t *testing.T) {
		type key struct{}
		parent, stop := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
		ctx, cancel := waitContext(parent, time.Hour)
		defer cancel()
		if ctx.Value(key{}) != "v" {
			t.Error("parent's value lost")
		}
		done := ctx.Done()
		stop()
		<-done
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Errorf("Err = %v, want Canceled", ctx.Err())
		}
	})
	t.Run("cancel before use", func(t *testing.T) {
		ctx, cancel := waitContext(context.Background(), time.Hour)
		cancel()
		select {
		case <-ctx.Done():
		default:
			t.Error("not done after cancel")
		}
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Errorf("Err = %v, want Canceled", ctx.Err())
		}
	})
	t.Run("cancel after use", func(t *testing.T) {
		ctx, cancel := waitContext(context.Background(), time.Hour)
		done := ctx.Done()
		cancel()
		<-done
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Errorf("Err = %v, want Canceled", ctx.Err())
		}
	})
}
