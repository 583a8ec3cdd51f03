package blobtest

import (
	"os/exec"
	"syscall"
)

// dieWithParent kills the server if the test binary dies without cleaning up
// (a timeout panic), so no stray server outlives the run.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
