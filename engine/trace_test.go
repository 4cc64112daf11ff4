package engine_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/engine/enginetest"
	"github.com/turnout-router/turnout/internal/testutil"
)

// span is one span a recordingTracer started.
type span struct {
	id, parent int // parent 0: a root
	stage      engine.Stage
	info       engine.SpanInfo
	ends       int
	err        error
}

type spanKey struct{}

// recordingTracer records every span, with its parent taken from the context.
type recordingTracer struct {
	mu    sync.Mutex
	spans []*span
}

func (r *recordingTracer) Start(ctx context.Context, stage engine.Stage, info engine.SpanInfo) (context.Context, func(error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &span{id: len(r.spans) + 1, stage: stage, info: info}
	if p, ok := ctx.Value(spanKey{}).(int); ok {
		s.parent = p
	}
	r.spans = append(r.spans, s)
	return context.WithValue(ctx, spanKey{}, s.id), func(err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		s.ends++
		s.err = err
	}
}

// find returns the spans of stage for output (output "" matches any).
func (r *recordingTracer) find(stage engine.Stage, output string) []span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []span
	for _, s := range r.spans {
		if s.stage == stage && (output == "" || s.info.Output == output) {
			out = append(out, *s)
		}
	}
	return out
}

// one returns the only span of stage for output, failing otherwise.
func (r *recordingTracer) one(t *testing.T, stage engine.Stage, output string) span {
	t.Helper()
	got := r.find(stage, output)
	if len(got) != 1 {
		t.Fatalf("%d %s spans for output %q, want 1", len(got), stage, output)
	}
	if got[0].ends != 1 {
		t.Fatalf("%s span %q ended %d times, want once", stage, output, got[0].ends)
	}
	return got[0]
}

