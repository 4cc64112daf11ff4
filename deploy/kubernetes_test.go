package deploy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// kustomizations are the deployable directories below deploy/.
var kustomizations = []string{"kubernetes/base", "kubernetes/statefulset"}

// TestKubernetes renders each kustomization as `kubectl apply -k` would, decodes every object
// strictly into its Kubernetes API type (an unknown or misspelt field is an error), and checks
// what an operator relies on: the probes reach the admin listener the configuration opens, the
// grace period outlasts the drain, the Services, the PodDisruptionBudget and the ServiceMonitor
// find the pods, data_dir is a writable volume, the pods run locked down, MQTT client ids are
// per pod where the pods keep their names, and the configuration passes `turnout validate` in
// the pod's file system with the pod's environment.
func TestKubernetes(t *testing.T) {
	for _, dir := range kustomizations {
		t.Run(filepath.Base(dir), func(t *testing.T) { checkKustomization(t, dir) })
	}
}

// rendered is a kustomization's output, by kind.
type rendered struct {
	dir          string
	deployments  []appsv1.Deployment
	statefulSets []appsv1.StatefulSet
	services     []corev1.Service
	configMaps   []corev1.ConfigMap
	secrets      []corev1.Secret
	pdbs         []policyv1.PodDisruptionBudget
	monitors     []monitoringv1.ServiceMonitor
}

func render(t *testing.T, dir string) *rendered {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	rs := &rendered{dir: dir}
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		where := fmt.Sprintf("%s: %s %s %s", dir, r.GetApiVersion(), r.GetKind(), r.GetName())
		switch r.GetApiVersion() + " " + r.GetKind() {
		case "apps/v1 Deployment":
			decodeStrict(t, y, where, &rs.deployments)
		case "apps/v1 StatefulSet":
			decodeStrict(t, y, where, &rs.statefulSets)
		case "v1 Service":
			decodeStrict(t, y, where, &rs.services)
		case "v1 ConfigMap":
			decodeStrict(t, y, where, &rs.configMaps)
		case "v1 Secret":
			decodeStrict(t, y, where, &rs.secrets)
		case "policy/v1 PodDisruptionBudget":
			decodeStrict(t, y, where, &rs.pdbs)
		case "monitoring.coreos.com/v1 ServiceMonitor":
			decodeStrict(t, y, where, &rs.monitors)
		default:
			t.Errorf("%s: a kind this test does not decode; add it", where)
		}
	}
	return rs
}

// decodeStrict decodes the object y into a new element of list, failing the test on any field
// its API type does not have.
func decodeStrict[T any](t *testing.T, y []byte, where string, list *[]T) {
	t.Helper()
	var o T
	if err := yaml.UnmarshalStrict(y, &o); err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	*list = append(*list, o)
}

// workload is the Deployment or StatefulSet that runs turnout.
type workload struct {
	kind, name  string
	replicas    int32
	selector    *metav1.LabelSelector
	pod         corev1.PodTemplateSpec
	claims      []corev1.PersistentVolumeClaim
	serviceName string
	podName     string // the name one of its pods gets
}

func (rs *rendered) workload(t *testing.T) workload {
	t.Helper()
	if n := len(rs.deployments) + len(rs.statefulSets); n != 1 {
		t.Fatalf("%s: %d Deployments and StatefulSets, want one", rs.dir, n)
	}
	one := func(r *int32) int32 {
		if r == nil {
			return 1
		}
		return *r
	}
	if len(rs.deployments) == 1 {
		d := rs.deployments[0]
		return workload{kind: "Deployment", name: d.Name, replicas: one(d.Spec.Replicas), selector: d.Spec.Selector, pod: d.Spec.Template, podName: d.Name + "-7c9d8f6b5-x2k4q"}
	}
	s := rs.statefulSets[0]
	return workload{kind: "StatefulSet", name: s.Name, replicas: one(s.Spec.Replicas), selector: s.Spec.Selector, pod: s.Spec.Template,
		claims: s.Spec.VolumeClaimTemplates, serviceName: s.Spec.ServiceName, podName: s.Name + "-0"}
}

