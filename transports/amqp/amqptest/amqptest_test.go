package amqptest

import (
	"strings"
	"testing"
)

func TestShared(t *testing.T) {
	n := Shared(t)
	if err := probeAMQP10(n.Addr()); err != nil {
		t.Fatalf("shared node does not answer AMQP 1.0: %v", err)
	}
}

// TestPrivateNodeRestart starts a private node, restarts its application and checks that it
// serves AMQP 1.0 again, and that a policy lands on it.
func TestPrivateNodeRestart(t *testing.T) {
	n := Start(t)
	if err := probeAMQP10(n.Addr()); err != nil {
		t.Fatalf("private node: %v", err)
	}
	n.StopApp()
	if err := probeAMQP10(n.Addr()); err == nil {
		t.Fatal("private node still answers AMQP after StopApp")
	}
	n.StartApp()
	n.SetPolicy("full", "^q-full-", `{"max-length":1,"overflow":"reject-publish"}`)
	out, err := n.Ctl("list_policies")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(out, "reject-publish") {
		t.Fatalf("policy not listed:\n%s", out)
	}
}

func TestQueueNameUnique(t *testing.T) {
	a, b := QueueName(t, "q-"), QueueName(t, "q-")
	if a == b || !strings.HasPrefix(a, "q-TestQueueNameUnique-") {
		t.Fatalf("QueueName gave %q and %q", a, b)
	}
}
