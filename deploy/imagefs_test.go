package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/turnout-router/turnout/internal/testutil"
)

// The image's file system without an image builder (this machine has no container engine): the
// Dockerfile's stages are interpreted here, close enough to run what the final stage holds.
//
//   - The build context is a copy of the checkout filtered by .dockerignore, as docker sends it.
//   - A builder stage's RUN commands run on this machine, with its Go toolchain and make (the
//     golang image's), in the stage's WORKDIR mapped into a directory of the stage's own, with
//     the stage's ARG (build arguments and the platform arguments BuildKit sets for this
//     machine) and ENV in their environment. Only cache mounts are accepted: they change no
//     result. A RUN must write below WORKDIR, which the final stage then copies from.
//   - The final stage's COPY instructions lay out its files as COPY does, root-owned unless
//     --chown says otherwise; a VOLUME's directory the stage did not create is created
//     root-owned, as the container runtime does. The base image's own files (distroless: CA
//     certificates, tzdata, /etc/passwd) are not there: turnout must run without them.
//
// Any instruction or flag this interpreter does not know fails the test, rather than being
// skipped.

// testVersion is the VERSION build argument the tests build the image with.
const testVersion = "deploy-test"

// scratch holds the image's file system and everything derived from it; TestMain removes it.
var scratch string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "turnout-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scratch = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoRoot is the checkout: the parent of this module's directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// dockerfile is the parsed Dockerfile of the checkout.
type dockerfile struct {
	path     string
	data     []byte
	stages   []instructions.Stage
	metaArgs []instructions.ArgCommand
}

func parseDockerfile(file string) (*dockerfile, error) {
	dt, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	res, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, linter.New(&linter.Config{}))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(stages) == 0 {
		return nil, fmt.Errorf("%s: no stage (FROM)", file)
	}
	return &dockerfile{path: file, data: dt, stages: stages, metaArgs: metaArgs}, nil
}

func readDockerfile(t testing.TB) *dockerfile {
	t.Helper()
	d, err := parseDockerfile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *dockerfile) final() *instructions.Stage { return &d.stages[len(d.stages)-1] }

// metaArg returns the default of an ARG declared before the first FROM.
func (d *dockerfile) metaArg(name string) (string, bool) {
	for _, a := range d.metaArgs {
		for _, kv := range a.Args {
			if kv.Key == name && kv.Value != nil {
				return *kv.Value, true
			}
		}
	}
	return "", false
}

// command returns the final stage's ENTRYPOINT and CMD (exec form).
func (d *dockerfile) command() (entrypoint, cmd []string) {
	for _, c := range d.final().Commands {
		switch c := c.(type) {
		case *instructions.EntrypointCommand:
			entrypoint, cmd = c.CmdLine, nil
		case *instructions.CmdCommand:
			cmd = c.CmdLine
		}
	}
	return entrypoint, cmd
}

// line is the Dockerfile line an instruction starts on, for messages.
func line(loc []parser.Range) int {
	if len(loc) == 0 {
		return 0
	}
	return loc[0].Start.Line
}

// image is what the final stage makes: its files and its run-time configuration.
type image struct {
	root        string // the files the Dockerfile adds, at their paths in the image
	entrypoint  []string
	cmd         []string
	env         []string
	workdir     string
	user        string // as USER gives it
	volumes     []string
	exposed     []string
	healthcheck bool
}

var built struct {
	once sync.Once
	img  *image
	err  error
}

// builtImage lays out the image's file system once per test run (it builds turnout and the
// rules as the Dockerfile does) and returns it.
func builtImage(t *testing.T) *image {
	t.Helper()
	requireRoot(t)
	built.once.Do(func() {
		d, err := parseDockerfile(filepath.Join(repoRoot(t), "Dockerfile"))
		if err != nil {
			built.err = err
			return
		}
		built.img, built.err = layOut(d, repoRoot(t), filepath.Join(scratch, "image-build"), map[string]string{"VERSION": testVersion})
	})
	if built.err != nil {
		t.Fatalf("lay out the image's file system: %v", built.err)
	}
	return built.img
}

