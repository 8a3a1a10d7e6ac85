//go:build !linux

package execdriver

import "os/exec"

// waitExited waits for cmd's process to exit. Outside Linux, package
// syscall has no waitid(WNOWAIT), so this reaps the process too, and the
// caller signals its group afterwards with a tiny risk that the group ID
// was reused meanwhile. Flotilla's images run Linux; this keeps the package
// building on developers' machines.
func waitExited(cmd *exec.Cmd) { _ = cmd.Wait() }
