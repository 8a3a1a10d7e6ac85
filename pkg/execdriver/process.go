package execdriver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/jonboulle/clockwork"
)

// Limits of what is kept of a command's output.
const (
	outputBytes   = 4 << 10  // Result.Output: at most the last 4 KiB ...
	outputLines   = 40       // ... and the last 40 lines
	stdoutBytes   = 64 << 10 // the end of stdout kept to find the JSON report line
	stderrBytes   = 4 << 10  // the end of stderr kept to find a failure's reason
	reasonBytes   = 512      // longest line quoted in a failure reason
	drainTimeout  = 5 * time.Second
	omittedMarker = "[earlier output omitted]\n"
)

// command is one run of an operator's command.
type command struct {
	argv    []string
	dir     string
	env     []string
	timeout time.Duration
	grace   time.Duration
}

// name is how failure reasons call the command: its program's base name.
func (c command) name() string { return filepath.Base(c.argv[0]) }

// outcome is how a run ended.
type outcome struct {
	state   *os.ProcessState
	stopped error  // errTimeout or the context's error when the driver stopped the command
	stdout  string // last non-empty line of stdout
	stderr  string // last non-empty line of stderr
	report  report // parsed from stdout's last line when it is a JSON object
	// reportErr says why a last line that is a JSON object is not a report.
	reportErr error
}

// lastLine is the line a failure reason quotes: stderr's, else stdout's.
func (o outcome) lastLine() string {
	if o.stderr != "" {
		return o.stderr
	}
	return o.stdout
}

// errTimeout marks a command stopped by its own timeout, as opposed to the
// caller's context.
var errTimeout = errors.New("timeout")

// run runs c in a process group of its own, writing its stdout and stderr
// to combined as they come. It returns when the command has exited and
// every process left in its group has been killed: on timeout or when ctx
// ends the group gets SIGTERM, then SIGKILL after c.grace; when the command
// exits by itself, whatever it left running in its group gets SIGKILL. The
// error is only for a command that could not be started; how it ended is
// in the outcome.
func run(ctx context.Context, clock clockwork.Clock, c command, combined io.Writer) (outcome, error) {
	if err := ctx.Err(); err != nil {
		return outcome{stopped: err}, nil
	}
	path, err := lookPath(c.argv[0], c.env)
	if err != nil {
		return outcome{}, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return outcome{}, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return outcome{}, err
	}
	cmd := &exec.Cmd{
		Path: path, Args: c.argv, Env: c.env, Dir: c.dir,
		Stdout: outW, Stderr: errW, // Stdin nil: /dev/null
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	// The timer starts before the command does, so that a test seeing the
	// command run knows the timer is there to advance.
	timer := clock.NewTimer(c.timeout)
	defer timer.Stop()
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return outcome{}, err
	}
	pgid := cmd.Process.Pid // Setpgid: the command leads a group of its own

	stdout, stderr := &tail{max: stdoutBytes}, &tail{max: stderrBytes}
	var readers sync.WaitGroup
	readers.Go(func() { copyStream(outR, combined, stdout) })
	readers.Go(func() { copyStream(errR, combined, stderr) })
	exited := make(chan struct{})
	go func() {
		waitExited(cmd)
		close(exited)
	}()

	var o outcome
	select {
	case <-exited:
	case <-timer.Chan():
		o.stopped = errTimeout
	case <-ctx.Done():
		o.stopped = ctx.Err()
	}
	if o.stopped != nil {
		select {
		case <-exited: // it finished on its own just as time ran out: let it count
			o.stopped = nil
		default:
		}
	}
	if o.stopped != nil {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		grace := clock.NewTimer(c.grace)
		select {
		case <-exited:
		case <-grace.Chan():
		}
		grace.Stop()
	}
	// Kill what is left of the group (everything, if the grace period ran
	// out), then reap the leader. Not reaped until now, it keeps its group
	// ID from being reused.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-exited
	_ = cmd.Wait() // its error only repeats ProcessState (or says waitExited reaped it)
	o.state = cmd.ProcessState

	// The pipes close when the last process holding them dies. One that
	// escaped the group (setsid) may keep them open: stop reading then.
	drained := make(chan struct{})
	go func() {
		readers.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(drainTimeout):
	}
	outR.Close()
	errR.Close()
	<-drained

	out, _ := stdout.bytes()
	o.report, o.reportErr = parseReport(lastLine(out))
	o.stdout = shorten(lastLine(out))
	errOut, _ := stderr.bytes()
	o.stderr = shorten(lastLine(errOut))
	return o, nil
}

// lookPath finds a program named without '/' in the PATH the command gets.
// Parse resolves argv[0] already; this serves configs built by hand.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	return resolveCommand(name, "/", path)
}

func copyStream(r io.Reader, combined, own io.Writer) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			combined.Write(buf[:n])
			own.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// failure says why a run failed, or returns nil if it succeeded. step
