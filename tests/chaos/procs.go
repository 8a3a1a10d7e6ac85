//go:build unix

package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
)

// proc is one incarnation of a process: from a start to its exit.
type proc struct {
	slot    *slot
	n       int // 1 for the first incarnation of its slot
	cmd     *exec.Cmd
	pid     int
	log     string
	reason  string // why it was started: "first start", "after SIGKILL", "after it exited"
	started time.Time

	done     chan struct{} // closed once it exited
	exited   time.Time
	exitCode int    // -1 for a signal
	signal   string // the signal that ended it, if one did
	// ours is set when the runner killed or stopped it on purpose: its
	// exit is expected.
	ours bool
	// stopAsked is when the runner asked it to stop (SIGTERM) at the end.
	stopAsked time.Time
}

// slot is one copy of a service ("executor-1") and its incarnations,
// restarted by a supervisor loop whenever it exits.
type slot struct {
	r        *runner
	service  string
	instance string
	args     []string

	mu           sync.Mutex
	procs        []*proc
	cur          *proc // the running incarnation; nil between two
	restartAfter time.Duration
	frozen       bool // SIGSTOPped
	stopping     bool
	loopDone     chan struct{}
}

func (s *slot) name() string { return s.instance }

// running returns the running incarnation, nil if there is none or it is
// frozen.
func (s *slot) running() *proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || s.frozen {
		return nil
	}
	return s.cur
}

// start starts a new incarnation.
func (s *slot) start(reason string) (*proc, error) {
	s.mu.Lock()
	n := len(s.procs) + 1
	s.mu.Unlock()
	p := &proc{slot: s, n: n, reason: reason, done: make(chan struct{})}
	p.log = filepath.Join(s.r.dir, "logs", fmt.Sprintf("%s.%d.log", s.instance, n))
	f, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(s.r.bin, s.args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = procAttr()
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", s.instance, err)
	}
	p.pid = p.cmd.Process.Pid
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.cur = p
	s.mu.Unlock()
	go func() {
		err := p.cmd.Wait()
		f.Close()
		p.exited = time.Now()
		p.exitCode = p.cmd.ProcessState.ExitCode()
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.signal = ws.Signal().String()
		}
		_ = err
		s.mu.Lock()
		if s.cur == p {
			s.cur = nil
		}
		s.frozen = false
		s.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// supervise keeps the slot running until it is stopped: a process killed
// by the runner starts again after the delay the runner chose, one that
// exited by itself a second later.
func (s *slot) supervise() {
	defer close(s.loopDone)
	reason := "first start"
	for {
		p, err := s.start(reason)
		if err != nil {
			s.r.progress("%s: %v; trying again in 1s", s.instance, err)
			time.Sleep(time.Second)
			continue
		}
		<-p.done
		s.mu.Lock()
		stopping, ours, delay := s.stopping, p.ours, s.restartAfter
		s.mu.Unlock()
		if stopping {
			return
		}
		if ours {
			reason = "after SIGKILL"
		} else {
			reason = "after it exited"
			delay = time.Second
			s.r.progress("%s (pid %d) exited by itself (%s): %s", s.instance, p.pid, p.status(), lastError(p.log))
		}
		time.Sleep(delay)
		s.mu.Lock()
		stopping = s.stopping
		s.mu.Unlock()
		if stopping {
			return
		}
	}
}

func (p *proc) status() string {
	if p.signal != "" {
		return "signal " + p.signal
	}
	return "exit code " + strconv.Itoa(p.exitCode)
}

// kill SIGKILLs the running incarnation; the supervisor starts it again
// after restartAfter.
func (s *slot) kill(restartAfter time.Duration) (*proc, error) {
	s.mu.Lock()
	p := s.cur
	if p == nil || s.frozen {
		s.mu.Unlock()
		return nil, errors.New("not running")
	}
	p.ours = true
	s.restartAfter = restartAfter
	s.mu.Unlock()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return p, err
	}
	return p, nil
}

// freeze SIGSTOPs the running incarnation.
func (s *slot) freeze() (*proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.cur
	if p == nil || s.frozen {
		return nil, errors.New("not running")
	}
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return nil, err
	}
	s.frozen = true
	return p, nil
}

// thaw SIGCONTs an incarnation frozen.
func (s *slot) thaw(p *proc) error {
	err := p.cmd.Process.Signal(syscall.SIGCONT)
	s.mu.Lock()
	if s.cur == p {
		s.frozen = false
	}
	s.mu.Unlock()
	return err
}

// stop ends the supervisor and stops the running incarnation: SIGTERM,
// and SIGKILL if it has not exited within 10s.
func (s *slot) stop() {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		<-s.loopDone
		return
	}
	s.stopping = true
	p := s.cur
	frozen := s.frozen
	s.mu.Unlock()
	if p != nil {
		if frozen {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
		}
		p.stopAsked = time.Now()
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
	}
	<-s.loopDone
}

