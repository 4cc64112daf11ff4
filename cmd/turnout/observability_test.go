package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"gopkg.in/yaml.v3"

	"github.com/turnout-router/turnout/internal/rulebuild"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/reliability"
)

// The operations kit's Grafana dashboard (deploy/grafana/turnout.json) and Prometheus alert
// rules (deploy/prometheus/alerts.yaml, with their unit tests alerts_test.yaml), checked with
// promtool and against the /metrics of a real turnout.

// metricNameRE finds the metric names of turnout, the Go runtime and the process in PromQL.
var metricNameRE = regexp.MustCompile(`\b(?:turnout|go|process)_[a-z0-9_]+\b`)

// usedMetric is a metric name an expression uses, and where.
type usedMetric struct{ name, where string }

// TestObservabilityKit runs promtool on the alert rules and their unit tests, checks the
// dashboard (well-formed, every panel with its data source and queries, every query valid PromQL
// once Grafana's variables are substituted), then runs turnout with a configuration that makes
// every metric family the dashboard and the alerts use appear (a rule that traps, drops and
// fails, a spooled output, a failing output with retries and a dead-letter output, a route that
// nacks, the embedded broker with persistence and a password it refuses once, MQTT input and
// output), sends events through it, lints its /metrics with `promtool check metrics`, and
// asserts that every metric named by a dashboard query, an alert or an alert's unit test is in
// that scrape.
func TestObservabilityKit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Wasm rule with the Go toolchain and runs turnout; run without -short")
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testutil.Unavailable(t, "install it with: sudo bash scripts/brokers.sh (Debian package prometheus)",
			"promtool is not on PATH")
	}
	root, err := rulebuild.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	alerts := filepath.Join(root, "deploy", "prometheus", "alerts.yaml")
	alertsTest := filepath.Join(root, "deploy", "prometheus", "alerts_test.yaml")
	dashboard := filepath.Join(root, "deploy", "grafana", "turnout.json")

	var used []usedMetric
	t.Run("alert rules", func(t *testing.T) {
		runPromtool(t, promtool, "", "check", "rules", "--lint=all", "--lint-fatal", alerts)
		runPromtool(t, promtool, "", "test", "rules", alertsTest)
		used = append(used, alertMetrics(t, alerts, alertsTest)...)
	})
	t.Run("dashboard", func(t *testing.T) {
		queries := dashboardQueries(t, dashboard)
		rules := filepath.Join(t.TempDir(), "dashboard_rules.yaml")
		writeRecordingRules(t, rules, queries)
		runPromtool(t, promtool, "", "check", "rules", "--lint=none", rules)
		for _, q := range queries {
			for _, name := range metricNameRE.FindAllString(q.expr, -1) {
				used = append(used, usedMetric{name, q.where})
			}
		}
	})
	if t.Failed() {
		return
	}

	scrape := scrapeBusyTurnout(t)
	t.Run("promtool check metrics", func(t *testing.T) {
		runPromtool(t, promtool, scrape, "check", "metrics")
	})
	t.Run("every metric used is exposed", func(t *testing.T) {
		exposed := sampleNames(scrape)
		missing := map[string][]string{}
		for _, u := range used {
			if !exposed[u.name] {
				missing[u.name] = append(missing[u.name], u.where)
			}
		}
		for _, n := range slices.Sorted(maps.Keys(missing)) {
			where := missing[n]
			slices.Sort(where)
			t.Errorf("%s is not in turnout's /metrics; used by %s", n, strings.Join(slices.Compact(where), ", "))
		}
		if len(used) < 50 {
			t.Errorf("only %d metric uses found in the dashboard and the alerts: the scan is broken", len(used))
		}
	})
}

// runPromtool runs promtool with args (stdin: the string in, when not empty) and fails the test,
// with promtool's output, unless it exits 0 with nothing to report but its success lines.
func runPromtool(t *testing.T, promtool, in string, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool, args...)
	if in != "" {
		cmd.Stdin = strings.NewReader(in)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l == "SUCCESS" || strings.HasPrefix(l, "SUCCESS:") || strings.HasPrefix(l, "Checking ") || strings.HasPrefix(l, "Unit Testing: ") {
			continue
		}
		t.Errorf("promtool %s reports: %s", strings.Join(args, " "), l)
	}
}

