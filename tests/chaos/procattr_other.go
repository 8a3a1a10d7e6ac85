//go:build unix && !linux

package chaos

import "syscall"

// procAttr puts a service in a process group of its own, so that a ^C to
// the runner does not reach it before the runner stops it.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
