package deploy

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"sigs.k8s.io/yaml"

	"github.com/turnout-router/turnout/internal/testutil"
)

// offlineResolver answers the linter's questions about base images without a registry (the
// test machines reach none): every base image is an empty linux image of this machine's
// architecture. The checks that look into a base image's own ENV see none.
type offlineResolver struct{}

func (offlineResolver) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	cfg, err := json.Marshal(ocispecs.Image{Platform: ocispecs.Platform{OS: "linux", Architecture: runtime.GOARCH}})
	if err != nil {
		return "", "", nil, err
	}
	return ref, digest.FromBytes(cfg), cfg, nil
}

// lint runs BuildKit's Dockerfile checks (those of `docker build --check`) over dt and returns
// each warning or build error as FILE:LINE: RULE: detail.
func lint(t *testing.T, file string, dt []byte) []string {
	t.Helper()
	res, err := dockerfile2llb.DockerfileLint(context.Background(), dt, dockerfile2llb.ConvertOpt{
		SourceMap:    &llb.SourceMap{Filename: file, Language: "Dockerfile", Data: dt, Definition: &llb.Definition{}},
		MetaResolver: offlineResolver{},
	})
	if err != nil {
		t.Fatalf("lint %s: %v", file, err)
	}
	var out []string
	for _, w := range res.Warnings {
		l := 0
		if w.Location != nil && len(w.Location.Ranges) > 0 {
			l = int(w.Location.Ranges[0].Start.Line)
		}
		out = append(out, fmt.Sprintf("%s:%d: %s: %s (%s)", file, l, w.RuleName, w.Detail, w.URL))
	}
	if res.Error != nil {
		out = append(out, fmt.Sprintf("%s: %s", file, res.Error.Message))
	}
	return out
}

// TestDockerfileLint: BuildKit's linter finds nothing in the Dockerfile. hadolint, where it is
// installed, is the other check (docs: `hadolint Dockerfile`).
func TestDockerfileLint(t *testing.T) {
	// The linter must be able to say something: a Dockerfile with three known faults.
	bad := []byte("FROM alpine as Build\nMAINTAINER someone\nCMD echo hi\n")
	found := strings.Join(lint(t, "bad.Dockerfile", bad), "\n")
	for _, rule := range []string{"FromAsCasing", "MaintainerDeprecated", "JSONArgsRecommended"} {
		if !strings.Contains(found, rule) {
			t.Fatalf("the linter did not report %s in a Dockerfile with that fault; it said:\n%s", rule, found)
		}
	}

	d := readDockerfile(t)
	for _, w := range lint(t, d.path, d.data) {
		t.Error(w)
	}
}