func (rs *rendered) configMap(name string) (corev1.ConfigMap, bool) {
	for _, c := range rs.configMaps {
		if c.Name == name {
			return c, true
		}
	}
	return corev1.ConfigMap{}, false
}

func (rs *rendered) secret(name string) (corev1.Secret, bool) {
	for _, s := range rs.secrets {
		if s.Name == name {
			return s, true
		}
	}
	return corev1.Secret{}, false
}

// turnoutConfig is the part of turnout.yaml the manifests must agree with; `turnout validate`
// checks the whole file.
type turnoutConfig struct {
	DataDir     string `json:"data_dir"`
	MemoryLimit string `json:"memory_limit"`
	Admin       struct {
		Listen   string `json:"listen"`
		TokenEnv string `json:"token_env"`
	} `json:"admin"`
	Shutdown struct {
		DrainTimeout string `json:"drain_timeout"`
	} `json:"shutdown"`
	Inputs map[string]struct {
		Type     string   `json:"type"`
		Listen   string   `json:"listen"`
		ClientID string   `json:"client_id"`
		Topics   []string `json:"topics"`
	} `json:"inputs"`
}

// podConfig finds the configuration the container runs: the file after -c in its command (the
// image's ENTRYPOINT and CMD unless the container overrides them), in the ConfigMap mounted
// there.
func podConfig(t *testing.T, rs *rendered, pod corev1.PodSpec, c corev1.Container, argv []string) (file string, cm corev1.ConfigMap, key string) {
	t.Helper()
	file, ok := configArg(argv)
	if !ok {
		t.Fatalf("%s: the container's command %v names no configuration (-c)", rs.dir, argv)
	}
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, file)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				cm, ok := rs.configMap(v.ConfigMap.Name)
				if !ok {
					t.Fatalf("%s: volume %s names ConfigMap %s, which the kustomization does not make", rs.dir, v.Name, v.ConfigMap.Name)
				}
				if _, ok := cm.Data[rel]; !ok {
					t.Fatalf("%s: ConfigMap %s has no key %s for %s", rs.dir, cm.Name, rel, file)
				}
				return file, cm, rel
			}
		}
	}
	t.Fatalf("%s: no ConfigMap is mounted where the container's configuration %s is", rs.dir, file)
	return
}

// literal refuses a value with ${...}: the test reads the file as it stands.
func literal(t *testing.T, where, key, v string) string {
	t.Helper()
	if strings.Contains(v, "${") {
		t.Errorf("%s: %s is %q: keep it literal, this test compares it with the manifests without the pod's environment", where, key, v)
	}
	return v
}

// containerPort resolves a probe's or a Service's target port against the container's ports.
func containerPort(c corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func selects(t *testing.T, sel *metav1.LabelSelector, l map[string]string) bool {
	t.Helper()
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("selector %v: %v", sel, err)
		return false
	}
	return !s.Empty() && s.Matches(labels.Set(l))
}

// subject is one kustomization's turnout workload, its container and the configuration the
// container runs: what the checks below compare.
type subject struct {
	rs        *rendered
	w         workload
	c         corev1.Container
	argv      []string
	file      string // the configuration's path in the pod
	cm        corev1.ConfigMap
	cfg       turnoutConfig
	where     string // the workload, for messages
	cfgWhere  string // the configuration, for messages
	adminPort int
}

func checkKustomization(t *testing.T, dir string) {
	sub := newSubject(t, dir)
	sub.checkProbes(t)
	sub.checkShutdown(t)
	sub.checkDataDir(t)
	sub.checkSecurity(t)
	sub.checkResources(t)
	sub.checkServices(t)
	sub.checkDisruptionBudget(t)
	sub.checkServiceMonitors(t)
	sub.checkMQTT(t)
	// A change of the configuration rolls the pods: the ConfigMap's name carries its content.
	checkConfigRolls(t, dir, sub.cm.Name)
	sub.checkToken(t)
}

