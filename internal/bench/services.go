package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
)

// serviceNames are Flotilla's four services, in the order they start.
var serviceNames = []string{"planner", "executor", "monitor", "notifier"}

// services are the four services of one namespace, each a process of its
// own; the executor and the monitor share the simulated clusters' state
// in a directory, as they do under `flotilla dev --broker-only`.
type services struct {
	procs []*proc
	down  chan struct{} // closed once any of them exited
}

// simulation says how the simulated fleet of the services behaves.
type simulation struct {
	opDuration  time.Duration // of one simulated operation
	concurrency int           // the executor's most operations acting at once (0: its default)
	// inMemory gives the executor and the monitor simulated fleets of
	// their own, in memory, instead of one shared through files: the
	// monitor then sees every cluster as it was registered (healthy, at
	// its first version), and the files' cost, which is the simulation's
	// and not Flotilla's (a real fleet is across the network), is left out.
	inMemory bool
}

// startServices starts the four services against cfg's namespace; dir
// holds their logs and the simulated fleet's state.
func startServices(o Options, cfg backbone.Config, dir string, sim simulation) (*services, error) {
	s := &services{down: make(chan struct{})}
	for _, name := range serviceNames {
		if err := s.start(o, cfg, dir, sim, name); err != nil {
			s.stop()
			return nil, err
		}
	}
	return s, nil
}

// start starts service name against cfg's namespace, beside those
// started before.
func (s *services) start(o Options, cfg backbone.Config, dir string, sim simulation, name string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	args := []string{
		"--brokers", strings.Join(cfg.Brokers, ","), "--namespace", cfg.Namespace,
		"--instance", "bench", "--log-level", "warn", "--log-format", "json",
		"--partitions", strconv.Itoa(int(o.Partitions)),
	}
	simDir := []string{"--sim-dir", filepath.Join(dir, "sim")}
	if sim.inMemory {
		simDir = nil
	}
	switch name {
	case "executor":
		args = append(append(args, simDir...), "--sim-op-duration", sim.opDuration.String())
		if sim.concurrency > 0 {
			args = append(args, "--concurrency", strconv.Itoa(sim.concurrency))
		}
	case "monitor":
		args = append(args, simDir...)
	}
	p, err := startProc(o, dir, name, args)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	go func() {
		<-p.done
		s.markDown()
	}()
	return nil
}

func (s *services) markDown() {
	select {
	case <-s.down:
	default:
		close(s.down)
	}
}

// exited says which services exited, and how.
func (s *services) exited() error {
	var errs []error
	for _, p := range s.procs {
		errs = append(errs, p.exited())
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return errors.New("a service exited")
}

// get returns the process of service name.
func (s *services) get(name string) *proc {
	for _, p := range s.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// peakRSS returns each running service's peak resident set size.
func (s *services) peakRSS() map[string]int64 {
	out := map[string]int64{}
	for _, p := range s.procs {
		if rss, err := p.peakRSS(); err == nil {
			out[p.name] = rss
		}
	}
	return out
}

// cpuTimes returns the CPU time each running service used so far.
func (s *services) cpuTimes() (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	for _, p := range s.procs {
		t, err := p.cpuTime()
		if err != nil {
			return nil, fmt.Errorf("cpu time of %s: %w", p.name, err)
		}
		out[p.name] = t
	}
	return out, nil
}

// stop stops every service, all at once.
func (s *services) stop() {
	var wg sync.WaitGroup
	for _, p := range s.procs {
		wg.Go(p.stop)
	}
	wg.Wait()
}