// alertMetrics returns the metrics each alert's expression uses, and those its unit tests feed in
// (a test series of a metric turnout does not have would test nothing).
func alertMetrics(t *testing.T, alerts, alertsTest string) []usedMetric {
	t.Helper()
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, alerts, &rules)
	var used []usedMetric
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			for _, key := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[key]) == "" {
					t.Errorf("alert %s has no %s annotation", r.Alert, key)
				}
			}
			if u := r.Annotations["runbook_url"]; !regexp.MustCompile(`/docs/operations\.md#` + strings.ToLower(r.Alert) + `$`).MatchString(u) {
				t.Errorf("alert %s: runbook_url %q does not lead to docs/operations.md#%s", r.Alert, u, strings.ToLower(r.Alert))
			}
			for _, name := range metricNameRE.FindAllString(r.Expr, -1) {
				used = append(used, usedMetric{name, "alert " + r.Alert})
			}
		}
	}
	if n == 0 {
		t.Fatalf("%s holds no rules", alerts)
	}
	var tests struct {
		Tests []struct {
			Name   string `yaml:"name"`
			Series []struct {
				Series string `yaml:"series"`
			} `yaml:"input_series"`
		} `yaml:"tests"`
	}
	readYAML(t, alertsTest, &tests)
	for _, tc := range tests.Tests {
		for _, s := range tc.Series {
			for _, name := range metricNameRE.FindAllString(s.Series, -1) {
				used = append(used, usedMetric{name, "alert unit test " + tc.Name})
			}
		}
	}
	return used
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// dashboardQuery is one PromQL expression of the dashboard, with Grafana's variables
// substituted, and where it is.
type dashboardQuery struct{ record, expr, where string }

type grafanaPanel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Collapsed  bool           `json:"collapsed"`
	Datasource map[string]any `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource map[string]any `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

// dashboardQueries checks the dashboard's structure and returns its queries: every target's
// expression and every query variable's selector.
func dashboardQueries(t *testing.T, path string) []dashboardQuery {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID           string         `json:"uid"`
		Title         string         `json:"title"`
		SchemaVersion int            `json:"schemaVersion"`
		Panels        []grafanaPanel `json:"panels"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", path, err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("dashboard uid %q, title %q, schemaVersion %d: want a uid, a title and schemaVersion 36 or later", d.UID, d.Title, d.SchemaVersion)
	}

	// Variables: a Prometheus data source variable, and the query variables the queries use.
	vars := map[string]bool{}
	var queries []dashboardQuery
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		switch v.Type {
		case "datasource":
			if v.Query != "prometheus" {
				t.Errorf("data source variable %s is of type %v, want prometheus", v.Name, v.Query)
			}
		case "query":
			q, _ := v.Query.(map[string]any)
			s, _ := q["query"].(string)
			m := labelValues.FindStringSubmatch(s)
			if m == nil {
				t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, s)
				continue
			}
			queries = append(queries, dashboardQuery{expr: fmt.Sprintf("group by (%s) (%s)", m[2], m[1]), where: "variable $" + v.Name})
		}
	}
	for _, want := range []string{"datasource", "job", "instance", "route"} {
		if !vars[want] {
			t.Errorf("dashboard has no $%s variable", want)
		}
	}

	ids := map[int]string{}
	var walk func(ps []grafanaPanel, layout string)
	layouts := map[string][]grafanaPanel{}
	walk = func(ps []grafanaPanel, layout string) {
		for _, p := range ps {
			where := fmt.Sprintf("panel %q (id %d)", p.Title, p.ID)
			if p.ID <= 0 {
				t.Errorf("%s: no id", where)
			} else if other, dup := ids[p.ID]; dup {
				t.Errorf("%s: id also used by %s", where, other)
			}
			ids[p.ID] = where
			layouts[layout] = append(layouts[layout], p)
			if p.Type == "row" {
				if p.Collapsed {
					walk(p.Panels, where) // laid out on their own when the row opens
				} else if len(p.Panels) > 0 {
					t.Errorf("%s: an open row keeps its panels at the top level", where)
				}
				continue
			}
			if uid, _ := p.Datasource["uid"].(string); p.Datasource["type"] != "prometheus" || uid != "${datasource}" {
				t.Errorf("%s: data source %v, want the prometheus ${datasource} variable", where, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no queries", where)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.RefID == "" || refs[tg.RefID] {
					t.Errorf("%s: refId %q missing or repeated", where, tg.RefID)
				}
				refs[tg.RefID] = true
				if tg.Datasource == nil {
					t.Errorf("%s query %s: no data source", where, tg.RefID)
				}
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s query %s: no expression", where, tg.RefID)
					continue
				}
				queries = append(queries, dashboardQuery{
					record: fmt.Sprintf("dashboard:panel_%d:%s", p.ID, strings.ToLower(tg.RefID)),
					expr:   substituteGrafanaVars(t, tg.Expr, vars, where), where: where,
				})
			}
		}
	}
	walk(d.Panels, "dashboard")
	for layout, ps := range layouts {
		checkGrid(t, layout, ps)
	}
	if len(queries) < 40 {
		t.Errorf("only %d queries found in the dashboard", len(queries))
	}
	for i := range queries {
		if queries[i].record == "" {
			queries[i].record = fmt.Sprintf("dashboard:variable_%d", i)
		}
	}
	return queries
}

// substituteGrafanaVars replaces Grafana's interval variables with 1m and the dashboard's own
// variables (which must exist) with the regular expression .* that "All" selects.
func substituteGrafanaVars(t *testing.T, expr string, vars map[string]bool, where string) string {
	t.Helper()
	re := regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}?`)
	return re.ReplaceAllStringFunc(expr, func(m string) string {
		name := re.FindStringSubmatch(m)[1]
		switch {
		case name == "__rate_interval" || name == "__interval" || name == "__range":
			return "1m"
		case vars[name]:
			return ".*"
		default:
			t.Errorf("%s: the query uses $%s, which the dashboard does not define", where, name)
			return m
		}
	})
}

