//go:build unix

package chaos

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a chaos run did and found.
type Report struct {
	Seed       uint64
	Options    Options
	Namespace  string
	Broker     string
	BrokerKind string
	Dir        string
	Clusters   int
	Started    time.Time
	Ended      time.Time

	Rollouts []RolloutResult
	// Faults are the faults injected, in time order.
	Faults  []Fault
	faults  []Fault
	Zombies []Zombie
	// Exits are the processes that ended by themselves, restarted by the
	// runner's supervisor.
	Exits      []Exit
	Recoveries []Recovery
	Stops      []Stop
	Calls      CallFigures
	Checks     []Check
	// DoubleApplies counts changes beyond one per target and rollout.
	DoubleApplies int
	LongestPause  time.Duration
	// Aborts counts, by service, the transactions its logs say were
	// aborted (and the batch consumed again).
	Aborts map[string]int
	// HarnessErrors are problems of the run itself (a broker that did
	// not come back), not of Flotilla.
	HarnessErrors []string
}

// Failed returns the checks that found something wrong.
func (r *Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if !c.Passed() {
			out = append(out, c)
		}
	}
	return out
}

// FaultCounts counts the faults by kind.
func (r *Report) FaultCounts() map[string]int {
	out := map[string]int{}
	for _, f := range r.Faults {
		out[f.Kind]++
	}
	return out
}

// recoveryStats summarises the recovery times of a service's restarted
// incarnations: count measured, min, median, max, and those that never
// acted.
type recoveryStats struct {
	n, never, ended    int
	min, median, worst time.Duration
}

func (r *Report) recoveryStats(service string) recoveryStats {
	var ds []time.Duration
	never, ended := 0, 0
	for _, rec := range r.Recoveries {
		if rec.Service != service || rec.Reason == "first start" {
			continue
		}
		switch d := rec.Took(); {
		case d >= 0:
			ds = append(ds, d)
		case rec.EndedFirst:
			ended++
		default:
			never++
		}
	}
	slices.Sort(ds)
	s := recoveryStats{n: len(ds), never: never, ended: ended}
	if len(ds) > 0 {
		s.min, s.median, s.worst = ds[0], ds[len(ds)/2], ds[len(ds)-1]
	}
	return s
}

