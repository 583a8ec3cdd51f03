package main

import (
	"fmt"

	"lifeline/internal/fault"
	"lifeline/internal/state"
)

func opsCmd(e *env, args []string) error {
	return subcommand(e, "ops", args, map[string]func(*env, []string) error{
		"list": opsList, "show": opsShow, "resume": opsResume,
	})
}

func opsList(e *env, args []string) error {
	fs := flags(e, "ops list")
	asJSON := jsonFlag(fs)
	tenantKey := fs.String("tenant", "", "only operations on this tenant key")
	status := fs.String("status", "", "only operations in this status (running, done, failed, rolled_back)")
	limit := fs.Int("limit", 50, "how many, newest first")
	a, _, err := start(e, fs, args, openStore)
	if err != nil {
		return err
	}
	defer a.Close()
	ops, err := a.store.ListOperations(e.ctx, state.OpFilter{Tenant: *tenantKey, Status: state.OpStatus(*status), Limit: *limit})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, map[string]any{"operations": ops})
	}
	printOps(e, ops)
	return nil
}

func opsShow(e *env, args []string) error {
	fs := flags(e, "ops show")
	asJSON := jsonFlag(fs)
	a, pos, err := startArgs(e, fs, args, openStore, "usage: lifeline ops show ID", oneArg)
	if err != nil {
		return err
	}
	defer a.Close()
	op, err := a.store.GetOperation(e.ctx, pos[0])
	if err != nil {
		return err
	}
	audit, err := a.store.ListAudit(e.ctx, op.ID, 100)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, map[string]any{"operation": op, "audit": audit})
	}
	printOp(e, op)
	if op.Reason != "" {
		fmt.Fprintf(e.stdout, "  reason: %s\n", op.Reason)
	}
	fmt.Fprintf(e.stdout, "  started %s, finished %s\n", since(op.Created), since(op.Finished))
	for _, en := range audit {
		fmt.Fprintf(e.stdout, "  audit #%d %s %s by %s\n", en.Seq, since(en.At), en.Action, en.Actor)
	}
	return nil
}

// opsResume finishes an operation whose runner died (kill -9, a crash).
func opsResume(e *env, args []string) error {
	fs := flags(e, "ops resume")
	asJSON := jsonFlag(fs)
	a, pos, err := startArgs(e, fs, args, openApp, "usage: lifeline ops resume ID", oneArg)
	if err != nil {
		return err
	}
	defer a.Close()
	if op, err := a.store.GetOperation(e.ctx, pos[0]); err == nil && op.Action == "restore" {
		// A restore resumes by running its recorded request again.
		svc, bar, err := restoreService(e, a)
		if err != nil {
			return err
		}
		rep, err := svc.Resume(e.ctx, pos[0])
		bar.done()
		return restoreOutput(e, rep, err, *asJSON)
	}
	op, err := a.tenants.Resume(e.ctx, pos[0])
	return opOutput(e, op, err, *asJSON)
}

func auditCmd(e *env, args []string) error {
	return subcommand(e, "audit", args, map[string]func(*env, []string) error{"verify": auditVerify})
}

// auditVerify walks the hash chain; an edited or removed entry exits 2.
func auditVerify(e *env, args []string) error {
	fs := flags(e, "audit verify")
	asJSON := jsonFlag(fs)
	a, _, err := start(e, fs, args, openStore)
	if err != nil {
		return err
	}
	defer a.Close()
	n, err := a.store.VerifyAudit(e.ctx)
	if *asJSON {
		out := map[string]any{"entries": n, "ok": err == nil}
		if err != nil {
			out["error"] = err.Error()
		}
		if perr := printJSON(e.stdout, out); perr != nil {
			return perr
		}
		if err != nil {
			return fault.Wrap(err, fault.Refused, "", "audit chain broken")
		}
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "audit log intact: %d entries, each hashing the one before\n", n)
	return nil
}
