package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/engine/enginetest"
	"github.com/turnout-router/turnout/internal/testutil"
)

// flakySend fails, delays or hangs at random.
func flakySend(ctx context.Context, _ int, _ *event.Event) error {
	switch p := rand.IntN(100); {
	case p < 15:
		return errors.New("random failure")
	case p < 20:
		return engine.Permanent(errors.New("random permanent failure"))
	case p < 30:
		select {
		case <-time.After(time.Duration(rand.IntN(2000)) * time.Microsecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	case p < 33:
		<-ctx.Done() // hangs until the send timeout or shutdown
		return ctx.Err()
	}
	return nil
}

// TestHammer runs many dispatching goroutines against random outputs, rule outcomes and a
// shutdown at a random moment with a random drain deadline, and checks the invariant: every
// message Dispatch accepted is settled exactly once, acks only when every chosen output (or the
// dead-letter output) confirmed or the rule dropped it, and ordered inputs settle in order.
func TestHammer(t *testing.T) {
	rounds := 6
	if testing.Short() {
		rounds = 2
	}
	for round := range rounds {
		mode := engine.AtLeastOnce
		if round == rounds-1 {
			mode = engine.BestEffort
		}
		t.Run(fmt.Sprintf("round%d-%s", round, mode), func(t *testing.T) { hammer(t, mode) })
	}
}

func hammer(t *testing.T, mode engine.Mode) {
	var decisions sync.Map // event id -> engine.Decision (or error)
	rule := enginetest.RuleFunc(func(ctx context.Context, e *event.Event) (engine.Decision, error) {
		var d engine.Decision
		var err error
		switch p := rand.IntN(100); {
		case p < 10:
			d = engine.Decision{Action: engine.ActionDrop}
		case p < 15:
			d = engine.Decision{Action: engine.ActionFail, Reason: "random fail"}
		case p < 20:
			err = &engine.RuleError{Kind: "trap", Err: errors.New("random trap")}
		case p < 23:
			d = engine.Decision{Action: engine.ActionRoute, Outputs: []string{"a", "missing"}}
		default:
			all := []string{"a", "b", "c"}
			rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
			d = engine.Decision{Action: engine.ActionRoute, Outputs: all[:1+rand.IntN(3)]}
		}
		if err != nil {
			decisions.Store(e.ID(), err)
		} else {
			decisions.Store(e.ID(), d)
		}
		return d, err
	})
	outs := map[string]*enginetest.Sink{"a": {Fail: flakySend}, "b": {Fail: flakySend}, "c": {Fail: flakySend}}
	dl := &enginetest.Sink{Fail: func(ctx context.Context, n int, e *event.Event) error {
		if rand.IntN(100) < 25 {
			return errors.New("dead-letter failure")
		}
		return nil
	}}
	ordered := &enginetest.Source{Ordered: true}
	plain := &enginetest.Source{}
	reg := prometheus.NewRegistry()
	e := engine.New(engine.Options{Registerer: reg})
	route := engine.Route{
		Config: engine.RouteConfig{Name: "r", Mode: mode, MaxInFlight: 8,
			Retry: engine.RetryPolicy{MaxAttempts: 3, InitialBackoff: 100 * time.Microsecond, MaxBackoff: time.Millisecond, Timeout: 20 * time.Millisecond}},
		Inputs:     map[string]engine.Source{"ordered": ordered, "plain": plain},
		Outputs:    map[string]engine.Sink{},
		DeadLetter: dl, DeadLetterName: "dlq", Rule: rule,
	}
	for n, s := range outs {
		route.Outputs[n] = s
	}
	if err := e.AddRoute(route); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	feed := func(src *enginetest.Source, name string) {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("%s-%d-%d", name, i, rand.Int64())
			m := &engine.Message{Event: enginetest.NewEvent(id, nil), Origin: id}
			if rand.IntN(100) < 5 {
				m = &engine.Message{DecodeErr: errors.New("garbage"), Raw: []byte(id), Origin: id}
			}
			if _, err := src.Dispatch(context.Background(), m); err != nil {
				if !errors.Is(err, engine.ErrClosed) {
					t.Errorf("Dispatch: %v", err)
				}
				return
			}
		}
	}
	wg.Add(5)
	go feed(ordered, "ordered")
	for g := range 4 {
		go feed(plain, fmt.Sprint("plain", g))
	}

	time.Sleep(time.Duration(50+rand.IntN(200)) * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(30))*time.Millisecond)
	defer cancel()
	_ = e.Shutdown(ctx) // a drain error is expected when the deadline is short
	close(stop)
	wg.Wait()

	// Every accepted message was settled exactly once by the time Shutdown returned.
	total := 0
	for _, src := range []*enginetest.Source{ordered, plain} {
		if n := src.DoubleSettlements(); n != 0 {
			t.Errorf("%d double settlements", n)
		}
		for _, st := range src.Accepted() {
			total++
			err, ok := st.Settled()
			if !ok {
				t.Fatalf("message %d not settled after Shutdown", st.Seq)
			}
			if st.Calls() != 1 {
				t.Errorf("message %d settled %d times (last error %v)", st.Seq, st.Calls(), err)
			}
		}
	}
	if total == 0 {
		t.Fatal("no message was dispatched")
	}
	// Ordered input: settlements in Dispatch order.
	order := ordered.Order()
	for i := 1; i < len(order); i++ {
		if order[i] <= order[i-1] {
			t.Fatalf("ordered input settled %d after %d", order[i], order[i-1])
		}
	}

	// Metrics add up.
	for _, in := range []string{"ordered", "plain"} {
		l := map[string]string{"route": "r", "input": in}
		rec := testutil.Metric(t, reg, "turnout_events_received_total", l)
		ack := testutil.Metric(t, reg, "turnout_events_acked_total", l)
		nack := testutil.Metric(t, reg, "turnout_events_nacked_total", l)
		if rec != ack+nack {
			t.Errorf("input %s: received %v != acked %v + nacked %v", in, rec, ack, nack)
		}
		if got := testutil.Metric(t, reg, "turnout_events_in_flight", l); got != 0 {
			t.Errorf("input %s: in_flight %v after shutdown", in, got)
		}
	}
	var accepted int
	for _, src := range []*enginetest.Source{ordered, plain} {
		accepted += len(src.Accepted())
	}
	if rec := testutil.Metric(t, reg, "turnout_events_received_total", nil); int(rec) != accepted {
		t.Errorf("received_total %v, accepted %d", rec, accepted)
	}
	if mode == engine.AtLeastOnce {
		checkAcks(t, []*enginetest.Source{ordered, plain}, &decisions, outs, dl)
	}
	t.Logf("%d messages, %d acked", total, int(testutil.Metric(t, reg, "turnout_events_acked_total", nil)))
}