// newSubject renders the kustomization dir and finds its workload, container and configuration.
func newSubject(t *testing.T, dir string) *subject {
	rs := render(t, dir)
	w := rs.workload(t)
	where := fmt.Sprintf("%s: %s %s", dir, w.kind, w.name)
	pod := w.pod.Spec
	podLabels := w.pod.Labels
	if !selects(t, w.selector, podLabels) {
		t.Errorf("%s: its selector %v does not match its pods' labels %v", where, w.selector, podLabels)
	}
	i := slices.IndexFunc(pod.Containers, func(c corev1.Container) bool { return c.Name == "turnout" })
	if i < 0 {
		t.Fatalf("%s: no container named turnout", where)
	}
	c := pod.Containers[i]

	d := readDockerfile(t)
	entrypoint, cmd := d.command()
	argv := append(append([]string{}, entrypoint...), cmd...)
	switch {
	case len(c.Command) > 0:
		argv = append(append([]string{}, c.Command...), c.Args...)
	case len(c.Args) > 0:
		argv = append(append([]string{}, entrypoint...), c.Args...)
	}
	for _, a := range argv {
		if strings.Contains(a, "$(") {
			t.Fatalf("%s: the command %v uses $(VAR), which this test does not expand", where, argv)
		}
	}
	file, cm, key := podConfig(t, rs, pod, c, argv)
	cfgWhere := fmt.Sprintf("%s: ConfigMap %s, %s", dir, cm.Name, key)
	var cfg turnoutConfig
	if err := yaml.Unmarshal([]byte(cm.Data[key]), &cfg); err != nil {
		t.Fatalf("%s: %v", cfgWhere, err)
	}
	host, port, err := net.SplitHostPort(literal(t, cfgWhere, "admin.listen", cfg.Admin.Listen))
	if err != nil {
		t.Fatalf("%s: admin.listen %q: %v (the default, 127.0.0.1:9090, is unreachable for the kubelet)", cfgWhere, cfg.Admin.Listen, err)
	}
	if host != "0.0.0.0" && host != "" && host != "::" {
		t.Errorf("%s: admin.listen %s: the kubelet probes the pod's IP, so listen on all addresses (0.0.0.0)", cfgWhere, cfg.Admin.Listen)
	}
	adminPort, _ := strconv.Atoi(port)
	return &subject{rs: rs, w: w, c: c, argv: argv, file: file, cm: cm, cfg: cfg, where: where, cfgWhere: cfgWhere, adminPort: adminPort}
}

// checkProbes: the probes reach the admin listener.
func (sub *subject) checkProbes(t *testing.T) {
	t.Helper()
	probes := []struct {
		kind  string
		p     *corev1.Probe
		paths []string
	}{{"liveness", sub.c.LivenessProbe, []string{"/healthz"}}, {"readiness", sub.c.ReadinessProbe, []string{"/readyz"}}, {"startup", sub.c.StartupProbe, []string{"/healthz", "/readyz"}}}
	for _, pr := range probes {
		if pr.p == nil || pr.p.HTTPGet == nil {
			t.Errorf("%s: no HTTP %s probe", sub.where, pr.kind)
			continue
		}
		if n, ok := containerPort(sub.c, pr.p.HTTPGet.Port); !ok || int(n) != sub.adminPort {
			t.Errorf("%s: the %s probe's port %s is container port %d, but the admin listener is on %d", sub.where, pr.kind, pr.p.HTTPGet.Port.String(), n, sub.adminPort)
		}
		if !slices.Contains(pr.paths, pr.p.HTTPGet.Path) {
			t.Errorf("%s: the %s probe asks %s, want %s", sub.where, pr.kind, pr.p.HTTPGet.Path, strings.Join(pr.paths, " or "))
		}
	}
}