// Print writes the report for people.
func (r *Report) Print(w io.Writer) {
	o := r.Options
	fmt.Fprintf(w, "Flotilla chaos run, seed %d, %s, namespace %s\n", r.Seed, r.BrokerKind, r.Namespace)
	fmt.Fprintf(w, "  %d clusters, 2 copies of each service, %s; ran %s; files in %s\n",
		r.Clusters, fmt.Sprintf("failure rate %.2f, %d retries, op %s, lease %s", o.FailureRate, o.Retries, o.OpDuration, o.Lease),
		r.Ended.Sub(r.Started).Round(time.Second), r.Dir)

	fmt.Fprintf(w, "\nRollouts\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\tID\tversion\tstate\ttook\ttargets")
	for i, ro := range r.Rollouts {
		took := "-"
		if !ro.Finished.IsZero() {
			took = ro.Finished.Sub(ro.Submitted).Round(time.Second).String()
		}
		state := string(ro.State)
		if ro.Stalled {
			state += " (STALLED)"
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\n", i+1, ro.ID, ro.Version, state, took, formatCounts(ro.Targets))
	}
	tw.Flush()

	counts := r.FaultCounts()
	fmt.Fprintf(w, "\nFaults injected: %d SIGKILL, %d SIGSTOP/SIGCONT (zombies), %d broker restarts, %d skipped\n",
		counts["SIGKILL"], counts["SIGSTOP"], counts["broker restart"], counts["skipped"])
	for _, f := range r.Faults {
		pid := ""
		if f.PID != 0 {
			pid = fmt.Sprintf(" pid %d", f.PID)
		}
		fmt.Fprintf(w, "  +%-8s %-14s %-12s%s %s\n", f.Time.Sub(r.Started).Round(100*time.Millisecond), f.Kind, f.Target, pid, f.Detail)
	}
	for _, z := range r.Zombies {
		what := "carried on (did not exit within 30s)"
		if z.Exited {
			what = fmt.Sprintf("exited by itself %s later: %s", z.ExitAfter.Round(time.Millisecond), z.ExitReason)
		}
		fmt.Fprintf(w, "  zombie %s (pid %d): frozen %s inside %d Apply calls; resumed, it %s\n",
			z.Instance, z.PID, z.Resumed.Sub(z.Stopped).Round(time.Second), len(z.OpenCalls), what)
	}

	fmt.Fprintf(w, "\nProcesses that exited by themselves (restarted 1s later): %d\n", len(r.Exits))
	for _, e := range r.Exits {
		fmt.Fprintf(w, "  +%-8s %-12s pid %d after %s, %s: %s\n", e.Time.Sub(r.Started).Round(100*time.Millisecond), e.Instance, e.PID,
			e.Uptime.Round(100*time.Millisecond), e.Status, e.Reason)
	}

	fmt.Fprintf(w, "\nRecovery time of restarted processes (start → first action)\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  service\tmeasured by\trestarts\tmin\tmedian\tmax\tended before acting\tnever acted")
	for _, svc := range Services {
		s := r.recoveryStats(svc)
		how := "partitions assigned (log)"
		if svc == "notifier" {
			how = "assigned in its group"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\t%d\t%d\n", svc, how, s.n+s.never+s.ended, s.min.Round(time.Millisecond), s.median.Round(time.Millisecond), s.worst.Round(time.Millisecond), s.ended, s.never)
	}
	tw.Flush()
	fmt.Fprintf(w, "  each restart:\n")
	for _, rec := range r.Recoveries {
		if rec.Reason == "first start" {
			continue
		}
		took := "never acted"
		if d := rec.Took(); d >= 0 {
			took = d.Round(time.Millisecond).String()
		} else if rec.EndedFirst {
			took = "ended before acting"
		}
		first := ""
		if !rec.FirstRecord.IsZero() {
			first = fmt.Sprintf(", first record after %s", rec.FirstRecord.Sub(rec.Started).Round(time.Millisecond))
		}
		fmt.Fprintf(w, "    +%-8s %-12s pid %-7d %-16s %s%s\n", rec.Started.Sub(r.Started).Round(100*time.Millisecond), rec.Instance, rec.PID, rec.Reason, took, first)
	}
	var slow []string
	for _, s := range r.Stops {
		if s.Took > 3*time.Second {
			slow = append(slow, fmt.Sprintf("%s %s%s", s.Instance, s.Took.Round(time.Millisecond), map[bool]string{true: " (SIGKILLed)"}[s.Killed]))
		}
	}
	fmt.Fprintf(w, "  stop on SIGTERM at the end: %d processes, slower than 3s: %s\n", len(r.Stops), orNone(slow))

	fmt.Fprintf(w, "  transactions aborted (from the logs): %s\n", formatCounts(r.Aborts))

	fmt.Fprintf(w, "\nApply calls (sim call log): %d, %s; double applies: %d; longest time without an operation event: %s\n",
		r.Calls.Total, formatCounts(r.Calls.Outcomes), r.DoubleApplies, r.LongestPause.Round(time.Millisecond))

	fmt.Fprintf(w, "\nChecks\n")
	for _, c := range r.Checks {
		mark := "PASS"
		if !c.Passed() {
			mark = fmt.Sprintf("FAIL (%d)", c.Count)
		}
		fmt.Fprintf(w, "  %-10s %s\n", mark, c.Name)
		for _, v := range c.Violations {
			fmt.Fprintf(w, "      ✗ %s\n", v)
		}
		if c.Count > len(c.Violations) {
			fmt.Fprintf(w, "      ✗ ... and %d more\n", c.Count-len(c.Violations))
		}
		for _, n := range c.Notes {
			fmt.Fprintf(w, "      · %s\n", n)
		}
	}
	for _, e := range r.HarnessErrors {
		fmt.Fprintf(w, "  harness error: %s\n", e)
	}
}

func formatCounts[K ~string](m map[K]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