func TestTracerStages(t *testing.T) {
	t.Run("fan-out-retry-dead-letter", func(t *testing.T) {
		tr := &recordingTracer{}
		// The sinks record which span their Send ran under.
		var mu sync.Mutex
		sentUnder := map[string][]int{}
		under := func(name string, fail func(context.Context, int, *event.Event) error) *enginetest.Sink {
			return sink(func(ctx context.Context, attempt int, e *event.Event) error {
				id, _ := ctx.Value(spanKey{}).(int)
				mu.Lock()
				sentUnder[name] = append(sentUnder[name], id)
				mu.Unlock()
				return fail(ctx, attempt, e)
			})
		}
		var ruleSpan int
		rule := enginetest.RuleFunc(func(ctx context.Context, _ *event.Event) (engine.Decision, error) {
			ruleSpan, _ = ctx.Value(spanKey{}).(int)
			return engine.Decision{Action: engine.ActionRoute, Outputs: []string{"a", "b"}}, nil
		})
		outs := map[string]*enginetest.Sink{
			"a": under("a", failFirst(1)),
			"b": under("b", failAlways(errors.New("refused"))),
		}
		v := setupOpts(t, engine.Options{Tracer: tr}, engine.RouteConfig{}, rule, outs, under("dlq", failFirst(0)), nil)
		ev := enginetest.NewEvent("e1", map[string]int{"n": 1})
		st, err := v.src.Send(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := wait(t, st); err != nil {
			t.Fatalf("settled with %v, want an ack (b dead-lettered)", err)
		}
		waitEnded(t, tr)

		recv := tr.one(t, engine.StageReceive, "")
		if recv.parent != 0 || recv.info.Route != "r" || recv.info.Input != "in" || recv.info.Event.ID() != "e1" {
			t.Errorf("receive span = %+v, want a root for route r input in event e1", recv)
		}
		if recv.err != nil {
			t.Errorf("receive span ended with %v, want nil (the message was acknowledged)", recv.err)
		}
		r := tr.one(t, engine.StageRule, "")
		if r.parent != recv.id || ruleSpan != r.id {
			t.Errorf("rule span %d (parent %d), Decide ran under %d; want a child of receive %d that Decide runs under", r.id, r.parent, ruleSpan, recv.id)
		}
		a := tr.one(t, engine.StageDeliver, "a")
		b := tr.one(t, engine.StageDeliver, "b")
		dl := tr.one(t, engine.StageDeadLetter, "dlq")
		for _, s := range []span{a, b, dl} {
			if s.parent != recv.id {
				t.Errorf("%s span for %s has parent %d, want receive %d", s.stage, s.info.Output, s.parent, recv.id)
			}
		}
		if a.err != nil || b.err == nil || dl.err != nil {
			t.Errorf("span errors: a %v (want nil after a retry), b %v (want its failure), dlq %v (want nil)", a.err, b.err, dl.err)
		}
		mu.Lock()
		defer mu.Unlock()
		for name, want := range map[string]int{"a": a.id, "b": b.id, "dlq": dl.id} {
			if len(sentUnder[name]) == 0 {
				t.Errorf("output %s was never sent to", name)
			}
			for _, got := range sentUnder[name] {
				if got != want {
					t.Errorf("Send to %s ran under span %d, want its %s span %d", name, got, "deliver", want)
				}
			}
		}
		if len(sentUnder["a"]) != 2 {
			t.Errorf("output a had %d attempts under its span, want 2 (one failure, one retry)", len(sentUnder["a"]))
		}
	})

	t.Run("malformed-nacked", func(t *testing.T) {
		tr := &recordingTracer{}
		v := setupOpts(t, engine.Options{Tracer: tr}, engine.RouteConfig{}, enginetest.RouteTo("a"), map[string]*enginetest.Sink{"a": sink(failFirst(0))}, nil, nil)
		st, err := v.src.Dispatch(context.Background(), &engine.Message{DecodeErr: errors.New("not json"), Raw: []byte("{")})
		if err != nil {
			t.Fatal(err)
		}
		serr := wait(t, st)
		if serr == nil {
			t.Fatal("a malformed message without a dead-letter output was acknowledged")
		}
		waitEnded(t, tr)
		recv := tr.one(t, engine.StageReceive, "")
		if recv.info.Event != nil {
			t.Errorf("receive span of a malformed message has event %v, want nil", recv.info.Event)
		}
		if recv.err == nil || recv.err.Error() != serr.Error() {
			t.Errorf("receive span ended with %v, want the settlement error %v", recv.err, serr)
		}
		if n := len(tr.find(engine.StageDeliver, "")); n != 0 {
			t.Errorf("%d deliver spans for a malformed message, want 0", n)
		}
	})

	t.Run("best-effort", func(t *testing.T) {
		tr := &recordingTracer{}
		v := setupOpts(t, engine.Options{Tracer: tr}, engine.RouteConfig{Mode: engine.BestEffort}, enginetest.RouteTo("a"),
			map[string]*enginetest.Sink{"a": sink(failAlways(engine.Permanent(errors.New("gone"))))}, nil, nil)
		st, err := v.src.Send(context.Background(), enginetest.NewEvent("e2", nil))
		if err != nil {
			t.Fatal(err)
		}
		if err := wait(t, st); err != nil {
			t.Fatalf("best-effort settled with %v, want an ack on receipt", err)
		}
		waitEnded(t, tr)
		// The span covers the processing, so it shows the loss the acknowledgement hides.
		if recv := tr.one(t, engine.StageReceive, ""); recv.err == nil {
			t.Error("best-effort receive span ended without error although its only output refused the event")
		}
	})
}

// waitEnded waits until every span the tracer started has ended: the receive span ends
// just after the SettleFunc returns, so a test that waited for the settlement may be first.
func waitEnded(t *testing.T, tr *recordingTracer) {
	t.Helper()
	testutil.WaitFor(t, "every span ended", 10*time.Second, func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for _, s := range tr.spans {
			if s.ends == 0 {
				return false
			}
		}
		return len(tr.spans) > 0
	})
}
