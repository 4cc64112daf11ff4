// Command turnout runs the turnout CloudEvents router.
//
//	turnout run -c turnout.yaml        run until SIGINT or SIGTERM
//	turnout validate -c turnout.yaml   check a configuration without connecting anything
//	turnout dlq list|show|replay       the dead-letter files (turnout dlq help)
//	turnout version                    print the version
//
// Its job is wiring: it loads the configuration (package config), starts the admin server, the
// embedded broker, the rule host and the engine, and shuts them down in the reverse order on a
// signal. Invariant: on shutdown the engine drains first (every input message settled, acked or
// nacked, within shutdown.drain_timeout) and only then are the rules, the rule host, the broker
// and the admin server closed, so no message is settled against a closed part. One process at a
// time runs on a data directory: run takes an exclusive lock on <data_dir>/LOCK before anything
// else (validate and dlq list/show do not, and write nothing there).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/turnout-router/turnout/hostabi/wire"
)

// version is set at build time: go build -ldflags "-X main.version=1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, restore the default handling: a second SIGINT or SIGTERM
		// ends the process at once, without waiting for the drain.
		<-ctx.Done()
		stop()
	}()
	code := cli(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: turnout <command> [flags]

commands:
  run -c FILE        run the router until SIGINT or SIGTERM
  validate -c FILE   check a configuration, connecting nothing
  rules test FILE    run a rule over sample events (turnout rules help)
  dlq list           list the dead-letter file entries; also show, replay (turnout dlq help)
  version            print version information
`

// cli runs one turnout command and returns the process exit code: 0 success, 1 failure (invalid
// configuration, startup failure), 2 usage error. For run, cancelling ctx is the shutdown
// signal. It is the whole command line in a function so tests can run it in-process.
func cli(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], stdout, stderr)
	case "validate":
		return cmdValidate(ctx, args[1:], stdout, stderr)
	case "rules":
		return cmdRules(ctx, args[1:], stdout, stderr)
	case "dlq":
		return cmdDLQ(ctx, args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "turnout %s\ngo: %s\nrule abi: v%d\n", version, runtime.Version(), wire.Version)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "turnout: unknown command %q\n\n%s", args[0], usage)
	return 2
}
