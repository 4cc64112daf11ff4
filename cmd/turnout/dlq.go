package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/turnout-router/turnout/cmd/turnout/internal/config"
	"github.com/turnout-router/turnout/cmd/turnout/internal/dlq"
)

// The `turnout dlq` subcommands. list and show read the dead-letter files of a data directory
// directly (read-only, no lock: they run beside the turnout that writes them); replay asks the
// running turnout's admin API, since only the process that owns the data directory may change
// its files. Exit codes: 0 done, 1 failure (nothing found, unreadable, refused), 2 usage error.

const dlqUsage = `usage: turnout dlq <command> [flags]

commands:
  list [--route R]                 list the dead-letter file entries: index, route, time, kind,
                                   id, type, source, reason, file:line
  show INDEX|ID|FILE:LINE          print one entry with its whole event
  replay --route R [--id ID]       have the running turnout replay the route's entries (those of
                                   event ID, or all) through its rule as new deliveries; an entry
                                   leaves the file once the delivery is acknowledged

  list and show read the files under <data_dir>/dead-letter/ of -c FILE's data_dir (default
  turnout.yaml) or of --data-dir DIR, and never change them. replay takes the admin flags of
  turnout rules: --admin ADDR, --token-file FILE, --ca-file FILE, --json.
`

// cmdDLQ dispatches the dlq subcommands.
func cmdDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, dlqUsage)
		return 2
	}
	switch args[0] {
	case "list", "show":
		return cmdDLQRead(args[0], args[1:], stdout, stderr)
	case "replay":
		return cmdDLQReplay(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, dlqUsage)
		return 0
	}
	fmt.Fprintf(stderr, "turnout dlq: unknown command %q\n\n%s", args[0], dlqUsage)
	return 2
}

// cmdDLQRead runs list or show.
func cmdDLQRead(name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dlq "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var path, dataDir, route string
	var asJSON bool
	fs.StringVar(&path, "c", "turnout.yaml", "configuration file whose data_dir holds the files")
	fs.StringVar(&path, "config", "turnout.yaml", "configuration file (same as -c)")
	fs.StringVar(&dataDir, "data-dir", "", "the data directory (instead of -c)")
	fs.StringVar(&route, "route", "", "only this route's entries")
	fs.BoolVar(&asJSON, "json", false, "print the entries as stored, one JSON line each")
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	want := map[string]int{"list": 0, "show": 1}[name]
	if len(pos) != want {
		fmt.Fprintf(stderr, "turnout dlq %s: want %d argument(s), got %d\n\n%s", name, want, len(pos), dlqUsage)
		return 2
	}
	if dataDir == "" {
		cfg, err := config.Load(path, config.Options{})
		if cfg == nil {
			printErrors(stderr, err)
			fmt.Fprintf(stderr, "turnout dlq %s: cannot read the data_dir of %s; give --data-dir DIR\n", name, path)
			return 1
		}
		dataDir = cfg.DataDir
	}
	store, err := dlq.New(dataDir, dlq.Options{})
	if err != nil {
		fmt.Fprintf(stderr, "turnout dlq %s: %v\n", name, err)
		return 1
	}
	entries, errs := store.List(route)
	for _, e := range errs {
		fmt.Fprintf(stderr, "turnout dlq %s: %v\n", name, e)
	}
	if name == "list" {
		printEntries(stdout, entries, asJSON)
		return 0
	}
	sel := pos[0]
	var found []dlq.Entry
	for i, e := range entries {
		id, _, _ := e.Summary()
		if strconv.Itoa(i+1) == sel || id == sel || e.Locator() == sel {
			found = append(found, e)
		}
	}
	if len(found) == 0 {
		fmt.Fprintf(stderr, "turnout dlq show: no entry %q under %s (turnout dlq list shows the indexes, ids and file:line of the entries)\n", sel, store.Dir())
		return 1
	}
	for i, e := range found {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		printEntry(stdout, e, asJSON)
	}
	return 0
}

// printEntries prints the listing: a table, or the stored lines.
func printEntries(w io.Writer, entries []dlq.Entry, asJSON bool) {
	if asJSON {
		for _, e := range entries {
			b, _ := json.Marshal(e) // an Entry always marshals
			fmt.Fprintf(w, "%s\n", b)
		}
		return
	}
	if len(entries) == 0 {
		fmt.Fprintln(w, "no dead-letter entries")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tROUTE\tTIME\tKIND\tID\tTYPE\tSOURCE\tREASON\tFILE:LINE")
	for i, e := range entries {
		id, typ, src := e.Summary()
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i+1, e.Route, e.Time.Format("2006-01-02T15:04:05.000Z07:00"),
			e.Kind, dash(id), dash(typ), dash(src), dash(oneLine(e.Reason, 80)), e.Locator())
	}
	tw.Flush()
}

// printEntry prints one entry and its event, indented.
func printEntry(w io.Writer, e dlq.Entry, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(e) // an Entry always marshals
		fmt.Fprintf(w, "%s\n", b)
		return
	}
	fmt.Fprintf(w, "route:   %s\nfile:    %s:%d\ntime:    %s\nkind:    %s\nreason:  %s\nevent:\n",
		e.Route, e.File, e.Line, e.Time.Format("2006-01-02T15:04:05.000000Z07:00"), e.Kind, e.Reason)
	var buf bytes.Buffer
	if json.Indent(&buf, e.Event, "", "  ") != nil {
		buf.Reset()
		buf.Write(e.Event)
	}
	fmt.Fprintf(w, "%s\n", buf.Bytes())
	if e.Kind == dlq.KindMalformed {
		if ev, err := e.Decode(); err == nil {
			fmt.Fprintf(w, "received (%d bytes):\n%s\n", len(ev.Data()), ev.Data())
		}
	}
}

// oneLine shortens s to n runes on one line.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// cmdDLQReplay asks the running turnout to replay a route's entries.
func cmdDLQReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dlq replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var rf remoteFlags
	rf.register(fs)
	route := fs.String("route", "", "the route whose entries are replayed (required)")
	id := fs.String("id", "", "replay only the entries of this event id")
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	if len(pos) > 0 || *route == "" {
		fmt.Fprintf(stderr, "turnout dlq replay: --route is required and no argument is taken\nusage: turnout dlq replay --route R [--id ID]\n")
		return 2
	}
	c, err := rf.client()
	if err != nil {
		fmt.Fprintf(stderr, "turnout dlq replay: %v\n", err)
		return 2
	}
	res, err := c.Replay(ctx, *route, *id)
	if err != nil {
		fmt.Fprintf(stderr, "turnout dlq replay: %v\n", err)
		return 1
	}
	if rf.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	} else {
		fmt.Fprintf(stdout, "route %s: %d selected, %d replayed and removed, %d failed and kept\n", res.Route, res.Selected, res.Replayed, res.Failed)
		for _, e := range res.Errors {
			fmt.Fprintf(stdout, "  %s\n", e)
		}
	}
	if res.Failed > 0 {
		return 1
	}
	return 0
}