// checkAcks verifies the at-least-once invariant for every acked message.
func checkAcks(t *testing.T, srcs []*enginetest.Source, decisions *sync.Map, outs map[string]*enginetest.Sink, dl *enginetest.Sink) {
	t.Helper()
	confirmed := map[string]map[string]bool{} // output -> event id
	for n, s := range outs {
		confirmed[n] = map[string]bool{}
		for _, e := range s.Confirmed() {
			confirmed[n][e.ID()] = true
		}
	}
	dlOutput := map[string]bool{} // id + "/" + failed output
	dlRule := map[string]bool{}
	dlMalformed := map[string]bool{} // origin
	for _, e := range dl.Confirmed() {
		x := e.Extensions()
		switch {
		case e.Type() == engine.TypeMalformed:
			dlMalformed[fmt.Sprint(x[engine.ExtOrigin])] = true
		case x[engine.ExtErrorOutput] != nil:
			dlOutput[e.ID()+"/"+fmt.Sprint(x[engine.ExtErrorOutput])] = true
		case x[engine.ExtErrorKind] != nil:
			dlRule[e.ID()] = true
		}
	}
	checked := 0
	// Walk the decisions: for each event the rule saw and whose message was acked, the outputs
	// it chose must have confirmed it or dead-lettered it.
	ackedIDs := ackedEventIDs(srcs)
	for id, acked := range ackedIDs {
		if !acked.ok {
			continue
		}
		checked++
		if acked.malformed {
			if !dlMalformed[id] {
				t.Errorf("malformed message %s acked without a dead letter", id)
			}
			continue
		}
		v, ok := decisions.Load(id)
		if !ok {
			t.Errorf("event %s acked without a rule decision", id)
			continue
		}
		switch d := v.(type) {
		case error:
			if !dlRule[id] {
				t.Errorf("event %s: rule failed, acked without a dead letter", id)
			}
		case engine.Decision:
			switch {
			case d.Action == engine.ActionDrop:
			case d.Action == engine.ActionFail || contains(d.Outputs, "missing"):
				if !dlRule[id] {
					t.Errorf("event %s: rule decided %v, acked without a dead letter", id, d)
				}
			default:
				for _, o := range d.Outputs {
					if !confirmed[o][id] && !dlOutput[id+"/"+o] {
						t.Errorf("event %s acked, but output %s neither confirmed nor dead-lettered it", id, o)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Log("no message acked this round")
	}
}

type ackInfo struct{ ok, malformed bool }

// ackedEventIDs maps each accepted message's id (its Origin) to whether it was acked.
func ackedEventIDs(srcs []*enginetest.Source) map[string]ackInfo {
	out := map[string]ackInfo{}
	for _, src := range srcs {
		for _, st := range src.Accepted() {
			err, _ := st.Settled()
			m := st.Message()
			out[m.Origin] = ackInfo{ok: err == nil, malformed: m.Event == nil}
		}
	}
	return out
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
