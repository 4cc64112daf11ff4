package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/turnout-router/turnout/cmd/turnout/internal/admin"
	"github.com/turnout-router/turnout/cmd/turnout/internal/config"
	"github.com/turnout-router/turnout/cmd/turnout/internal/ruletest"
)

// The `turnout rules` subcommands that talk to a running turnout's rules API (push, list, show,
// activate, rollback, rm). Exit codes: 0 done, 1 the API refused or could not be reached (its
// error printed as code: detail), 2 usage error.

// Environment variables the remote rules commands read when the flags are not given.
const (
	envAdmin      = "TURNOUT_ADMIN"       // the admin address, e.g. https://router:9090
	envAdminToken = "TURNOUT_ADMIN_TOKEN" // the bearer token itself
	envAdminCA    = "TURNOUT_ADMIN_CA"    // a PEM CA file for an admin listener with a private CA
)

const rulesRemoteUsage = `  push FILE [--route NAME [--activate]] [--description D]
                                             upload a rule version (and activate it on a route)
  list                                       list the stored versions and each route's active one
  show VERSION                               show one version (a unique prefix of its sha256 works)
  activate VERSION --route NAME              make VERSION the route's active rule
  rollback --route NAME                      reactivate the route's previous version
  rm VERSION                                 delete a version no route uses

  The remote commands take --admin ADDR (or $TURNOUT_ADMIN; default 127.0.0.1:9090),
  --token-file FILE (or the token in $TURNOUT_ADMIN_TOKEN), --ca-file FILE (or $TURNOUT_ADMIN_CA)
  for an https admin address with a private CA, and --json to print the API's answer.
`

// remoteFlags are the flags every remote command takes.
type remoteFlags struct {
	admin, tokenFile, caFile string
	json                     bool
}

func (f *remoteFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.admin, "admin", "", "the admin address: host:port or http(s)://host:port ($"+envAdmin+"; default "+config.DefaultAdminListen+")")
	fs.StringVar(&f.tokenFile, "token-file", "", "a file holding the admin token (default: $"+envAdminToken+")")
	fs.StringVar(&f.caFile, "ca-file", "", "PEM CA certificates that verify an https admin address ($"+envAdminCA+")")
	fs.BoolVar(&f.json, "json", false, "print the API's JSON answer")
}

// client builds the API client from the flags and the environment.
func (f *remoteFlags) client() (*admin.Client, error) {
	c := &admin.Client{Base: f.admin, Token: os.Getenv(envAdminToken)}
	if c.Base == "" {
		c.Base = os.Getenv(envAdmin)
	}
	if c.Base == "" {
		c.Base = config.DefaultAdminListen
	}
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		c.Token = strings.TrimSpace(string(b))
	}
	ca := f.caFile
	if ca == "" {
		ca = os.Getenv(envAdminCA)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file: %s holds no PEM certificate", ca)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	c.HTTP = &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	return c, nil
}

