package execdriver

import (
	"os/exec"
	"syscall"
	"unsafe"
)

// waitExited blocks until cmd's process has exited, without reaping it: as
// long as it is a zombie its PID, and so its process group ID, cannot be
// reused, which makes it safe to signal the group afterwards. The caller
// reaps it with cmd.Wait.
func waitExited(cmd *exec.Cmd) {
	const wnowait = 0x1000000 // WNOWAIT, missing from package syscall
	var info [128]byte        // siginfo_t, filled and ignored
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, 1 /* P_PID */, uintptr(cmd.Process.Pid),
			uintptr(unsafe.Pointer(&info[0])), syscall.WEXITED|wnowait, 0, 0)
		if errno != syscall.EINTR {
			return
		}
	}
}
