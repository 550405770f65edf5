package motoe2e

import "syscall"

// dieWithParent makes the process get SIGKILL when the test binary dies
// (a test timeout), so that no moto_server outlives its test.
func dieWithParent(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
