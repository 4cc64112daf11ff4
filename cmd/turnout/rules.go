package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/cmd/turnout/internal/ruletest"
	"github.com/turnout-router/turnout/hostabi"
)

const rulesUsage = `usage: turnout rules <command> [flags]

commands:
  test FILE --events DIR|FILE [--config C]   run a rule locally over sample events
` + rulesRemoteUsage

// cmdRules dispatches the rules subcommands.
func cmdRules(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, rulesUsage)
		return 2
	}
	switch args[0] {
	case "test":
		return cmdRulesTest(ctx, args[1:], stdout, stderr)
	case "push", "list", "show", "activate", "rollback", "rm":
		return cmdRulesRemote(ctx, args[0], args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, rulesUsage)
		return 0
	}
	fmt.Fprintf(stderr, "turnout rules: unknown command %q\n\n%s", args[0], rulesUsage)
	return 2
}

// parseInterspersed parses fs with positional arguments allowed between the flags (the flag
// package stops at the first one) and returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// cmdRulesTest runs a rule module over sample events and prints each decision; with
// expectations it reports mismatches. Exit codes: 0 every expectation met, 1 a mismatch, a rule
// that does not load or unreadable samples, 2 usage error.
func cmdRulesTest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: turnout rules test FILE.wasm --events DIR|FILE [--config C] [flags]\n\n")
		fs.PrintDefaults()
	}
	events := fs.String("events", "", "sample events: a JSON file (one CloudEvent or an array) or a directory of *.json (required)")
	configArg := fs.String("config", "", "the rule configuration: a JSON file, or inline JSON starting with {")
	memPages := fs.Uint("memory-limit-pages", 0, "memory cap per instance in 64 KiB pages (0: the default, 512)")
	allowClock := fs.Bool("allow-clock", false, "grant the rule the real clock")
	timeout := fs.Duration("timeout", 5*time.Second, "time limit of one decision (0: none)")
	asJSON := fs.Bool("json", false, "print the results as one JSON array")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	switch {
	case len(pos) != 1:
		fmt.Fprintf(stderr, "turnout rules test: want one rule file, got %d arguments\n", len(pos))
		fs.Usage()
		return 2
	case *events == "":
		fmt.Fprintln(stderr, "turnout rules test: --events is required")
		fs.Usage()
		return 2
	case *memPages > 1<<16:
		fmt.Fprintf(stderr, "turnout rules test: --memory-limit-pages %d: at most 65536\n", *memPages)
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "turnout rules test: "+format+"\n", a...)
		return 1
	}
	file := pos[0]
	wasm, err := os.ReadFile(file)
	if err != nil {
		return fail("%v", err)
	}
	config, err := ruleConfig(*configArg)
	if err != nil {
		return fail("%v", err)
	}
	samples, err := ruletest.Load(*events)
	if err != nil {
		return fail("%v", err)
	}

	host, err := hostabi.NewHost(ctx, hostabi.Options{Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		return fail("%v", err)
	}
	defer host.Close(context.Background())
	rule, err := host.Load(ctx, wasm, hostabi.RuleOptions{
		Name:             strings.TrimSuffix(filepath.Base(file), ".wasm"),
		Config:           config,
		MemoryLimitPages: uint32(*memPages),
		Timeout:          *timeout,
		PoolSize:         1,
		AllowClock:       *allowClock,
	})
	if err != nil {
		var le *hostabi.LoadError
		if errors.As(err, &le) {
			return fail("%s: %v [%s]", file, err, le.Code)
		}
		return fail("%s: %v", file, err)
	}
	defer rule.Close(context.Background())

	results := ruletest.Run(ctx, rule, samples)
	failed, unchecked := 0, 0
	for _, r := range results {
		switch {
		case !r.Passed():
			failed++
		case !r.Checked:
			unchecked++
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			return fail("%v", err)
		}
	} else {
		for _, r := range results {
			status := "PASS"
			switch {
			case !r.Passed():
				status = "FAIL"
			case !r.Checked:
				status = "----"
			}
			fmt.Fprintf(stdout, "%s %s: %s\n", status, r.Sample, r.Decision)
			for _, m := range r.Mismatches {
				fmt.Fprintf(stdout, "       %s\n", m)
			}
		}
		fmt.Fprintf(stdout, "%d event(s): %d passed, %d failed, %d without expectation\n",
			len(results), len(results)-failed-unchecked, failed, unchecked)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// ruleConfig returns the configuration given by --config: inline JSON, a file's bytes, or none.
func ruleConfig(arg string) ([]byte, error) {
	arg = strings.TrimSpace(arg)
	switch {
	case arg == "":
		return nil, nil
	case strings.HasPrefix(arg, "{"):
		if !json.Valid([]byte(arg)) {
			return nil, errors.New("--config: the inline configuration is not valid JSON")
		}
		return []byte(arg), nil
	}
	b, err := os.ReadFile(arg)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	return b, nil
}
