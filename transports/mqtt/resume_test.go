package mqtt

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/testutil"
)

// TestInputResumesSharedSubscriptionWithMessagesPending restarts an input of a shared
// subscription on the embedded broker while its session holds unacknowledged messages, as after
// a crash of one of several instances. The broker refuses the new SUBSCRIBE (its packet id is
// one the broker uses for a pending message), which the input must not take for a failure: the
// session's subscription stays, the pending messages come back, new ones follow, and the log
// names the filter that could not be added.
func TestInputResumesSharedSubscriptionWithMessagesPending(t *testing.T) {
	b, _ := startBroker(t, BrokerConfig{})
	url := "tcp://" + b.Addr()
	pub := rawClient(t, url)
	const filter = "$share/turnout/devices/#"

	in, d, _ := startInput(t, url, "turnout-a", filter)
	for _, id := range ids("p", 0, 5) {
		publish(t, pub, "devices/x", eventPayload(t, id))
	}
	expectIDs(t, d, ids("p", 0, 5), nil) // never settled: pending in the session
	if err := in.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids("q", 0, 5) {
		publish(t, pub, "devices/x", eventPayload(t, id)) // queued for the absent member
	}

	logs := &testutil.SyncBuffer{}
	deps, _ := testDeps(t)
	deps.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	in2, err := newInput("in", InputConfig{ConnectionConfig: fastConn(url, "turnout-a"), Topics: []string{filter, "other/#"}}, deps)
	if err != nil {
		t.Fatal(err)
	}
	d2 := testutil.NewDispatcher()
	if err := in2.Start(t.Context(), d2); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in2.Close(context.Background()) })
	testutil.WaitFor(t, "resumed input ready", 10*time.Second, in2.Ready)

	settle := func(_ int, x testutil.Dispatched) { x.Settle(nil) }
	expectIDs(t, d2, append(ids("p", 0, 5), ids("q", 0, 5)...), settle)
	publish(t, pub, "devices/x", eventPayload(t, "r0"))
	expectIDs(t, d2, []string{"r0"}, settle)
	if !strings.Contains(logs.String(), "mqtt subscribe not confirmed") || !strings.Contains(logs.String(), "other/#") {
		t.Errorf("no warning naming the filter the broker did not confirm; log:\n%s", logs)
	}
}