// checkShutdown: the grace period outlasts the preStop sleep and the drain.
func (sub *subject) checkShutdown(t *testing.T) {
	t.Helper()
	drain, err := time.ParseDuration(literal(t, sub.cfgWhere, "shutdown.drain_timeout", sub.cfg.Shutdown.DrainTimeout))
	if err != nil {
		t.Errorf("%s: shutdown.drain_timeout %q: %v (set it explicitly: the grace period is checked against it)", sub.cfgWhere, sub.cfg.Shutdown.DrainTimeout, err)
	}
	var preStop time.Duration
	if l := sub.c.Lifecycle; l != nil && l.PreStop != nil {
		if l.PreStop.Sleep == nil {
			t.Errorf("%s: a preStop hook other than sleep: the image has no shell, and this test cannot tell how long it takes", sub.where)
		} else {
			preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
		}
	}
	if sub.w.pod.Spec.TerminationGracePeriodSeconds == nil {
		t.Errorf("%s: no terminationGracePeriodSeconds: set it above the preStop sleep plus the drain", sub.where)
	} else if grace := time.Duration(*sub.w.pod.Spec.TerminationGracePeriodSeconds) * time.Second; grace <= preStop+drain {
		t.Errorf("%s: terminationGracePeriodSeconds %v is not longer than the preStop sleep %v plus shutdown.drain_timeout %v: SIGKILL would cut the drain", sub.where, grace, preStop, drain)
	}
}

// checkDataDir: data_dir is a writable volume (the root file system is read-only).
func (sub *subject) checkDataDir(t *testing.T) {
	t.Helper()
	dataDir := path.Clean(literal(t, sub.cfgWhere, "data_dir", sub.cfg.DataDir))
	dataVolume := ""
	for _, m := range sub.c.VolumeMounts {
		if path.Clean(m.MountPath) == dataDir && !m.ReadOnly {
			dataVolume = m.Name
		}
	}
	writable := slices.ContainsFunc(sub.w.pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == dataVolume && v.EmptyDir != nil }) ||
		slices.ContainsFunc(sub.w.claims, func(p corev1.PersistentVolumeClaim) bool { return p.Name == dataVolume })
	if dataVolume == "" || !writable {
		t.Errorf("%s: data_dir %s is not a writable emptyDir or volume claim mounted in the container", sub.where, dataDir)
	}
}

// checkSecurity: the pod runs locked down (non-root, read-only root, no capabilities, seccomp).
func (sub *subject) checkSecurity(t *testing.T) {
	t.Helper()
	psc, csc := sub.w.pod.Spec.SecurityContext, sub.c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("%s: the pod's securityContext needs runAsNonRoot: true and a non-zero runAsUser", sub.where)
	}
	seccomp := func(sp *corev1.SeccompProfile) bool {
		return sp != nil && sp.Type == corev1.SeccompProfileTypeRuntimeDefault
	}
	if !(psc != nil && seccomp(psc.SeccompProfile)) && !(csc != nil && seccomp(csc.SeccompProfile)) {
		t.Errorf("%s: no seccompProfile RuntimeDefault", sub.where)
	}
	if csc == nil || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem ||
		csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
		csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") {
		t.Errorf("%s: the container's securityContext needs readOnlyRootFilesystem: true, allowPrivilegeEscalation: false and capabilities.drop [ALL]", sub.where)
	}
}

// checkResources: requests and limits are set, and the Go runtime's soft limit is under the
// hard one.
func (sub *subject) checkResources(t *testing.T) {
	t.Helper()
	req, lim := sub.c.Resources.Requests, sub.c.Resources.Limits
	if req.Cpu().IsZero() || req.Memory().IsZero() || lim.Memory().IsZero() {
		t.Errorf("%s: set requests.cpu, requests.memory and limits.memory (docs/benchmarks.md, Footprint)", sub.where)
	}
	if sub.cfg.MemoryLimit != "" {
		q, err := resource.ParseQuantity(strings.TrimSuffix(literal(t, sub.cfgWhere, "memory_limit", sub.cfg.MemoryLimit), "B"))
		if err != nil {
			t.Errorf("%s: memory_limit %q: %v", sub.cfgWhere, sub.cfg.MemoryLimit, err)
		} else if !lim.Memory().IsZero() && q.Cmp(*lim.Memory()) >= 0 {
			t.Errorf("%s: memory_limit %s is not below the container's memory limit %s: the kernel would kill turnout before its garbage collector tries harder", sub.where, sub.cfg.MemoryLimit, lim.Memory())
		}
	}
}

