package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/engine/enginetest"
	"github.com/turnout-router/turnout/internal/testutil"
)

// failFirst fails the first n attempts of every event.
func failFirst(n int) func(context.Context, int, *event.Event) error {
	return func(_ context.Context, attempt int, _ *event.Event) error {
		if attempt <= n {
			return errors.New("broker unavailable")
		}
		return nil
	}
}

func failAlways(err error) func(context.Context, int, *event.Event) error {
	return func(context.Context, int, *event.Event) error { return err }
}

func sink(fail func(context.Context, int, *event.Event) error) *enginetest.Sink {
	return &enginetest.Sink{Fail: fail}
}

func ext(t *testing.T, e *event.Event, name string) string {
	t.Helper()
	v, ok := e.Extensions()[name]
	if !ok {
		t.Fatalf("dead letter %s has no extension %s (has %v)", e.ID(), name, e.Extensions())
	}
	s, ok := v.(string)
	if !ok {
		t.Fatalf("extension %s = %#v, want a string", name, v)
	}
	return s
}

func TestDelivery(t *testing.T) {
	errRule := &engine.RuleError{Kind: "trap", Err: errors.New("unreachable executed")}
	type tc struct {
		name    string
		cfg     engine.RouteConfig
		rule    engine.Rule
		outs    map[string]*enginetest.Sink
		dl      *enginetest.Sink // nil: no dead-letter output
		msg     *engine.Message  // nil: a valid event with id "e1"
		wantAck bool
		check   func(t *testing.T, v *env)
	}
	route := func(outs ...string) engine.Rule { return enginetest.RouteTo(outs...) }
	decide := func(d engine.Decision, err error) engine.Rule {
		return enginetest.RuleFunc(func(context.Context, *event.Event) (engine.Decision, error) { return d, err })
	}
	cases := []tc{
		{
			name: "single output ack", rule: route("a"),
			outs: map[string]*enginetest.Sink{"a": {}}, wantAck: true,
			check: func(t *testing.T, v *env) {
				if got := len(v.outs["a"].Confirmed()); got != 1 {
					t.Errorf("output a confirmed %d events, want 1", got)
				}
				if got := testutil.Metric(t, v.reg, "turnout_events_routed_total", map[string]string{"route": "r", "output": "a"}); got != 1 {
					t.Errorf("routed_total{a} = %v, want 1", got)
				}
				if got := testutil.Metric(t, v.reg, "turnout_rule_decisions_total", map[string]string{"route": "r", "action": "route"}); got != 1 {
					t.Errorf("rule_decisions_total{route} = %v, want 1", got)
				}
			},
		},
		{
			name: "no rule uses default outputs", cfg: engine.RouteConfig{DefaultOutputs: []string{"b"}},
			outs: map[string]*enginetest.Sink{"a": {}, "b": {}}, wantAck: true,
			check: func(t *testing.T, v *env) {
				if a, b := len(v.outs["a"].Confirmed()), len(v.outs["b"].Confirmed()); a != 0 || b != 1 {
					t.Errorf("confirmed a=%d b=%d, want 0 and 1", a, b)
				}
			},
		},
		{
			name: "fan-out all confirm", rule: route("a", "b", "c", "a"),
			outs: map[string]*enginetest.Sink{"a": {}, "b": {}, "c": {}}, wantAck: true,
			check: func(t *testing.T, v *env) {
				for _, n := range []string{"a", "b", "c"} {
					if got := len(v.outs[n].Confirmed()); got != 1 {
						t.Errorf("output %s confirmed %d events, want 1 (duplicate names send once)", n, got)
					}
				}
			},
		},
		{
			name: "partial failure then recover retries only the failed output", rule: route("a", "b"),
			outs: map[string]*enginetest.Sink{"a": sink(failFirst(0)), "b": sink(failFirst(2))}, wantAck: true,
			check: func(t *testing.T, v *env) {
				if got := v.outs["a"].Attempts("e1"); got != 1 {
					t.Errorf("output a sent %d times, want 1 (it confirmed at once)", got)
				}
				if got := v.outs["b"].Attempts("e1"); got != 3 {
					t.Errorf("output b sent %d times, want 3", got)
				}
				if got := testutil.Metric(t, v.reg, "turnout_delivery_retries_total", map[string]string{"output": "b"}); got != 2 {
					t.Errorf("retries_total{b} = %v, want 2", got)
				}
				if got := testutil.Metric(t, v.reg, "turnout_delivery_retries_total", map[string]string{"output": "a"}); got != 0 {
					t.Errorf("retries_total{a} = %v, want 0", got)
				}
				if got := testutil.Metric(t, v.reg, "turnout_delivery_failures_total", map[string]string{"output": "b", "reason": "error"}); got != 2 {
					t.Errorf("failures_total{b,error} = %v, want 2", got)
				}
			},
		},
		{
			name: "retry exhaustion dead-letters with extensions", rule: route("a", "b"),
			outs: map[string]*enginetest.Sink{"a": {}, "b": sink(failAlways(errors.New("queue full")))},
			dl:   &enginetest.Sink{}, wantAck: true,
			check: func(t *testing.T, v *env) {
				if got := v.outs["b"].Attempts("e1"); got != fastRetry.MaxAttempts {
					t.Errorf("output b sent %d times, want MaxAttempts=%d", got, fastRetry.MaxAttempts)
				}
				dls := v.dl.Confirmed()
				if len(dls) != 1 {
					t.Fatalf("dead-letter got %d events, want 1", len(dls))
				}
				d := dls[0]
				if d.ID() != "e1" {
					t.Errorf("dead letter id %q, want the original e1", d.ID())
				}
				if got := ext(t, d, engine.ExtErrorOutput); got != "b" {
					t.Errorf("turnouterroroutput = %q, want b", got)
				}
				if got := ext(t, d, engine.ExtErrorRoute); got != "r" {
					t.Errorf("turnouterrorroute = %q, want r", got)
				}
				if got := ext(t, d, engine.ExtError); !strings.Contains(got, "queue full") {
					t.Errorf("turnouterror = %q, want the last error", got)
				}
				if got := testutil.Metric(t, v.reg, "turnout_events_dead_lettered_total", map[string]string{"route": "r", "reason": "output"}); got != 1 {
					t.Errorf("dead_lettered_total{output} = %v, want 1", got)
				}
			},
		},
		{
			name: "dead-letter fails too nacks", rule: route("a"),
			outs: map[string]*enginetest.Sink{"a": sink(failAlways(errors.New("down")))},
			dl:   sink(failAlways(errors.New("dlq down"))), wantAck: false,
			check: func(t *testing.T, v *env) {
				if got := v.dl.Attempts("e1"); got != fastRetry.MaxAttempts {
					t.Errorf("dead-letter sent %d times, want MaxAttempts=%d (same policy)", got, fastRetry.MaxAttempts)
				}
				if got := testutil.Metric(t, v.reg, "turnout_events_nacked_total", map[string]string{"reason": "dead-letter"}); got != 1 {
					t.Errorf("nacked_total{dead-letter} = %v, want 1", got)
				}
			},
		},
		{
			name: "output fails without dead-letter nacks", rule: route("a"),
			outs: map[string]*enginetest.Sink{"a": sink(failAlways(errors.New("down")))}, wantAck: false,
			check: func(t *testing.T, v *env) {
				if got := testutil.Metric(t, v.reg, "turnout_events_nacked_total", map[string]string{"reason": "output"}); got != 1 {
					t.Errorf("nacked_total{output} = %v, want 1", got)
				}
			},
		},
		{
			name: "permanent error skips retries", rule: route("a"),
			outs: map[string]*enginetest.Sink{"a": sink(failAlways(engine.Permanent(errors.New("too large"))))},
			dl:   &enginetest.Sink{}, wantAck: true,
			check: func(t *testing.T, v *env) {
				if got := v.outs["a"].Attempts("e1"); got != 1 {
					t.Errorf("output a sent %d times, want 1", got)
				}
				if got := testutil.Metric(t, v.reg, "turnout_delivery_failures_total", map[string]string{"output": "a", "reason": "permanent"}); got != 1 {
					t.Errorf("failures_total{permanent} = %v, want 1", got)
				}
				if len(v.dl.Confirmed()) != 1 {
					t.Errorf("dead-letter got %d events, want 1", len(v.dl.Confirmed()))
				}
			},
		},
		{
			name: "send timeout is retried and counted", rule: route("a"),
			cfg: engine.RouteConfig{Retry: engine.RetryPolicy{MaxAttempts: 2, InitialBackoff: 1e6, MaxBackoff: 1e6, Timeout: 20e6}},
			outs: map[string]*enginetest.Sink{"a": sink(func(ctx context.Context, n int, _ *event.Event) error {
				if n == 1 {
					<-ctx.Done()
					return ctx.Err()
				}
				return nil
			})}, wantAck: true,
			check: func(t *testing.T, v *env) {
				if got := testutil.Metric(t, v.reg, "turnout_delivery_failures_total", map[string]string{"output": "a", "reason": "timeout"}); got != 1 {
					t.Errorf("failures_total{timeout} = %v, want 1", got)
				}
			},
		},
		{
			name: "panicking output is retried then dead-lettered", rule: route("a"),
			outs: map[string]*enginetest.Sink{"a": sink(func(context.Context, int, *event.Event) error { panic("boom") })},
			dl:   &enginetest.Sink{}, wantAck: true,
			check: func(t *testing.T, v *env) {
				if got := v.outs["a"].Attempts("e1"); got != fastRetry.MaxAttempts {
					t.Errorf("output a sent %d times, want %d", got, fastRetry.MaxAttempts)
				}
				if got := ext(t, v.dl.Confirmed()[0], engine.ExtError); !strings.Contains(got, "boom") {
					t.Errorf("turnouterror = %q, want the panic", got)
				}
			},
		},
		{
			name: "panicking rule is a rule failure",
			rule: enginetest.RuleFunc(func(context.Context, *event.Event) (engine.Decision, error) { panic("rule bug") }),
			outs: map[string]*enginetest.Sink{"a": {}}, dl: &enginetest.Sink{}, wantAck: true,
			check: func(t *testing.T, v *env) {
				if got := ext(t, v.dl.Confirmed()[0], engine.ExtErrorKind); got != "panic" {
					t.Errorf("turnouterrorkind = %q, want panic", got)
				}
			},
		},
		{
			name: "drop acks", rule: decide(engine.Decision{Action: engine.ActionDrop}, nil),
			outs: map[string]*enginetest.Sink{"a": {}}, wantAck: true,
			check: func(t *testing.T, v *env) {
				if v.outs["a"].Sends() != 0 {
					t.Errorf("dropped event was sent")
				}
				if got := testutil.Metric(t, v.reg, "turnout_events_dropped_total", map[string]string{"route": "r"}); got != 1 {
					t.Errorf("dropped_total = %v, want 1", got)
				}
			},
		},
		{
			name: "rule error dead-letter policy", rule: decide(engine.Decision{}, errRule),
			outs: map[string]*enginetest.Sink{"a": {}}, dl: &enginetest.Sink{}, wantAck: true,
			check: func(t *testing.T, v *env) {
				dls := v.dl.Confirmed()
				if len(dls) != 1 {
					t.Fatalf("dead-letter got %d events, want 1", len(dls))
				}
				if got := ext(t, dls[0], engine.ExtErrorKind); got != "trap" {
					t.Errorf("turnouterrorkind = %q, want trap", got)
				}
				if got := ext(t, dls[0], engine.ExtError); !strings.Contains(got, "unreachable") {
					t.Errorf("turnouterror = %q, want the rule error", got)
				}
				if got := testutil.Metric(t, v.reg, "turnout_events_dead_lettered_total", map[string]string{"reason": "rule"}); got != 1 {
					t.Errorf("dead_lettered_total{rule} = %v, want 1", got)
				}
				if got := testutil.Metric(t, v.reg, "turnout_rule_decisions_total", map[string]string{"action": "error"}); got != 1 {
					t.Errorf("rule_decisions_total{error} = %v, want 1", got)
				}
			},
		},
		{
			name: "rule error dead-letter policy without dead-letter nacks", rule: decide(engine.Decision{}, errRule),
			outs: map[string]*enginetest.Sink{"a": {}}, wantAck: false,
		},
		{
			name: "rule error nack policy", cfg: engine.RouteConfig{OnRuleError: engine.FailNack},
			rule: decide(engine.Decision{}, errRule),
			outs: map[string]*enginetest.Sink{"a": {}}, dl: &enginetest.Sink{}, wantAck: false,
			check: func(t *testing.T, v *env) {
				if v.dl.Sends() != 0 {
					t.Errorf("nack policy dead-lettered the event")
				}
				if got := testutil.Metric(t, v.reg, "turnout_events_nacked_total", map[string]string{"reason": "rule"}); got != 1 {
					t.Errorf("nacked_total{rule} = %v, want 1", got)
				}
			},
		},
		{
			name: "rule error drop policy", cfg: engine.RouteConfig{OnRuleError: engine.FailDrop},
			rule: decide(engine.Decision{}, errors.New("plain error")),
			outs: map[string]*enginetest.Sink{"a": {}}, dl: &enginetest.Sink{}, wantAck: true,
			check: func(t *testing.T, v *env) {
				if v.dl.Sends() != 0 || v.outs["a"].Sends() != 0 {
					t.Errorf("drop policy sent the event")
				}
			},
		},
		{
			name: "action fail dead-letters with reason", rule: decide(engine.Decision{Action: engine.ActionFail, Reason: "bad sensor"}, nil),
			outs: map[string]*enginetest.Sink{"a": {}}, dl: &enginetest.Sink{}, wantAck: true,
			check: func(t *testing.T, v *env) {
				d := v.dl.Confirmed()[0]
				if ext(t, d, engine.ExtErrorKind) != "fail" || ext(t, d, engine.ExtError) != "bad sensor" {
					t.Errorf("dead letter extensions %v, want kind fail and reason bad sensor", d.Extensions())
				}
			},
		},
		{
			name: "invalid output name is a decision failure", rule: route("a", "nope"),
			outs: map[string]*enginetest.Sink{"a": {}}, dl: &enginetest.Sink{}, wantAck: true,
			check: func(t *testing.T, v *env) {
				if v.outs["a"].Sends() != 0 {
					t.Errorf("invalid decision was partly delivered")
				}
				d := v.dl.Confirmed()[0]
				if ext(t, d, engine.ExtErrorKind) != "decision" || !strings.Contains(ext(t, d, engine.ExtError), "nope") {
					t.Errorf("dead letter extensions %v, want kind decision naming nope", d.Extensions())
				}
			},
		},
		{
			name: "empty outputs is a decision failure", rule: route(),
			outs: map[string]*enginetest.Sink{"a": {}}, wantAck: false,
		},
		{
			name: "decision event replaces the input",
			rule: enginetest.RuleFunc(func(_ context.Context, e *event.Event) (engine.Decision, error) {
				c := e.Clone()
				c.SetType("changed")
				return engine.Decision{Action: engine.ActionRoute, Outputs: []string{"a"}, Event: &c}, nil
			}),
			outs: map[string]*enginetest.Sink{"a": {}}, wantAck: true,
			check: func(t *testing.T, v *env) {
				if got := v.outs["a"].Confirmed()[0].Type(); got != "changed" {
					t.Errorf("sent type %q, want the rule's changed event", got)
				}
			},
		},
		{
			name: "malformed with dead-letter", rule: route("a"),
			outs: map[string]*enginetest.Sink{"a": {}}, dl: &enginetest.Sink{},
			msg:     &engine.Message{DecodeErr: errors.New("not json"), Raw: []byte("\x00garbage"), Origin: "topic/x"},
			wantAck: true,
			check: func(t *testing.T, v *env) {
				d := v.dl.Confirmed()[0]
				if d.Type() != engine.TypeMalformed || d.Source() != "turnout/r/in" || len(d.ID()) != 36 {
					t.Errorf("dead letter type %q source %q id %q", d.Type(), d.Source(), d.ID())
				}
				if string(d.Data()) != "\x00garbage" || d.DataContentType() != "application/octet-stream" {
					t.Errorf("dead letter data %q (%s), want the raw bytes", d.Data(), d.DataContentType())
				}
				if err := d.Validate(); err != nil {
					t.Errorf("dead letter is not a valid event: %v", err)
				}
				want := map[string]string{engine.ExtError: "not json", engine.ExtErrorRoute: "r", engine.ExtErrorInput: "in", engine.ExtOrigin: "topic/x"}
				for k, w := range want {
					if got := ext(t, d, k); got != w {
						t.Errorf("%s = %q, want %q", k, got, w)
					}
				}
				if v.outs["a"].Sends() != 0 {
					t.Errorf("malformed message reached an output")
				}
				if got := testutil.Metric(t, v.reg, "turnout_events_dead_lettered_total", map[string]string{"reason": "malformed"}); got != 1 {
					t.Errorf("dead_lettered_total{malformed} = %v, want 1", got)
				}
			},
		},
		{
			name: "malformed without dead-letter nacks", rule: route("a"),
			outs:    map[string]*enginetest.Sink{"a": {}},
			msg:     &engine.Message{DecodeErr: errors.New("not json"), Raw: []byte("x")},
			wantAck: false,
			check: func(t *testing.T, v *env) {
				if got := testutil.Metric(t, v.reg, "turnout_events_nacked_total", map[string]string{"reason": "malformed"}); got != 1 {
					t.Errorf("nacked_total{malformed} = %v, want 1", got)
				}
			},
		},
		{
			name: "invalid event is malformed", rule: route("a"),
			outs: map[string]*enginetest.Sink{"a": {}}, dl: &enginetest.Sink{},
			msg: func() *engine.Message {
				e := enginetest.NewEvent("e1", nil)
				e.SetType("")
				return &engine.Message{Event: e}
			}(),
			wantAck: true,
			check: func(t *testing.T, v *env) {
				if v.outs["a"].Sends() != 0 || len(v.dl.Confirmed()) != 1 {
					t.Errorf("invalid event: output sends %d, dead letters %d; want 0 and 1", v.outs["a"].Sends(), len(v.dl.Confirmed()))
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			v := setup(t, c.cfg, c.rule, c.outs, c.dl, nil)
			msg := c.msg
			if msg == nil {
				msg = &engine.Message{Event: enginetest.NewEvent("e1", map[string]int{"n": 1})}
			}
			st, err := v.src.Dispatch(context.Background(), msg)
			if err != nil {
				t.Fatalf("Dispatch: %v", err)
			}
			err = wait(t, st)
			if c.wantAck && err != nil {
				t.Fatalf("settled with %v, want ack", err)
			}
			if !c.wantAck && err == nil {
				t.Fatalf("acked, want nack")
			}
			want := map[string]string{"route": "r", "input": "in"}
			if got := testutil.Metric(t, v.reg, "turnout_events_received_total", want); got != 1 {
				t.Errorf("received_total = %v, want 1", got)
			}
			acked := testutil.Metric(t, v.reg, "turnout_events_acked_total", want)
			nacked := testutil.Metric(t, v.reg, "turnout_events_nacked_total", want)
			if (c.wantAck && (acked != 1 || nacked != 0)) || (!c.wantAck && (acked != 0 || nacked != 1)) {
				t.Errorf("acked_total = %v, nacked_total = %v (%s)", acked, nacked, metricDump(t, v.reg, "turnout_events_nacked_total"))
			}
			if got := testutil.Metric(t, v.reg, "turnout_ack_latency_seconds", map[string]string{"route": "r"}); got != 1 {
				t.Errorf("ack_latency_seconds count = %v, want 1", got)
			}
			// The slot is freed right after the settlement.
			eventually(t, "in_flight to return to 0", func() bool { return testutil.Metric(t, v.reg, "turnout_events_in_flight", want) == 0 })
			if c.check != nil {
				c.check(t, v)
			}
		})
	}
}