// TestDockerfileRequirements checks what the Dockerfile promises without building it: the
// final stage runs as a numeric non-root user, keeps data in a VOLUME, has no HEALTHCHECK and
// starts turnout in exec form; the builder's Go is the go.mod's.
func TestDockerfileRequirements(t *testing.T) {
	d := readDockerfile(t)
	final := d.final()
	var user string
	var volumes, entrypoint, cmd int
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.VolumeCommand:
			volumes++
		case *instructions.EntrypointCommand:
			entrypoint++
			if c.PrependShell || len(c.CmdLine) == 0 || c.CmdLine[0] != "/turnout" {
				t.Errorf("%s:%d: ENTRYPOINT %v: want the exec form [\"/turnout\"] (the base has no shell)", d.path, line(c.Location()), c.CmdLine)
			}
		case *instructions.CmdCommand:
			cmd++
			if c.PrependShell || len(c.CmdLine) == 0 || c.CmdLine[0] != "run" {
				t.Errorf("%s:%d: CMD %v: want the exec form [\"run\", \"-c\", CONFIG]", d.path, line(c.Location()), c.CmdLine)
			}
		}
	}
	for _, st := range d.stages {
		for _, c := range st.Commands {
			if _, ok := c.(*instructions.HealthCheckCommand); ok {
				t.Errorf("%s:%d: HEALTHCHECK: orchestrators probe /healthz and /readyz themselves, and the final image has no client to run one", d.path, line(c.Location()))
			}
		}
	}
	switch uid, _, err := numericUser(user); {
	case user == "":
		t.Errorf("%s: the final stage has no USER: the image would run as its base's user", d.path)
	case err != nil:
		t.Errorf("%s: %v", d.path, err)
	case uid == 0:
		t.Errorf("%s: USER %s is root", d.path, user)
	}
	if volumes == 0 {
		t.Errorf("%s: the final stage declares no VOLUME for data_dir", d.path)
	}
	if entrypoint != 1 || cmd != 1 {
		t.Errorf("%s: the final stage has %d ENTRYPOINT and %d CMD instructions, want one of each", d.path, entrypoint, cmd)
	}

	// The builder's Go: golang:${GO_VERSION}, GO_VERSION's default a prefix of go.mod's go line.
	var builder *instructions.Stage
	for i := range d.stages {
		if strings.HasPrefix(d.stages[i].BaseName, "golang:") {
			builder = &d.stages[i]
		}
	}
	if builder == nil {
		t.Fatalf("%s: no stage FROM golang:...", d.path)
	}
	tag := strings.TrimPrefix(builder.BaseName, "golang:")
	if v, ok := d.metaArg("GO_VERSION"); ok {
		tag = strings.ReplaceAll(tag, "${GO_VERSION}", v)
	}
	gomod := goDirective(t, filepath.Join(repoRoot(t), "go.mod"))
	if gomod != tag && !strings.HasPrefix(gomod, tag+".") {
		t.Errorf("%s:%d: the builder is golang:%s, but go.mod asks for go %s", d.path, line(builder.Location), tag, gomod)
	}
}

// goDirective returns the version on go.mod's go line.
func goDirective(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "go "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s has no go line", file)
	return ""
}