// requireRoot ends the test unless it runs as root: it chroots and changes users.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Unavailable(t, "run `make deploy-check` as root", "the image's file system test chroots into it and runs turnout as its user, which needs root")
	}
}

// stageState is one stage being interpreted.
type stageState struct {
	name    string
	root    string // the stage's file system on this machine
	workdir string
	vars    map[string]string // ARG and ENV values, for expansion and RUN's environment
	env     []string          // ENV alone, NAME=value, in order
}

func (s *stageState) varList() []string {
	var l []string
	for k, v := range s.vars {
		l = append(l, k+"="+v)
	}
	return l
}

// hostPath maps a path of the stage's file system (absolute, or relative to WORKDIR) to this
// machine.
func (s *stageState) hostPath(p string) string {
	if !path.IsAbs(p) {
		p = path.Join(s.workdir, p)
	}
	return filepath.Join(s.root, filepath.FromSlash(path.Clean(p)))
}

// platformArgs are the build arguments BuildKit sets for a build on and for this machine.
func platformArgs() map[string]string {
	p := "linux/" + runtime.GOARCH
	return map[string]string{
		"BUILDPLATFORM": p, "BUILDOS": "linux", "BUILDARCH": runtime.GOARCH, "BUILDVARIANT": "",
		"TARGETPLATFORM": p, "TARGETOS": "linux", "TARGETARCH": runtime.GOARCH, "TARGETVARIANT": "",
	}
}

// layOut interprets the Dockerfile d with the build context repo (filtered by .dockerignore)
// and the build arguments args, in dir, and returns the final stage's image.
func layOut(d *dockerfile, repo, dir string, args map[string]string) (*image, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ctx := filepath.Join(dir, "context")
	if err := copyContext(repo, ctx); err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}
	for k, v := range platformArgs() {
		if _, set := args[k]; !set {
			args[k] = v
		}
	}
	stages := map[string]*stageState{}
	img := &image{workdir: "/"}
	for i := range d.stages {
		st := &d.stages[i]
		final := i == len(d.stages)-1
		s := &stageState{name: st.Name, root: filepath.Join(dir, fmt.Sprintf("stage-%d", i)), workdir: "/", vars: map[string]string{}}
		if final {
			s.root = filepath.Join(dir, "image")
		}
		if err := os.MkdirAll(s.root, 0o755); err != nil {
			return nil, err
		}
		for _, cmd := range st.Commands {
			if err := s.apply(cmd, final, ctx, stages, args, img); err != nil {
				return nil, fmt.Errorf("%s:%d: %s: %w", d.path, line(cmd.Location()), strings.ToUpper(cmd.Name()), err)
			}
		}
		if st.Name != "" {
			stages[st.Name] = s
		}
		if final {
			img.root, img.env = s.root, s.env
			img.workdir = s.workdir
			for _, v := range img.volumes {
				if err := os.MkdirAll(s.hostPath(v), 0o755); err != nil {
					return nil, err
				}
			}
			// The image's root is root's and others may search it, as in any image.
			if err := os.Chmod(s.root, 0o755); err != nil {
				return nil, err
			}
		}
	}
	return img, nil
}