// lastError returns the last line of a log that says why a process
// ended: the CLI's "error: ..." line, or else the last JSON line at level
// ERROR or WARN, or else the last line.
func lastError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "?"
	}
	defer f.Close()
	var last, lastBad, lastErr string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		last = line
		if strings.HasPrefix(line, "error:") || strings.HasPrefix(line, "Error:") {
			lastErr = line
			continue
		}
		var l logLine
		if json.Unmarshal([]byte(line), &l) == nil && (l.Level == "ERROR" || l.Level == "WARN") {
			lastBad = l.Msg
			if l.Err != "" {
				lastBad += ": " + l.Err
			}
		}
	}
	for _, s := range []string{lastErr, lastBad, last} {
		if s != "" {
			return clip(s, 300)
		}
	}
	return "(empty log)"
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// logLine is a line of a service's JSON log.
type logLine struct {
	Time  time.Time `json:"time"`
	Level string    `json:"level"`
	Msg   string    `json:"msg"`
	Err   string    `json:"err"`
}

// partitions is the partition count of every topic of a run: few, so that
// a fault (a kill, a freeze) hits a good share of the work.
const partitions = 6

// brokerProc is the embedded broker: `flotilla dev --broker-only`.
type brokerProc struct {
	args  []string
	n     int
	cmd   *exec.Cmd
	log   string
	done  chan struct{}
	addrs []string
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startBroker starts the embedded broker (or, on a real Kafka, sets up
// the topics and registers the fleet) and returns its addresses.
func (r *runner) startBroker(ctx context.Context) ([]string, error) {
	if r.real {
		brokers := backbone.SplitBrokers(r.o.Brokers)
		cfg := backbone.Config{Brokers: brokers, Namespace: r.ns, Logger: discardLogger()}
		if _, err := cfg.SetUpTopics(ctx, partitions, -1); err != nil {
			return nil, fmt.Errorf("set up the topics on %s: %w", r.o.Brokers, err)
		}
		if err := registerFleet(ctx, cfg, r.o.Clusters); err != nil {
			return nil, err
		}
		r.progress("namespace %s on Kafka at %s: topics and %d clusters registered", r.ns, r.o.Brokers, r.o.Clusters)
		return brokers, nil
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	b := &brokerProc{args: []string{"dev", "--broker-only", "--data-dir", filepath.Join(r.dir, "broker"),
		"--addr", fmt.Sprintf("127.0.0.1:%d", port), "--namespace", r.ns,
		"--sim-clusters", strconv.Itoa(r.o.Clusters), "--sim-dir", r.simDir, "--partitions", strconv.Itoa(partitions)}}
	r.broker = b
	if err := r.launchBroker(ctx); err != nil {
		return nil, err
	}
	r.progress("embedded broker at %s (pid %d), namespace %s, %d clusters", strings.Join(b.addrs, ","), b.cmd.Process.Pid, r.ns, r.o.Clusters)
	return b.addrs, nil
}

// launchBroker starts the embedded broker process and waits until it
// says it runs.
func (r *runner) launchBroker(ctx context.Context) error {
	b := r.broker
	b.n++
	b.log = filepath.Join(r.dir, "logs", fmt.Sprintf("broker.%d.log", b.n))
	f, err := os.Create(b.log)
	if err != nil {
		return err
	}
	b.cmd = exec.Command(r.bin, b.args...)
	b.cmd.Stdout, b.cmd.Stderr = f, f
	b.cmd.SysProcAttr = procAttr()
	if err := b.cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start flotilla dev --broker-only: %w", err)
	}
	b.done = make(chan struct{})
	go func() {
		b.cmd.Wait()
		f.Close()
		close(b.done)
	}()
	deadline := time.Now().Add(90 * time.Second)
	for {
		data, _ := os.ReadFile(b.log)
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "The broker runs at "); ok {
				addrs, _, _ := strings.Cut(rest, ", ")
				b.addrs = strings.Split(addrs, ",")
				return nil
			}
		}
		select {
		case <-b.done:
			return fmt.Errorf("flotilla dev --broker-only exited before it was ready: %s", lastError(b.log))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("flotilla dev --broker-only not ready after 90s (log %s)", b.log)
		}
	}
}

// restartBroker stops the embedded broker (SIGTERM, SIGKILL after 15s),
// waits, and starts it again on the same data directory and address.
func (r *runner) restartBroker(ctx context.Context, downFor time.Duration) (string, error) {
	b := r.broker
	pid := b.cmd.Process.Pid
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	how := "SIGTERM"
	select {
	case <-b.done:
	case <-time.After(15 * time.Second):
		_ = b.cmd.Process.Signal(syscall.SIGKILL)
		<-b.done
		how = "SIGTERM, then SIGKILL after 15s"
	}
	stopped := time.Now()
	time.Sleep(downFor)
	if err := r.launchBroker(ctx); err != nil {
		return "", err
	}
	return fmt.Sprintf("pid %d stopped (%s), down %s, pid %d ready after %s", pid, how,
		downFor.Round(time.Millisecond), b.cmd.Process.Pid, time.Since(stopped).Round(time.Millisecond)), nil
}

