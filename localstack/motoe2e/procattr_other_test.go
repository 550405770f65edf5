//go:build !linux

package motoe2e

import "syscall"

// dieWithParent does nothing where there is no parent-death signal: a
// moto_server left by a killed test binary must be stopped by hand.
func dieWithParent(*syscall.SysProcAttr) {}
