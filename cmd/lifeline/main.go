// Command lifeline keeps a multi-tenant SaaS's customer data safe from
// deletion, restorable per tenant, and its customers informed. This package
// only wires: flags, config, and the internal packages that do the work.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"

	"lifeline/internal/fault"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// LIFELINE_CPUPROFILE names a file for a CPU profile of this run (go
	// tool pprof reads it): how bench/ finds where a command spends its time.
	if path := os.Getenv("LIFELINE_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	pprof.StopCPUProfile() // os.Exit skips the deferred stop
	os.Exit(code)
}

// env is what every command gets: the process's streams and settings, so the
// whole program runs in tests without touching globals.
type env struct {
	ctx        context.Context
	getenv     func(string) string
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
	configPath string
}

// command is one subcommand. run gets the arguments after its name.
type command struct {
	name    string
	summary string
	run     func(e *env, args []string) error
}

// commands is the whole command line, in the order `lifeline help` lists it.
var commands = []command{
	{"init", "write a commented lifeline.yaml", initCmd},
	{"protect", "install guards, trash and tenant state in every product (--check: report drift)", protectCmd},
	{"tenants", "list|show|deactivate|reactivate|delete|undelete|purge tenants", tenantsCmd},
	{"backup", "run|status|verify|list the backup repository", backupCmd},
	{"restore", "restore tenants as of a moment, in place or --into an empty database (--dry-run, --undo)", restoreCmd},
	{"ops", "list|show|resume operations", opsCmd},
	{"plan", "create|list|show|approve|run|pause|resume|promote|abort|rollback reviewed bulk operations", planCmd},
	{"freeze", "on|off|status: stop every destructive plan and lifecycle command", freezeCmd},
	{"audit", "verify the audit log's hash chain", auditCmd},
	{"tokens", "create|list|revoke operator tokens", tokensCmd},
	{"incident", "open|update|resolve|list status page incidents", incidentCmd},
	{"contacts", "sync|import|lookup|for|verify|report|erase|restore the contacts vault", contactsCmd},
	{"serve", "run the API, metrics and background work", serveCmd},
	{"demo", "build a sample SaaS, protect it, and walk through the lifecycle", demoCmd},
}

// run is the whole program: it returns the exit status of DESIGN.md
// (0 done, 1 failed, 2 refused).
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{ctx: ctx, getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr, configPath: "lifeline.yaml"}
	if p := getenv("LIFELINE_CONFIG"); p != "" {
		e.configPath = p
	}
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch {
		case args[0] == "--config" || args[0] == "-config":
			if len(args) < 2 {
				return report(e, usageErr("--config needs a file name"))
			}
			e.configPath, args = args[1], args[2:]
		case strings.HasPrefix(args[0], "--config="):
			e.configPath, args = strings.TrimPrefix(args[0], "--config="), args[1:]
		case args[0] == "-h" || args[0] == "--help":
			args = []string{"help"}
		default:
			return report(e, usageErr("unknown flag %s before the command", args[0]))
		}
	}
	if len(args) == 0 || args[0] == "help" {
		printHelp(e)
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			return report(e, c.run(e, args[1:]))
		}
	}
	return report(e, usageErr("unknown command %q%s", args[0], suggest(args[0])))
}

func suggest(name string) string {
	for _, c := range commands {
		if strings.HasPrefix(c.name, name) || strings.HasPrefix(name, c.name) {
			return "; did you mean `lifeline " + c.name + "`?"
		}
	}
	return ""
}

func printHelp(e *env) {
	fmt.Fprintln(e.stdout, "usage: lifeline [--config FILE] COMMAND [ARGS]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(e.stdout, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(e.stdout, "\nRun `lifeline COMMAND --help` for a command's flags. Exit status: 0 done, 1 failed, 2 refused.")
}

// report prints an error with its hint and returns the exit status.
func report(e *env, err error) int {
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(e.stderr, "lifeline: %v\n", err)
	if h := fault.HintOf(err); h != "" {
		fmt.Fprintf(e.stderr, "  hint: %s\n", h)
	}
	return fault.ExitStatus(err)
}

func usageErr(format string, args ...any) error {
	return fault.New(fault.Invalid, "run `lifeline help` for the commands", format, args...)
}

// flags makes a command's flag set. Errors are returned, not printed twice.
func flags(e *env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("lifeline "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(&e.configPath, "config", e.configPath, "config file")
	return fs
}

// jsonFlag adds the --json flag that every reading or reporting command has.
func jsonFlag(fs *flag.FlagSet) *bool { return fs.Bool("json", false, "print JSON") }

// start parses a command's flags and opens what it needs: openStore for
// commands that read only Lifeline's own state, openApp for those that touch
// the products too. The caller closes the app.
func start(e *env, fs *flag.FlagSet, args []string, open func(*env) (*app, error)) (*app, []string, error) {
	return startArgs(e, fs, args, open, "", nil)
}

// startArgs is start for commands that check their positionals: unless
// valid accepts them (nil accepts any), they are refused with usage before
// anything is opened. open may open an app, a vault or a plan app.
func startArgs[T any](e *env, fs *flag.FlagSet, args []string, open func(*env) (T, error), usage string, valid func(pos []string) bool) (T, []string, error) {
	var none T
	pos, err := parse(fs, args)
	if err != nil {
		return none, nil, err
	}
	if valid != nil && !valid(pos) {
		return none, nil, usageErr("%s", usage)
	}
	t, err := open(e)
	if err != nil {
		return none, nil, err
	}
	return t, pos, nil
}

func noArgs(pos []string) bool   { return len(pos) == 0 }
func oneArg(pos []string) bool   { return len(pos) == 1 }
func someArgs(pos []string) bool { return len(pos) > 0 }

// parse parses flags that may come before or after positional arguments,
// and returns the positionals.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fault.Wrap(err, fault.Invalid, "run `"+fs.Name()+" --help` for its flags", "bad arguments")
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

// subcommand dispatches "NAME SUB ARGS" to one of subs.
func subcommand(e *env, name string, args []string, subs map[string]func(*env, []string) error) error {
	keys := make([]string, 0, len(subs))
	for k := range subs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(args) == 0 {
		return usageErr("lifeline %s needs a subcommand: %s", name, strings.Join(keys, "|"))
	}
	f, ok := subs[args[0]]
	if !ok {
		return usageErr("unknown subcommand `lifeline %s %s`: use %s", name, args[0], strings.Join(keys, "|"))
	}
	return f(e, args[1:])
}

// printJSON writes v as one indented JSON document.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// actor is who runs a CLI command: --actor, $LIFELINE_ACTOR, or user@host.
func actor(e *env, flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if a := e.getenv("LIFELINE_ACTOR"); a != "" {
		return a
	}
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	h, _ := os.Hostname()
	return name + "@" + h
}