// TestImageRuns builds turnout and the rules as the Dockerfile does, lays out the final
// stage's file system (only what the Dockerfile puts there: no shell, no /tmp, nothing
// writable but the data volume) and runs the image's default command in it as the image's
// user: it must get ready, serve its metrics, route an event with the stock rule, and keep its
// state in the VOLUME.
func TestImageRuns(t *testing.T) {
	img := builtImage(t)
	uid, gid, err := numericUser(img.user)
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append([]string{}, img.entrypoint...), img.cmd...)
	// The image is the cloud edition: its binary has the OpenTelemetry exporter (build tag otel),
	// so a tracing block in a mounted configuration works (docs/configuration.md, tracing).
	if bi, err := buildinfo.ReadFile(filepath.Join(img.root, img.entrypoint[0])); err != nil {
		t.Fatalf("the image's binary %s: %v", img.entrypoint[0], err)
	} else if tags := buildSetting(bi, "-tags"); !slices.Contains(strings.Split(tags, ","), "otel") {
		t.Errorf("the image's binary was built with tags %q, want otel (make build TAGS=otel)", tags)
	}
	configPath, ok := configArg(argv)
	if !ok {
		t.Fatalf("the image's command %v names no configuration (-c)", argv)
	}
	raw, err := os.ReadFile(filepath.Join(img.root, configPath))
	if err != nil {
		t.Fatalf("the image's configuration %s: %v", configPath, err)
	}
	var cfg struct {
		DataDir string `json:"data_dir"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("%s: %v", configPath, err)
	}
	if !path.IsAbs(cfg.DataDir) {
		t.Fatalf("%s: data_dir %q is not absolute: it would depend on the working directory", configPath, cfg.DataDir)
	}
	var isVolume bool
	for _, v := range img.volumes {
		isVolume = isVolume || path.Clean(v) == path.Clean(cfg.DataDir)
	}
	if !isVolume {
		t.Errorf("data_dir %s of %s is not a VOLUME (volumes: %v): the state would land in the container's writable layer", cfg.DataDir, configPath, img.volumes)
	}
	if st, err := os.Stat(filepath.Join(img.root, cfg.DataDir)); err != nil {
		t.Fatal(err)
	} else if sys := st.Sys().(*syscall.Stat_t); sys.Uid != uid {
		t.Errorf("data_dir %s in the image is owned by uid %d, not by the image's user %d: turnout could not write its state", cfg.DataDir, sys.Uid, uid)
	}

	// The default configuration's listeners move with TURNOUT_*_LISTEN_PORT (documented
	// there): ports of the test's own, since this machine's brokers hold the defaults.
	httpPort, mqttPort, adminPort := testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t)
	env := append(append([]string{}, img.env...),
		"TURNOUT_HTTP_LISTEN_PORT="+strconv.Itoa(httpPort),
		"TURNOUT_MQTT_LISTEN_PORT="+strconv.Itoa(mqttPort),
		"TURNOUT_ADMIN_LISTEN_PORT="+strconv.Itoa(adminPort))
	var out testutil.SyncBuffer
	cmd := inImage(img.root, uid, gid, img.workdir, env, argv...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v in the image's file system: %v", argv, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		if t.Failed() {
			t.Logf("turnout's output:\n%s", out.String())
		}
	})

	admin := "http://127.0.0.1:" + strconv.Itoa(adminPort)
	testutil.WaitFor(t, "turnout in the image's file system to answer /readyz with 200", 30*time.Second, func() bool {
		select {
		case <-exited:
			t.Fatalf("turnout exited: %v\n%s", cmd.ProcessState, out.String())
		default:
		}
		code, _ := get(admin + "/readyz")
		return code == http.StatusOK
	})

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d", uid, uid, uid, uid)
	if !strings.Contains(string(status), want+"\n") {
		t.Errorf("turnout does not run as the image's user %d: /proc/PID/status says\n%s", uid, status)
	}

	code, metrics := get(admin + "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics answered %d:\n%s", code, metrics)
	}
	_, info, _ := strings.Cut(metrics, "\nturnout_build_info{")
	if info, _, _ = strings.Cut(info, "\n"); !strings.Contains(info, `version="`+testVersion+`"`) {
		t.Errorf("/metrics: turnout_build_info{%s: want the build argument VERSION=%s", info, testVersion)
	}

	// An event through the HTTP input and the stock rule, to the log output.
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:"+strconv.Itoa(httpPort)+"/", strings.NewReader(`{"battery":87}`))
	req.Header.Set("ce-specversion", "1.0")
	req.Header.Set("ce-id", "image-1")
	req.Header.Set("ce-source", "/devices/pendant-17")
	req.Header.Set("ce-type", "care.heartbeat")
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("the HTTP input answered %d to an event, want 204", resp.StatusCode)
	}
	testutil.WaitFor(t, "the event on the log output (standard output)", 5*time.Second, func() bool {
		return strings.Contains(out.String(), `"id":"image-1"`)
	})

	// The compiled-rule cache went to the data volume, as the image's user.
	cache := filepath.Join(img.root, cfg.DataDir, "cache", "wasm")
	if st, err := os.Stat(cache); err != nil {
		t.Errorf("no compiled-rule cache in the data volume: %v", err)
	} else if sys := st.Sys().(*syscall.Stat_t); sys.Uid != uid {
		t.Errorf("%s is owned by uid %d, want the image's user %d", cache, sys.Uid, uid)
	}

	// SIGTERM: the drain, then a clean exit (docker stop, a pod's termination).
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if !cmd.ProcessState.Success() {
			t.Errorf("turnout exited with %v after SIGTERM, want 0", cmd.ProcessState)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("turnout still runs 20 s after SIGTERM")
	}
}

// buildSetting returns the value of a build setting of bi, "" when absent.
func buildSetting(bi *debug.BuildInfo, key string) string {
	for _, s := range bi.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