// checkServices: the Services find the pods, and target ports the container has.
func (sub *subject) checkServices(t *testing.T) {
	t.Helper()
	targets := map[int32]bool{}
	for _, s := range sub.rs.services {
		if !selects(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}, sub.w.pod.Labels) {
			t.Errorf("%s: Service %s's selector %v does not select the pods (labels %v)", sub.rs.dir, s.Name, s.Spec.Selector, sub.w.pod.Labels)
			continue
		}
		for _, p := range s.Spec.Ports {
			tp := p.TargetPort
			if tp.Type == intstr.Int && tp.IntVal == 0 {
				tp = intstr.FromInt32(p.Port)
			}
			n, ok := containerPort(sub.c, tp)
			if !ok {
				t.Errorf("%s: Service %s port %s targets %s, which the container does not have", sub.rs.dir, s.Name, p.Name, tp.String())
			}
			targets[n] = true
		}
	}
	if !targets[int32(sub.adminPort)] {
		t.Errorf("%s: no Service reaches the admin port %d", sub.rs.dir, sub.adminPort)
	}
	for name, in := range sub.cfg.Inputs {
		if in.Type != "http" {
			continue
		}
		_, p, err := net.SplitHostPort(literal(t, sub.cfgWhere, "inputs."+name+".listen", in.Listen))
		n, _ := strconv.Atoi(p)
		if err != nil || !targets[int32(n)] {
			t.Errorf("%s: the HTTP input %s listens on %q, which no Service reaches", sub.cfgWhere, name, in.Listen)
		}
	}
}

// checkDisruptionBudget: the PodDisruptionBudget covers the pods and lets a drain evict one.
func (sub *subject) checkDisruptionBudget(t *testing.T) {
	t.Helper()
	if len(sub.rs.pdbs) == 0 {
		t.Errorf("%s: no PodDisruptionBudget", sub.rs.dir)
	}
	for _, p := range sub.rs.pdbs {
		if !selects(t, p.Spec.Selector, sub.w.pod.Labels) {
			t.Errorf("%s: PodDisruptionBudget %s does not select the pods", sub.rs.dir, p.Name)
		}
		switch {
		case p.Spec.MaxUnavailable != nil:
			if v, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MaxUnavailable, int(sub.w.replicas), true); err != nil || v < 1 {
				t.Errorf("%s: PodDisruptionBudget %s maxUnavailable %s allows no eviction: a node drain would hang", sub.rs.dir, p.Name, p.Spec.MaxUnavailable.String())
			}
		case p.Spec.MinAvailable != nil:
			if v, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MinAvailable, int(sub.w.replicas), true); err != nil || v >= int(sub.w.replicas) {
				t.Errorf("%s: PodDisruptionBudget %s minAvailable %s of %d replicas allows no eviction", sub.rs.dir, p.Name, p.Spec.MinAvailable.String(), sub.w.replicas)
			}
		default:
			t.Errorf("%s: PodDisruptionBudget %s sets neither maxUnavailable nor minAvailable", sub.rs.dir, p.Name)
		}
	}
}