// cmdRulesRemote runs one remote rules command: push, list, show, activate, rollback or rm.
func cmdRulesRemote(ctx context.Context, name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var rf remoteFlags
	rf.register(fs)
	route := fs.String("route", "", "the route")
	var activate *bool
	var description, uploadedBy, configArg, selftest *string
	usage := map[string]string{
		"push": "push FILE.wasm [--route NAME [--activate]] [--description D]", "list": "list",
		"show": "show VERSION", "activate": "activate VERSION --route NAME",
		"rollback": "rollback --route NAME", "rm": "rm VERSION",
	}[name]
	nargs := map[string]int{"push": 1, "list": 0, "show": 1, "activate": 1, "rollback": 0, "rm": 1}[name]
	if name == "push" {
		activate = fs.Bool("activate", false, "activate the version on --route once stored")
		description = fs.String("description", "", "what this version changes")
		uploadedBy = fs.String("uploaded-by", os.Getenv("USER"), "who uploads, recorded with the version")
		configArg = fs.String("config", "", "the version's default configuration: a JSON file, or inline JSON starting with {")
		selftest = fs.String("selftest", "", "a JSON file of sample events with expected decisions the version must pass")
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: turnout rules %s [flags]\n\n", usage)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "turnout rules %s: %s\nusage: turnout rules %s\n", name, fmt.Sprintf(format, a...), usage)
		return 2
	}
	if len(pos) != nargs {
		return usageErr("want %d argument(s), got %d", nargs, len(pos))
	}
	needsRoute := name == "activate" || name == "rollback" || (activate != nil && *activate)
	if needsRoute && *route == "" {
		return usageErr("--route is required")
	}
	c, err := rf.client()
	if err != nil {
		fmt.Fprintf(stderr, "turnout rules %s: %v\n", name, err)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "turnout rules %s: %v\n", name, err)
		printSampleMismatches(stderr, err)
		return 1
	}

	var answer any
	switch name {
	case "push":
		u := admin.Upload{Route: *route, Activate: *activate, Description: *description, UploadedBy: *uploadedBy}
		if u.Wasm, err = os.ReadFile(pos[0]); err != nil {
			return fail(err)
		}
		if *configArg != "" {
			cfg, err := ruleConfig(*configArg)
			if err != nil {
				return fail(err)
			}
			u.DefaultConfig = cfg
		}
		if *selftest != "" {
			if u.SelfTest, err = os.ReadFile(*selftest); err != nil {
				return fail(err)
			}
		}
		res, err := c.Upload(ctx, u)
		if err != nil {
			return fail(err)
		}
		answer = res
		if !rf.json {
			state := "stored"
			if !res.Created {
				state = "already stored (same bytes)"
			}
			fmt.Fprintf(stdout, "%s %s (%d bytes)\n", state, res.Version.SHA256, res.Version.Size)
			if res.Activated != nil {
				printChange(stdout, *res.Activated)
			}
		}
	case "list":
		l, err := c.List(ctx)
		if err != nil {
			return fail(err)
		}
		answer = l
		if !rf.json {
			printListing(stdout, l)
		}
	case "show":
		v, err := c.Show(ctx, pos[0])
		if err != nil {
			return fail(err)
		}
		answer = v
		if !rf.json {
			printVersion(stdout, v)
		}
	case "activate", "rollback":
		var ch admin.Change
		if name == "activate" {
			ch, err = c.Activate(ctx, *route, pos[0])
		} else {
			ch, err = c.Rollback(ctx, *route)
		}
		if err != nil {
			return fail(err)
		}
		answer = ch
		if !rf.json {
			printChange(stdout, ch)
		}
	case "rm":
		if err := c.Delete(ctx, pos[0]); err != nil {
			return fail(err)
		}
		answer = map[string]string{"deleted": pos[0]}
		if !rf.json {
			fmt.Fprintf(stdout, "deleted %s\n", pos[0])
		}
	}
	if rf.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(answer); err != nil {
			return fail(err)
		}
	}
	return 0
}

func printChange(w io.Writer, c admin.Change) {
	was := c.Old
	if was == "" {
		was = "none"
	}
	fmt.Fprintf(w, "route %s: active version %s (was %s)\n", c.Route, c.New, was)
}

// short abbreviates a sha256 for tables; show and the API accept the prefix.
func short(v string) string {
	if len(v) > 12 {
		return v[:12]
	}
	return v
}

func printListing(w io.Writer, l admin.Listing) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tSIZE\tUPLOADED\tBY\tACTIVE ON\tDESCRIPTION")
	for _, v := range l.Versions {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", short(v.SHA256), v.Size, v.UploadedAt.UTC().Format(time.RFC3339),
			dash(v.UploadedBy), dash(strings.Join(v.Routes, ",")), v.Description)
	}
	fmt.Fprintln(tw, "\nROUTE\tACTIVE\tPREVIOUS")
	for _, r := range l.Routes {
		prev := make([]string, len(r.History))
		for i, h := range r.History {
			prev[i] = short(h)
		}
		active := short(r.Active)
		if active == "" {
			active = "(configured rule file)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, active, dash(strings.Join(prev, ",")))
	}
	_ = tw.Flush() // the writer is stdout: nothing to do on failure
}

func printVersion(w io.Writer, v admin.Version) {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "sha256:\t%s\n", v.SHA256)
	fmt.Fprintf(tw, "size:\t%d bytes\n", v.Size)
	fmt.Fprintf(tw, "abi version:\t%d\n", v.ABIVersion)
	fmt.Fprintf(tw, "exports:\t%s\n", dash(strings.Join(v.Exports, ", ")))
	fmt.Fprintf(tw, "uploaded at:\t%s\n", v.UploadedAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "uploaded by:\t%s\n", dash(v.UploadedBy))
	fmt.Fprintf(tw, "description:\t%s\n", dash(v.Description))
	if len(v.DefaultConfig) > 0 {
		fmt.Fprintf(tw, "default config:\t%s\n", v.DefaultConfig)
	}
	fmt.Fprintf(tw, "active on:\t%s\n", dash(strings.Join(v.Routes, ", ")))
	_ = tw.Flush() // the writer is stdout: nothing to do on failure
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printSampleMismatches prints the samples of a failed self-test that did not get their
// expected decision, one mismatch a line.
func printSampleMismatches(w io.Writer, err error) {
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Samples == nil {
		return
	}
	raw, err := json.Marshal(ae.Samples)
	if err != nil {
		return
	}
	var results []ruletest.Result
	if json.Unmarshal(raw, &results) != nil {
		return
	}
	for _, r := range results {
		for _, m := range r.Mismatches {
			fmt.Fprintf(w, "  %s: %s\n", r.Sample, m)
		}
	}
}
