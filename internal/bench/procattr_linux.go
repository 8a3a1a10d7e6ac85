package bench

import "syscall"

// procAttr puts a service in a process group of its own, so that a ^C to
// the bench does not reach it before the bench stops it, and kills it if
// the bench dies.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