// checkServiceMonitors: the ServiceMonitor scrapes each pod once, on the admin port.
func (sub *subject) checkServiceMonitors(t *testing.T) {
	t.Helper()
	if len(sub.rs.monitors) == 0 {
		t.Errorf("%s: no ServiceMonitor", sub.rs.dir)
	}
	for _, m := range sub.rs.monitors {
		var matched []corev1.Service
		for _, s := range sub.rs.services {
			if selects(t, &m.Spec.Selector, s.Labels) && selects(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}, sub.w.pod.Labels) {
				matched = append(matched, s)
			}
		}
		if len(matched) != 1 {
			t.Errorf("%s: ServiceMonitor %s selects %d Services of the pods, want 1 (each more scrapes every pod again)", sub.rs.dir, m.Name, len(matched))
			continue
		}
		s := matched[0]
		for _, e := range m.Spec.Endpoints {
			i := slices.IndexFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port })
			if i < 0 {
				t.Errorf("%s: ServiceMonitor %s scrapes port %q, which Service %s does not name", sub.rs.dir, m.Name, e.Port, s.Name)
				continue
			}
			if n, _ := containerPort(sub.c, s.Spec.Ports[i].TargetPort); int(n) != sub.adminPort {
				t.Errorf("%s: ServiceMonitor %s scrapes container port %d, not the admin port %d", sub.rs.dir, m.Name, n, sub.adminPort)
			}
			if e.Path != "" && e.Path != "/metrics" {
				t.Errorf("%s: ServiceMonitor %s scrapes %s, want /metrics", sub.rs.dir, m.Name, e.Path)
			}
		}
	}
}

// checkMQTT: MQTT client ids are per pod and stable, which only a StatefulSet's pod names
// make them, and the inputs share one $share group.
func (sub *subject) checkMQTT(t *testing.T) {
	t.Helper()
	podNameVar := ""
	for _, e := range sub.c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
			podNameVar = e.Name
		}
	}
	var groups []string
	for name, in := range sub.cfg.Inputs {
		if in.Type != "mqtt" {
			continue
		}
		if sub.w.kind != "StatefulSet" {
			t.Errorf("%s: MQTT input %s in a %s: its pods get new names when replaced, so no client id can be both per pod and stable (docs/scaling.md); use the StatefulSet variant", sub.cfgWhere, name, sub.w.kind)
			continue
		}
		if podNameVar == "" || !(strings.Contains(in.ClientID, "${"+podNameVar+"}") || strings.Contains(in.ClientID, "${"+podNameVar+":-")) {
			t.Errorf("%s: MQTT input %s's client_id %q does not contain the pod's name (an env from fieldRef metadata.name): the pods would share one session", sub.cfgWhere, name, in.ClientID)
		}
		for _, topic := range in.Topics {
			parts := strings.SplitN(topic, "/", 3)
			if len(parts) < 3 || parts[0] != "$share" {
				t.Errorf("%s: MQTT input %s subscribes %q, not a shared subscription ($share/GROUP/filter): every pod would get every message", sub.cfgWhere, name, topic)
				continue
			}
			groups = append(groups, parts[1])
		}
	}
	if g := slices.Compact(slices.Sorted(slices.Values(groups))); len(g) > 1 {
		t.Errorf("%s: the MQTT inputs use several $share groups %v: each group gets every message", sub.cfgWhere, g)
	}
	if sub.w.kind == "StatefulSet" {
		i := slices.IndexFunc(sub.rs.services, func(s corev1.Service) bool { return s.Name == sub.w.serviceName })
		if i < 0 || sub.rs.services[i].Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("%s: serviceName %q is not a headless Service (clusterIP: None) of the kustomization", sub.where, sub.w.serviceName)
		}
	}
}

// checkToken: the admin token comes from a Secret, and the one in the repository is refused.
func (sub *subject) checkToken(t *testing.T) {
	t.Helper()
	tokenEnv := sub.cfg.Admin.TokenEnv
	if tokenEnv == "" {
		t.Errorf("%s: no admin.token_env: the rules API would be read-only (if that is meant, drop this check)", sub.cfgWhere)
	}
	i := slices.IndexFunc(sub.c.Env, func(e corev1.EnvVar) bool { return e.Name == tokenEnv })
	if i < 0 || sub.c.Env[i].ValueFrom == nil || sub.c.Env[i].ValueFrom.SecretKeyRef == nil {
		t.Errorf("%s: %s does not come from a Secret", sub.where, tokenEnv)
	}
	sub.checkValidate(t, tokenEnv)
}

