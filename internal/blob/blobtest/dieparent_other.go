//go:build !linux

package blob_test

import "os/exec"

func dieWithParent(cmd *exec.Cmd) {}