// apply interprets one instruction of a stage.
func (s *stageState) apply(cmd instructions.Command, final bool, ctx string, stages map[string]*stageState, args map[string]string, img *image) error {
	if ex, ok := cmd.(instructions.SupportsSingleWordExpansion); ok {
		lex := shell.NewLex('\\')
		env := shell.EnvsFromSlice(s.varList())
		if err := ex.Expand(func(word string) (string, error) {
			w, _, err := lex.ProcessWord(word, env)
			return w, err
		}); err != nil {
			return err
		}
	}
	switch c := cmd.(type) {
	case *instructions.ArgCommand:
		for _, kv := range c.Args {
			v, given := args[kv.Key]
			switch {
			case given:
				s.vars[kv.Key] = v
			case kv.Value != nil:
				s.vars[kv.Key] = *kv.Value
			default:
				s.vars[kv.Key] = ""
			}
		}
	case *instructions.EnvCommand:
		for _, kv := range c.Env {
			s.vars[kv.Key] = kv.Value
			s.env = append(s.env, kv.Key+"="+kv.Value)
		}
	case *instructions.WorkdirCommand:
		if !path.IsAbs(c.Path) {
			return fmt.Errorf("relative WORKDIR %q", c.Path)
		}
		s.workdir = c.Path
		return os.MkdirAll(s.hostPath("."), 0o755)
	case *instructions.CopyCommand:
		return s.copy(c, ctx, stages)
	case *instructions.RunCommand:
		if final {
			return errors.New("a RUN in the final stage: the distroless base has no shell")
		}
		return s.run(c)
	case *instructions.LabelCommand:
	case *instructions.UserCommand:
		img.user = c.User
	case *instructions.VolumeCommand:
		img.volumes = append(img.volumes, c.Volumes...)
	case *instructions.ExposeCommand:
		img.exposed = append(img.exposed, c.Ports...)
	case *instructions.EntrypointCommand:
		if c.PrependShell {
			return errors.New("shell form: the distroless base has no shell; use the exec form [\"...\"]")
		}
		img.entrypoint = c.CmdLine
		img.cmd = nil // as in Docker, ENTRYPOINT resets CMD
	case *instructions.CmdCommand:
		if c.PrependShell {
			return errors.New("shell form: the distroless base has no shell; use the exec form [\"...\"]")
		}
		img.cmd = c.CmdLine
	case *instructions.HealthCheckCommand:
		img.healthcheck = true
	default:
		return errors.New("not interpreted by deploy/imagefs_test.go")
	}
	return nil
}