// checkConfigRolls renders a copy of the kustomizations with every turnout.yaml changed and
// checks that the pods' ConfigMap got another name.
func checkConfigRolls(t *testing.T, dir, name string) {
	t.Helper()
	tmp := t.TempDir()
	err := filepath.WalkDir("kubernetes", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(tmp, p)
		if e.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if e.Name() == "turnout.yaml" {
			b = append(b, "# changed\n"...)
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	changed := render(t, filepath.Join(tmp, dir))
	w := changed.workload(t)
	for _, v := range w.pod.Spec.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == name {
			t.Errorf("%s: the pods' ConfigMap keeps its name %s when turnout.yaml changes: the pods would not restart with the new configuration (use a configMapGenerator)", dir, name)
		}
	}
}

// checkValidate runs `turnout validate` on the ConfigMap's configuration in the pod's file
// system (the image's, with the pod's volumes mounted), as the pod's user, with the pod's
// environment: as rendered it must refuse the placeholder token, and pass once the Secret holds
// a real one.
func (sub *subject) checkValidate(t *testing.T, tokenEnv string) {
	t.Helper()
	rs, w, c, argv, file := sub.rs, sub.w, sub.c, sub.argv, sub.file
	img := builtImage(t)
	pod := w.pod.Spec
	root := podRoot(t, img, rs, w, c)
	uid, gid, err := numericUser(img.user)
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range []*corev1.SecurityContext{podSecurity(pod.SecurityContext), c.SecurityContext} {
		if sc != nil && sc.RunAsUser != nil {
			uid = uint32(*sc.RunAsUser)
		}
		if sc != nil && sc.RunAsGroup != nil {
			gid = uint32(*sc.RunAsGroup)
		}
	}
	workdir := img.workdir
	if c.WorkingDir != "" {
		workdir = c.WorkingDir
	}
	validate := slices.Clone(argv)
	i := slices.Index(validate, "run")
	if i < 0 {
		t.Fatalf("%s: the container's command %v does not run turnout (no \"run\")", rs.dir, argv)
	}
	validate[i] = "validate"

	env := podEnv(t, rs, w, c, nil)
	out, err := inImage(root, uid, gid, workdir, env, validate...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "admin.token_env") {
		t.Errorf("%s: with the Secret as rendered, turnout validate -c %s should refuse the placeholder token (%v):\n%s", rs.dir, file, err, out)
	}

	token := make([]byte, 32)
	rand.Read(token)
	env = podEnv(t, rs, w, c, map[string]string{tokenEnv: hex.EncodeToString(token)})
	out, err = inImage(root, uid, gid, workdir, env, validate...).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "ok:") {
		t.Errorf("%s: turnout validate -c %s in the pod's file system, with a real admin token: %v\n%s", rs.dir, file, err, out)
	}
}

func podSecurity(p *corev1.PodSecurityContext) *corev1.SecurityContext {
	if p == nil {
		return nil
	}
	return &corev1.SecurityContext{RunAsUser: p.RunAsUser, RunAsGroup: p.RunAsGroup}
}

// podEnv is the container's environment as the kubelet would give it (the image's ENV, then
// the container's env with secrets, config maps and the pod's name resolved), with override
// replacing values by name.
func podEnv(t *testing.T, rs *rendered, w workload, c corev1.Container, override map[string]string) []string {
	t.Helper()
	if len(c.EnvFrom) > 0 {
		t.Fatalf("%s: envFrom is not resolved by this test", rs.dir)
	}
	env := slices.Clone(builtImage(t).env)
	for _, e := range c.Env {
		v := e.Value
		switch f := e.ValueFrom; {
		case f == nil:
			if strings.Contains(v, "$(") {
				t.Fatalf("%s: env %s uses $(VAR), which this test does not expand", rs.dir, e.Name)
			}
		case f.SecretKeyRef != nil:
			s, ok := rs.secret(f.SecretKeyRef.Name)
			if !ok {
				t.Fatalf("%s: env %s names Secret %s, which the kustomization does not make", rs.dir, e.Name, f.SecretKeyRef.Name)
			}
			b, ok := s.Data[f.SecretKeyRef.Key]
			if !ok {
				t.Fatalf("%s: Secret %s has no key %s (env %s)", rs.dir, s.Name, f.SecretKeyRef.Key, e.Name)
			}
			v = string(b)
		case f.ConfigMapKeyRef != nil:
			cm, ok := rs.configMap(f.ConfigMapKeyRef.Name)
			if !ok {
				t.Fatalf("%s: env %s names ConfigMap %s, which the kustomization does not make", rs.dir, e.Name, f.ConfigMapKeyRef.Name)
			}
			v = cm.Data[f.ConfigMapKeyRef.Key]
		case f.FieldRef != nil && f.FieldRef.FieldPath == "metadata.name":
			v = w.podName
		case f.FieldRef != nil && f.FieldRef.FieldPath == "metadata.namespace":
			v = "default"
		default:
			t.Fatalf("%s: env %s: a source this test does not resolve", rs.dir, e.Name)
		}
		if o, ok := override[e.Name]; ok {
			v = o
		}
		env = append(env, e.Name+"="+v)
	}
	return env
}