func (r *runner) stopBroker() {
	b := r.broker
	if b == nil || b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(15 * time.Second):
		_ = b.cmd.Process.Signal(syscall.SIGKILL)
		<-b.done
	}
}

// registerFleet registers the simulated fleet in the inventory, as `dev`
// does, for a run on a real Kafka.
func registerFleet(ctx context.Context, cfg backbone.Config, n int) error {
	var recs []*kgo.Record
	for _, c := range simfleet.GenerateClusters(n) {
		value, err := records.Encode(records.ClusterRecord{
			Envelope: records.Envelope{ID: uuid.NewString(), Time: time.Now().UTC(), Principal: "flotilla-chaos"},
			Cluster:  c,
		})
		if err != nil {
			return err
		}
		recs = append(recs, &kgo.Record{Topic: cfg.Names().Inventory, Key: []byte(c.ID), Value: value})
	}
	return produce(ctx, cfg, recs...)
}

func produce(ctx context.Context, cfg backbone.Config, recs ...*kgo.Record) error {
	cl, err := cfg.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce to %s: %w", recs[0].Topic, err)
	}
	return nil
}

// startServices starts two copies of each service, each under a
// supervisor.
func (r *runner) startServices(_ context.Context, brokers []string) {
	common := []string{"--brokers", strings.Join(brokers, ","), "--namespace", r.ns, "--log-format", "json", "--log-level", "info"}
	for _, svc := range Services {
		for i := range copies {
			instance := fmt.Sprintf("%s-%d", svc, i)
			args := append([]string{svc}, common...)
			args = append(args, "--instance", instance)
			if r.o.SessionTimeout > 0 {
				args = append(args, "--session-timeout", r.o.SessionTimeout.String())
			}
			switch svc {
			case "executor":
				args = append(args, "--sim-dir", r.simDir, "--sim-call-log", r.callLog,
					"--sim-op-duration", r.o.OpDuration.String(), "--sim-failure-rate", strconv.FormatFloat(r.o.FailureRate, 'g', -1, 64),
					"--lease", r.o.Lease.String())
			case "monitor":
				args = append(args, "--sim-dir", r.simDir, "--interval", r.o.ProbeInterval.String(), "--heartbeat", r.o.Heartbeat.String())
			case "notifier":
				args = append(args, "--sinks", r.sink.routing)
			}
			s := &slot{r: r, service: svc, instance: instance, args: args, loopDone: make(chan struct{})}
			r.slots = append(r.slots, s)
			go s.supervise()
		}
	}
	r.progress("started %d service processes: %s", len(r.slots), strings.Join(r.slotNames(), ", "))
}

func (r *runner) slotNames() []string {
	var names []string
	for _, s := range r.slots {
		names = append(names, s.instance)
	}
	return names
}

// stopServices stops every service process.
func (r *runner) stopServices() { r.stopServicesOf("") }

// stopServicesOf stops the processes of a service ("": of every
// service), at once.
func (r *runner) stopServicesOf(service string) {
	var wg sync.WaitGroup
	for _, s := range r.slots {
		if service == "" || s.service == service {
			wg.Go(s.stop)
		}
	}
	wg.Wait()
}

// awaitServices waits until a planner, an executor and a monitor have
// been assigned partitions and a notifier has started.
func (r *runner) awaitServices(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ready := map[string]bool{}
		for _, s := range r.slots {
			p := s.running()
			if p == nil {
				continue
			}
			want := "partitions assigned"
			if s.service == "notifier" {
				want = "notifier started"
			}
			if _, ok := firstLog(p.log, want); ok {
				ready[s.service] = true
			}
		}
		if len(ready) == len(Services) {
			r.progress("services ready after %s", time.Since(r.started).Round(time.Millisecond))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("services not ready after %s (ready: %v; logs in %s)", timeout, ready, filepath.Join(r.dir, "logs"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// awaitAllRunning waits until every slot has a process running (not
// frozen), for up to timeout.
func (r *runner) awaitAllRunning(ctx context.Context, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		all := true
		for _, s := range r.slots {
			if s.running() == nil {
				all = false
			}
		}
		if all {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// firstLog returns the time of the first line of a JSON log whose message
// is msg.
func firstLog(path, msg string) (time.Time, bool) {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		b := sc.Bytes()
		if !strings.Contains(string(b), msg) {
			continue
		}
		var l logLine
		if json.Unmarshal(b, &l) == nil && l.Msg == msg {
			return l.Time, true
		}
	}
	return time.Time{}, false
}

// countLog counts the lines of a JSON log whose message is one of msgs.
func countLog(path string, msgs ...string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && slices.Contains(msgs, l.Msg) {
			n++
		}
	}
	return n
}
