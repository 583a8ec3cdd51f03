package main

import (
	"fmt"
	"text/tabwriter"

	"lifeline/internal/state"
)

func tokensCmd(e *env, args []string) error {
	return subcommand(e, "tokens", args, map[string]func(*env, []string) error{
		"create": tokensCreate, "list": tokensList, "revoke": tokensRevoke,
	})
}

// tokensCreate prints a new token once; only its hash is stored.
func tokensCreate(e *env, args []string) error {
	fs := flags(e, "tokens create")
	role := fs.String("role", "viewer", "viewer, operator, approver or admin")
	name := fs.String("name", "", "the person or script the token belongs to (default: the actor)")
	asJSON := jsonFlag(fs)
	a, _, err := start(e, fs, args, openStore)
	if err != nil {
		return err
	}
	defer a.Close()
	secret, tok, err := a.store.CreateToken(e.ctx, actor(e, *name), state.Role(*role))
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, map[string]any{"token": tok, "secret": secret})
	}
	fmt.Fprintf(e.stdout, "%s\n", secret)
	fmt.Fprintf(e.stderr, "token %s for %s with role %s; it is shown only once\n", tok.ID, tok.Name, tok.Role)
	return nil
}

func tokensList(e *env, args []string) error {
	fs := flags(e, "tokens list")
	asJSON := jsonFlag(fs)
	a, _, err := start(e, fs, args, openStore)
	if err != nil {
		return err
	}
	defer a.Close()
	toks, err := a.store.ListTokens(e.ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, map[string]any{"tokens": toks})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tROLE\tCREATED\tREVOKED")
	for _, t := range toks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", t.ID, t.Name, t.Role, since(t.Created), t.Revoked)
	}
	return tw.Flush()
}

func tokensRevoke(e *env, args []string) error {
	fs := flags(e, "tokens revoke")
	a, pos, err := startArgs(e, fs, args, openStore, "usage: lifeline tokens revoke ID", oneArg)
	if err != nil {
		return err
	}
	defer a.Close()
	if err := a.store.RevokeToken(e.ctx, pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "revoked %s\n", pos[0])
	return nil
}