// podRoot returns the pod's file system: the image's (hard links), with the container's
// volumes mounted as the kubelet mounts them (ConfigMaps and Secrets as files, emptyDir open to
// all, a volume claim owned by the fsGroup).
func podRoot(t *testing.T, img *image, rs *rendered, w workload, c corev1.Container) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	err := filepath.WalkDir(img.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(img.root, p)
		target := filepath.Join(root, rel)
		info, err := e.Info()
		if err != nil {
			return err
		}
		if !e.IsDir() {
			return os.Link(p, target)
		}
		if err := os.Mkdir(target, info.Mode().Perm()); err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		if err := os.Chown(target, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		return os.Chmod(target, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	pod := w.pod.Spec
	fsGroup := -1
	if pod.SecurityContext != nil && pod.SecurityContext.FSGroup != nil {
		fsGroup = int(*pod.SecurityContext.FSGroup)
	}
	files := func(dir string, data map[string][]byte) error {
		for k, v := range data {
			if err := os.WriteFile(filepath.Join(dir, k), v, 0o644); err != nil {
				return err
			}
			if err := os.Chown(filepath.Join(dir, k), 0, max(fsGroup, 0)); err != nil {
				return err
			}
		}
		return nil
	}
	for _, m := range c.VolumeMounts {
		if m.SubPath != "" {
			t.Fatalf("%s: volume mount %s uses subPath, which this test does not mount", rs.dir, m.Name)
		}
		target := filepath.Join(root, filepath.FromSlash(path.Clean(m.MountPath)))
		if err := os.RemoveAll(target); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(target, 0o755); err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		switch {
		case i >= 0 && pod.Volumes[i].ConfigMap != nil:
			v := pod.Volumes[i].ConfigMap
			cm, ok := rs.configMap(v.Name)
			if !ok || len(v.Items) > 0 {
				t.Fatalf("%s: volume %s: ConfigMap %s missing, or items given (not mounted by this test)", rs.dir, m.Name, v.Name)
			}
			data := map[string][]byte{}
			for k, s := range cm.Data {
				data[k] = []byte(s)
			}
			err = files(target, data)
		case i >= 0 && pod.Volumes[i].Secret != nil:
			v := pod.Volumes[i].Secret
			s, ok := rs.secret(v.SecretName)
			if !ok || len(v.Items) > 0 {
				t.Fatalf("%s: volume %s: Secret %s missing, or items given (not mounted by this test)", rs.dir, m.Name, v.SecretName)
			}
			err = files(target, s.Data)
		case i >= 0 && pod.Volumes[i].EmptyDir != nil:
			err = os.Chmod(target, 0o777)
		case slices.ContainsFunc(w.claims, func(p corev1.PersistentVolumeClaim) bool { return p.Name == m.Name }):
			if err = os.Chown(target, 0, max(fsGroup, 0)); err == nil {
				err = os.Chmod(target, 0o2775)
			}
		default:
			t.Fatalf("%s: volume mount %s: a volume this test does not mount", rs.dir, m.Name)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}
