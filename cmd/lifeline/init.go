package main

import (
	"errors"
	"fmt"
	"os"

	"lifeline/internal/config"
	"lifeline/internal/fault"
)

// initCmd writes the commented config template. It never overwrites.
func initCmd(e *env, args []string) error {
	fs := flags(e, "init")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	f, err := os.OpenFile(e.configPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return fault.New(fault.Refused, "edit it, or choose another file with --config", "%s already exists; init never overwrites a config", e.configPath)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(config.Template); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s: edit the products, then run `lifeline protect`\n", e.configPath)
	return nil
}
