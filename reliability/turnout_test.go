package reliability

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/rulebuild"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
)

// writeRule builds the rule package pkgDir and writes its module into dir.
func writeRule(t *testing.T, dir, pkgDir string) string {
	t.Helper()
	wasm, err := rulebuild.Build(pkgDir)
	if err != nil {
		t.Fatalf("build rule %s: %v", pkgDir, err)
	}
	path := filepath.Join(dir, filepath.Base(pkgDir)+".wasm")
	if err := os.WriteFile(path, wasm, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestFaultyRule sends events that make the rule trap, loop forever and exhaust its memory,
// between ordinary ones: turnout keeps serving, the ordinary events arrive, and each faulty
// one is dead-lettered with the reason.
func TestFaultyRule(t *testing.T) {
	broker := mqtttest.Start(t)
	dir := t.TempDir()
	rule := writeRule(t, dir, "hostabi/testdata/misbehave")
	admin := testutil.FreeAddr(t)
	config := filepath.Join(dir, "turnout.yaml")
	dlq := filepath.Join(dir, "dead-letter.jsonl")
	writeFile(t, config, fmt.Sprintf(`
data_dir: %[1]s/data
admin: { listen: %[2]s }
inputs:
  devices:
    type: mqtt
    brokers: [%[3]q]
    client_id: turnout-faulty-in
    topics: ["devices/#"]
outputs:
  ok:
    type: mqtt
    brokers: [%[3]q]
    client_id: turnout-faulty-out
    topic: delivered
  dlq:
    type: file
    path: %[4]s
routes:
  care:
    inputs: [devices]
    outputs: [ok]
    dead_letter: dlq
    rule:
      file: %[5]s
      timeout: 300ms
      memory_limit_pages: 1024
      config: { outputs: [ok] }
`, dir, admin, broker.URL(), dlq, rule))

	run := fmt.Sprintf("faulty%d", time.Now().UnixNano())
	v, err := NewMQTTConsumer(broker.URL(), "validator-"+run, "delivered")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	tr := StartTurnout(t, config, admin)

	pub, err := NewMQTTProducer(broker.URL(), "generator-"+run, "devices/x")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	faults := []string{"trap", "loop", "grow"}
	var good []int
	faulty := map[string]string{} // id -> fault
	for i := range 30 {
		typ := "care.alarm.raised"
		if i%5 == 2 {
			typ = faults[(i/5)%len(faults)]
		}
		id := fmt.Sprintf("%s-%d", run, i)
		ev := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"/test","type":%q,"data":{"i":%d}}`, id, typ, i)
		if tok := pub.Client().Publish("devices/x", 1, false, ev); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
		if typ == "care.alarm.raised" {
			good = append(good, i)
		} else {
			faulty[id] = typ
		}
	}
	rep := v.WaitFor(run, good, 60*time.Second)
	if rep.Missing != 0 {
		t.Fatalf("ordinary events lost behind faulty ones: %s (missing %v)", rep, rep.MissingIDs)
	}
	// Every faulty event is dead-lettered, with the reason.
	deadline := time.Now().Add(30 * time.Second)
	var got map[string]map[string]any
	for {
		got = readDeadLetters(t, dlq)
		if len(got) >= len(faulty) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for id, fault := range faulty {
		ev, ok := got[id]
		if !ok {
			t.Errorf("%s event %s not dead-lettered", fault, id)
			continue
		}
		if s, _ := ev["turnouterror"].(string); s == "" {
			t.Errorf("%s event %s dead-lettered without turnouterror: %v", fault, id, ev)
		}
		if r, _ := ev["turnouterrorroute"].(string); r != "care" {
			t.Errorf("%s event %s: turnouterrorroute = %q, want care", fault, id, r)
		}
	}
	if !tr.Alive() {
		t.Fatal("turnout exited")
	}
	t.Logf("faulty rule: %d ordinary delivered, %d faulty dead-lettered", rep.Received, len(got))
}

func readDeadLetters(t *testing.T, path string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("dead-letter file has a line that is not JSON: %q", sc.Text())
		}
		id, _ := ev["id"].(string)
		out[id] = ev
	}
	return out
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.TrimLeft(content, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}