// prefixes the reason ("verify: ") for commands other than apply.
func (o outcome) failure(step string, c command, cluster string) error {
	quote := func(s string) string {
		if l := o.lastLine(); l != "" {
			return s + ": " + l
		}
		return s
	}
	name := c.name()
	switch {
	case errors.Is(o.stopped, errTimeout):
		return fmt.Errorf("%s%w", step, &timeoutError{msg: quote(fmt.Sprintf("%s timed out after %s on %s and was killed", name, c.timeout, cluster))})
	case o.stopped != nil:
		return fmt.Errorf("%s%s on %s was stopped: %w", step, name, cluster, o.stopped)
	case o.state == nil:
		return fmt.Errorf("%s%s on %s did not run", step, name, cluster)
	case o.state.Success():
		return nil
	}
	if ws, ok := o.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Errorf("%s%s", step, quote(fmt.Sprintf("%s was killed by signal %d (%s) on %s", name, int(ws.Signal()), ws.Signal(), cluster)))
	}
	return fmt.Errorf("%s%s", step, quote(fmt.Sprintf("%s exited with status %d on %s", name, o.state.ExitCode(), cluster)))
}

// ErrTimeout is wrapped by the error of an apply, verify or probe command
// stopped because it ran longer than its configured timeout. (A command
// stopped because the caller's context ended wraps the context's error
// instead, e.g. context.DeadlineExceeded for the executor's own timeout.)
var ErrTimeout = errors.New("exec driver: command timed out")

type timeoutError struct{ msg string }

func (e *timeoutError) Error() string { return e.msg }
func (e *timeoutError) Unwrap() error { return ErrTimeout }

// report is what a command may print as the last line of its stdout.
type report struct {
	Version         string   `json:"version"`
	PreviousVersion string   `json:"previous_version"`
	Reasons         []string `json:"reasons"`
	ConfigHash      string   `json:"config_hash"`
	// Config is what a probe read of the cluster's config keys, for drift
	// detection: a key with no value is "" (keys left out are not read).
	Config  map[string]string          `json:"config"`
	Details map[string]json.RawMessage `json:"details"`
}

// parseReport reads a report from a line that is a JSON object. A line that
// is not JSON is plain output (no report, no error); a JSON object with
// fields of the wrong type is an error, so that a typo in a script does not
// go unnoticed.
func parseReport(line string) (report, error) {
	var r report
	if !strings.HasPrefix(line, "{") || !json.Valid([]byte(line)) {
		return r, nil
	}
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return report{}, fmt.Errorf("last line of stdout is not a valid report: %w", err)
	}
	return r, nil
}

// details turns the report's details into strings: JSON strings unquoted,
// any other value as its JSON text.
func (r report) details() map[string]string {
	if len(r.Details) == 0 {
		return nil
	}
	out := make(map[string]string, len(r.Details))
	for k, raw := range r.Details {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			out[k] = s
			continue
		}
		var b bytes.Buffer
		if json.Compact(&b, raw) == nil {
			out[k] = b.String()
		}
	}
	return out
}

// tail keeps the end of what is written to it. It is safe for concurrent
// use: a command's stdout and stderr are written from two goroutines.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
	cut bool // something was dropped from the front
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.max { // trim only now and then, keeping writes cheap
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
		t.cut = true
	}
	return len(p), nil
}

// bytes returns (a copy of) the last max bytes and whether anything before
// them was dropped.
func (t *tail) bytes() ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b, cut := t.buf, t.cut
	if len(b) > t.max {
		b, cut = b[len(b)-t.max:], true
	}
	return append([]byte(nil), b...), cut
}

// output returns the last outputLines lines within the last outputBytes,
// starting at a line boundary, marked when earlier output was dropped.
func (t *tail) output() string {
	b, cut := t.bytes()
	if len(b) > outputBytes {
		b, cut = b[len(b)-outputBytes:], true
	}
	if cut {
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
			b = b[i+1:] // drop the partial first line
		}
	}
	s := strings.TrimRight(strings.ToValidUTF8(string(b), "\uFFFD"), "\n")
	if lines := strings.Split(s, "\n"); len(lines) > outputLines {
		s, cut = strings.Join(lines[len(lines)-outputLines:], "\n"), true
	}
	if cut {
		s = omittedMarker + s
	}
	return s
}

// lastLine returns the last non-blank line of b, trimmed and valid UTF-8.
func lastLine(b []byte) string {
	b = bytes.TrimRight(b, " \t\r\n")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return strings.TrimSpace(strings.ToValidUTF8(string(b), "\uFFFD"))
}

// shorten cuts s to at most reasonBytes, at a rune boundary.
func shorten(s string) string {
	if len(s) > reasonBytes {
		cut := reasonBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