// checkGrid checks that panels laid out together fit the 24 columns and do not overlap.
func checkGrid(t *testing.T, layout string, ps []grafanaPanel) {
	t.Helper()
	for i, a := range ps {
		g := a.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: panel %q (id %d) has gridPos %+v outside the 24 columns", layout, a.Title, a.ID, g)
		}
		for _, b := range ps[i+1:] {
			h := b.GridPos
			if g.X < h.X+h.W && h.X < g.X+g.W && g.Y < h.Y+h.H && h.Y < g.Y+g.H {
				t.Errorf("%s: panels %q (id %d) and %q (id %d) overlap", layout, a.Title, a.ID, b.Title, b.ID)
			}
		}
	}
}

// writeRecordingRules writes the queries as recording rules, for promtool to parse.
func writeRecordingRules(t *testing.T, path string, queries []dashboardQuery) {
	t.Helper()
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for _, q := range queries {
		rules = append(rules, rule{q.record, q.expr})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// scrapeBusyTurnout runs turnout with every part that has metrics of its own, sends events that
// go each way an event can go, and returns its /metrics.
func scrapeBusyTurnout(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	rule := ruleFile(t, "hostabi/testdata/misbehave")
	// A receiver that is down for good: every send is retried, then dead-lettered.
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer down.Close()
	adminAddr, brokerAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	webhook, bare := testutil.FreeAddr(t), testutil.FreeAddr(t)
	brokerURL := "tcp://" + brokerAddr
	const brokerPassword = "observability-password"
	path := writeConfig(t, dir, fmt.Sprintf(`
data_dir: %[1]q
admin: { listen: %[2]q }
shutdown: { drain_timeout: 2s }
broker: { enabled: true, listen: %[3]q, persistence: broker, username: turnout, password: %[11]q }
inputs:
  webhook: { type: http, listen: %[4]q }
  bare: { type: http, listen: %[5]q }
  devices:
    type: mqtt
    brokers: [%[6]q]
    client_id: observability-in
    topics: ["devices/#"]
    username: turnout
    password: %[11]q
outputs:
  archive:
    type: file
    path: %[7]q
    spool: { dir: spool/archive, max_bytes: 1MiB }
  hook: { type: http, url: %[8]q, handshake: false, timeout: 1s }
  hook2: { type: http, url: %[8]q, handshake: false, timeout: 1s }
  uplink:
    type: mqtt
    brokers: [%[6]q]
    client_id: observability-out
    topic: uplink
    username: turnout
    password: %[11]q
  dlq: { type: file, path: %[9]q }
routes:
  care:
    inputs: [webhook]
    outputs: [archive, hook]
    dead_letter: dlq
    retry: { max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms, timeout: 2s }
    rule: { file: %[10]q, pool_size: 1, config: { outputs: [archive, hook] } }
  strict:
    inputs: [bare]
    outputs: [hook2]
    retry: { max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms, timeout: 2s }
  telemetry:
    inputs: [devices]
    outputs: [uplink]
`, filepath.Join(dir, "data"), adminAddr, brokerAddr, webhook, bare, brokerURL,
		filepath.Join(dir, "archive.jsonl"), down.URL, filepath.Join(dir, "dlq.jsonl"), rule, brokerPassword))

	// The binary, not an in-process run: the process metrics are turnout's own, and its rule
	// compiles without the race detector's slowdown.
	reliability.StartTurnout(t, path, adminAddr)
	// care: the rule routes, traps, fails and drops; hook is down, so the routed event ends in
	// dlq after a retry.
	for _, typ := range []string{"care.alarm.raised", "trap", "fail", "drop"} {
		if code := postEvent(t, "http://"+webhook+"/", "obs-"+typ, typ); code != http.StatusNoContent {
			t.Errorf("POST %s event = %d, want 204 (delivered, dead-lettered or dropped)", typ, code)
		}
	}
	// strict: no dead-letter output, so the event the output refuses goes to the route's
	// dead-letter file.
	if code := postEvent(t, "http://"+bare+"/", "obs-strict", "care.alarm.raised"); code != http.StatusNoContent {
		t.Errorf("POST to the route without dead-letter output = %d, want 204 (written to its dead-letter file)", code)
	}
	// telemetry: through the embedded broker and back into it; and a client the broker refuses.
	connect := func(id, password string) (paho.Client, error) {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(brokerURL).SetClientID(id).
			SetUsername("turnout").SetPassword(password).SetProtocolVersion(4).
			SetConnectTimeout(5 * time.Second).SetAutoReconnect(false))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("mqtt connect %s to %s: %v", id, brokerURL, tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(100) })
		return c, nil
	}
	c, err := connect("observability-publisher", brokerPassword)
	if err != nil {
		t.Fatal(err)
	}
	ev := `{"specversion":"1.0","id":"obs-mqtt","source":"/devices/7","type":"telemetry.reading","data":{"t":21}}`
	if tok := c.Publish("devices/7", 1, false, ev); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish to the embedded broker: %v", tok.Error())
	}
	if _, err := connect("observability-intruder", "wrong-password"); err == nil {
		t.Error("the embedded broker accepted a wrong password")
	}

	// What a user would look for on the dashboard after these events.
	for series, want := range map[string]string{
		`turnout_events_routed_total{output="archive",route="care"}`:         "1",
		`turnout_events_routed_total{output="uplink",route="telemetry"}`:     "1",
		`turnout_events_dead_lettered_total{reason="output",route="care"}`:   "1",
		`turnout_events_dead_lettered_total{reason="rule",route="care"}`:     "2",
		`turnout_events_dropped_total{route="care"}`:                         "1",
		`turnout_events_dead_lettered_total{reason="output",route="strict"}`: "1",
		`turnout_dead_letter_file_events_total{route="strict"}`:              "1",
		`turnout_delivery_retries_total{output="hook",route="care"}`:         "1",
		`turnout_rule_decisions_total{action="error",route="care"}`:          "1",
		`turnout_spool_forwarded_total{output="archive"}`:                    "1",
		`turnout_broker_access_denied_total{action="connect"}`:               "1",
		`turnout_ready`: "1",
	} {
		testutil.WaitFor(t, series+" = "+want, 10*time.Second, func() bool { return metricLine(t, adminAddr, series) == want })
	}
	if code, body, err := httpGet("http://" + adminAddr + "/readyz"); err != nil || code != http.StatusOK {
		t.Errorf("/readyz = %d %q %v while turnout_ready is 1", code, body, err)
	}
	code, scrape, err := httpGet("http://" + adminAddr + "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics = %d %v", code, err)
	}
	return scrape
}

// sampleNames returns the names of the samples in an exposition (histograms as their _bucket,
// _sum and _count samples, as PromQL names them).
func sampleNames(exposition string) map[string]bool {
	names := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(exposition))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if i := strings.IndexAny(l, "{ "); i > 0 {
			names[l[:i]] = true
		}
	}
	return names
}