// copy does what COPY does, for the flags turnout's Dockerfile uses (--from, --chown with
// numeric ids).
func (s *stageState) copy(c *instructions.CopyCommand, ctx string, stages map[string]*stageState) error {
	if c.Chmod != "" || c.Link || c.Parents || len(c.ExcludePatterns) > 0 || len(c.SourceContents) > 0 {
		return errors.New("--chmod, --link, --parents, --exclude and here-documents are not interpreted")
	}
	uid, gid := -1, -1
	if c.Chown != "" {
		u, g, _ := strings.Cut(c.Chown, ":")
		var err1, err2 error
		uid, err1 = strconv.Atoi(u)
		gid, err2 = strconv.Atoi(g)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("--chown=%s: give numeric uid:gid", c.Chown)
		}
	}
	srcRoot := ctx
	if c.From != "" {
		from, ok := stages[c.From]
		if !ok {
			return fmt.Errorf("--from=%s: no earlier stage of that name", c.From)
		}
		srcRoot = from.root
	}
	into := strings.HasSuffix(c.DestPath, "/") || len(c.SourcePaths) > 1
	dst := s.hostPath(c.DestPath)
	for _, src := range c.SourcePaths {
		if strings.ContainsAny(src, "*?[") {
			return fmt.Errorf("wildcard source %q is not interpreted", src)
		}
		// Context sources are relative to the context; a stage's to its root.
		hostSrc := filepath.Join(srcRoot, filepath.FromSlash(path.Clean("/"+src)))
		if err := dockerCopy(hostSrc, dst, into, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

// dockerCopy copies src to dst as COPY does: a directory's contents into dst, a file to dst or,
// with into, into the directory dst. Files keep their mode. What it creates is owned by
// uid:gid (-1: root's).
func dockerCopy(src, dst string, into bool, uid, gid int) error {
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	own := func(p string) error {
		if uid < 0 {
			return nil
		}
		return os.Lchown(p, uid, gid)
	}
	if !st.IsDir() {
		if into {
			dst = filepath.Join(dst, filepath.Base(src))
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := copyFile(src, dst, st.Mode()); err != nil {
			return err
		}
		return own(dst)
	}
	return filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		info, err := e.Info()
		if err != nil {
			return err
		}
		switch {
		case e.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			if err := os.Chmod(target, info.Mode().Perm()); err != nil {
				return err
			}
		case info.Mode().Type() == fs.ModeSymlink:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(l, target); err != nil {
				return err
			}
		default:
			if err := copyFile(p, target, info.Mode()); err != nil {
				return err
			}
		}
		return own(target)
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode.Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode.Perm()) // past the umask
}

// run runs a builder stage's RUN on this machine (see the top of this file).
func (s *stageState) run(c *instructions.RunCommand) error {
	for _, f := range c.FlagsUsed {
		if f != "mount" {
			return fmt.Errorf("--%s is not interpreted", f)
		}
	}
	for _, m := range instructions.GetMounts(c) {
		if m.Type != instructions.MountTypeCache {
			return fmt.Errorf("a --mount=type=%s is not interpreted (only cache mounts, which change no result)", m.Type)
		}
	}
	if len(c.Files) > 0 {
		return errors.New("here-documents are not interpreted")
	}
	argv := c.CmdLine
	if c.PrependShell {
		argv = []string{"/bin/sh", "-c", strings.Join(c.CmdLine, " ")}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = s.hostPath(".")
	cmd.Env = append(os.Environ(), s.varList()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return nil
}

// copyContext copies the checkout repo to dst without what .dockerignore excludes: the build
// context docker would send.
func copyContext(repo, dst string) error {
	f, err := os.Open(filepath.Join(repo, ".dockerignore"))
	if err != nil {
		return err
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		return err
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return err
	}
	// A directory can be skipped whole when it is excluded and no exception reopens a path
	// below it.
	reopened := func(dir string) bool {
		for _, p := range pm.Patterns() {
			if p.Exclusion() && strings.HasPrefix(p.String(), dir+"/") {
				return true
			}
		}
		return false
	}
	return filepath.WalkDir(repo, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repo, p)
		if rel == "." {
			return os.MkdirAll(dst, 0o755)
		}
		rel = filepath.ToSlash(rel)
		excluded, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			return err
		}
		if e.IsDir() {
			if excluded && !reopened(rel) {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if excluded {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		if info.Mode().Type() == fs.ModeSymlink {
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, filepath.Join(dst, rel))
		}
		return copyFile(p, filepath.Join(dst, rel), info.Mode())
	})
}

// inImage returns a command that runs argv with root as its root directory, as uid:gid with no
// supplementary groups, in workdir, with exactly env: the process a container runtime would
// start from the image (without its namespaces).
func inImage(root string, uid, gid uint32, workdir string, env []string, argv ...string) *exec.Cmd {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = workdir
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	return cmd
}

// numericUser parses USER's uid[:gid] (a name cannot be checked against a non-root rule).
func numericUser(user string) (uid, gid uint32, err error) {
	u, g, hasGroup := strings.Cut(user, ":")
	uv, err := strconv.ParseUint(u, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("USER %q: give a numeric uid (Kubernetes' runAsNonRoot can verify only a number)", user)
	}
	gv := uv
	if hasGroup {
		if gv, err = strconv.ParseUint(g, 10, 32); err != nil {
			return 0, 0, fmt.Errorf("USER %q: give a numeric gid", user)
		}
	}
	return uint32(uv), uint32(gv), nil
}

// configArg returns the path after -c in a turnout command line.
func configArg(argv []string) (string, bool) {
	for i, a := range argv {
		if a == "-c" && i+1 < len(argv) {
			return argv[i+1], true
		}
	}
	return "", false
}
