package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/window"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// planListed is how many cluster IDs a wave shows in text without --clusters.
const planListed = 8

func rolloutPlanCommand() *cobra.Command {
	var f clientFlags
	var file string
	var showClusters bool
	model := estimateModel{OpDuration: 5 * time.Minute, ProbeInterval: 10 * time.Second}
	cmd := &cobra.Command{
		Use:   "plan -f SPEC.yaml",
		Short: "Dry run: show the phases, waves, gates, windows and an estimated duration, without submitting",
		Long: `plan is a dry run. It reads a rollout spec (YAML), reads the inventory,
the health table and the workflows from Kafka to their end, and lays the spec
over the inventory with the planner's own code; a spec that names a
deployment policy (policy: NAME) takes its phases from the policies topic,
as the planner does when it accepts the rollout. It prints what the planner
would choose now: the phases and waves with their clusters, the approval
gates, the targets whose maintenance windows are closed now and when they
open, warnings for targets not healthy now or in other unfinished rollouts,
and an estimate of the duration. It writes nothing to Kafka.

A spec the planner would reject (an unknown policy, an unknown cluster, no
target, targets that match no phase, targets in other rollouts with
onConflict: reject) is reported with the planner's reason, and plan exits
non-zero.

The estimate simulates the planner's dispatch from now: one wave at a time;
in a wave, clusters start in ID order, at most maxInFlight at once, each
only inside its maintenance windows, each taking --op-duration; the next
wave starts after the wave's last operation, the phase's bake and one
--probe-interval. With the windows open, a wave takes
ceil(size / maxInFlight) x --op-duration + bake + --probe-interval. Not
counted: waiting for approvals (their number is shown), retries, failures,
clusters busy with other rollouts or held while unhealthy.`,
		Example: `  flotilla rollout plan -f examples/three-phase-upgrade.yaml
  flotilla rollout plan -f spec.yaml --op-duration 20m -o json`,
		Args: cobra.NoArgs,
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, _ []string) error {
			if model.OpDuration < 0 || model.ProbeInterval < 0 {
				return fmt.Errorf("--op-duration and --probe-interval must not be negative, got %s and %s", model.OpDuration, model.ProbeInterval)
			}
			data, err := readSpecFile(file)
			if err != nil {
				return err
			}
			spec, err := rollout.ParseYAML(data)
			if err == nil {
				err = spec.Validate()
			}
			if err != nil {
				return fmt.Errorf("%s:\n%w", file, err)
			}
			if spec.Policy != "" {
				policies, err := readPolicies(ctx, cfg, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				if spec, err = spec.WithPolicy(policyMap(policies)); err != nil {
					return fmt.Errorf("%s: the planner would reject this rollout: %w", file, err)
				}
			}
			inv, err := planReadInventory(ctx, cfg, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			health, err := planReadHealth(ctx, cfg)
			if err != nil {
				return err
			}
			workflows, err := readWorkflows(ctx, cfg)
			if err != nil {
				return fmt.Errorf("read workflows: %w", err)
			}
			fleet := fleetNow{Inventory: inv, Health: health, Rollouts: unfinishedRollouts(workflows, inv)}
			d, err := newDryRun(spec, fleet, now(), model)
			if err != nil {
				return fmt.Errorf("%s: the planner would reject this rollout: %w", file, err)
			}
			if f.Output == "json" {
				return printJSON(cmd.OutOrStdout(), d)
			}
			return printDryRun(cmd.OutOrStdout(), d, showClusters)
		}),
	}
	f.bind(cmd)
	fs := cmd.Flags()
	fs.StringVarP(&file, "file", "f", "", "rollout spec (YAML); - reads standard input")
	fs.BoolVar(&showClusters, "clusters", false, "list every cluster of every wave (text output)")
	fs.DurationVar(&model.OpDuration, "op-duration", model.OpDuration, "how long one cluster's operation is assumed to take, for the estimate")
	fs.DurationVar(&model.ProbeInterval, "probe-interval", model.ProbeInterval, "the monitor's probe interval, allowed once per wave in the estimate")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

// planReadInventory reads the inventory topic to its end, as the planner's
// table holds it: keyed by record key, a tombstone removing the cluster.
func planReadInventory(ctx context.Context, cfg backbone.Config, warn io.Writer) (map[string]inventory.Cluster, error) {
	clusters := map[string]inventory.Cluster{}
	err := logtable.ReadToEnd(ctx, cfg.Opts(), cfg.Names().Inventory, nil, func(r *kgo.Record) {
		if r.Value == nil {
			delete(clusters, string(r.Key))
			return
		}
		rec, err := records.DecodeClusterRecord(r.Value)
		if err != nil {
			fmt.Fprintf(warn, "warning: inventory record %d@%d: %v\n", r.Partition, r.Offset, err)
			return
		}
		clusters[string(r.Key)] = rec.Cluster
	})
	if err != nil {
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	return clusters, nil
}

// planReadHealth reads the health topic to its end: each cluster's last signal.
func planReadHealth(ctx context.Context, cfg backbone.Config) (map[string]records.Health, error) {
	health := map[string]records.Health{}
	err := logtable.ReadToEnd(ctx, cfg.Opts(), cfg.Names().Health, nil, func(r *kgo.Record) {
		if r.Value == nil {
			delete(health, string(r.Key))
			return
		}
		if h, err := records.DecodeHealth(r.Value); err == nil {
			health[string(r.Key)] = h
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read health: %w", err)
	}
	return health, nil
}

// unfinishedRollouts maps each cluster of the inventory to the unfinished
// rollouts that target it, as the planner counts them for onConflict.
func unfinishedRollouts(s *decide.State, inv map[string]inventory.Cluster) map[string][]string {
	out := map[string][]string{}
	for id := range inv {
		if ids := s.RolloutsOn(id); len(ids) > 0 {
			out[id] = ids
		}
	}
	return out
}

// fleetNow is what the dry run reads from Kafka: the fleet as the planner sees it.
type fleetNow struct {
	Inventory map[string]inventory.Cluster
	Health    map[string]records.Health
	// Rollouts maps a cluster to the unfinished rollouts targeting it, sorted.
	Rollouts map[string][]string
}

// estimateModel is what the duration estimate assumes.
type estimateModel struct {
	OpDuration    time.Duration // one cluster's operation
	ProbeInterval time.Duration // allowed once per wave for the monitor to see it healthy
}

// dryRun is what `rollout plan` shows, and its JSON document (-o json).
// Durations are Go duration strings ("1h30m0s"), the estimated ones rounded
// to the second; times are RFC 3339.
type dryRun struct {
	Name      string            `json:"name"`
	Operation rollout.Operation `json:"operation"`
	Targets   int               `json:"targets"`
	// Policy is the deployment policy the phases come from, if any.
	Policy string `json:"policy,omitempty"`
	// At is the instant the plan is made for: now.
	At time.Time `json:"at"`
	// FailureThreshold is the number of failed or unhealthy clusters at
	// which the rollout stops; FailureAction says how: pause, abort or
	// rollback.
	FailureThreshold int    `json:"failureThreshold"`
	FailureAction    string `json:"failureAction"`
	// OnConflict (wait or reject) and UnhealthyTargets (hold or skip) are the spec's policies.
	OnConflict       string        `json:"onConflict"`
	UnhealthyTargets string        `json:"unhealthyTargets"`
	Phases           []dryRunPhase `json:"phases"`
	// NotHealthy are the targets whose last health signal is unhealthy or degraded.
	NotHealthy []dryRunHealth `json:"notHealthy"`
	// InOtherRollouts are the targets that unfinished rollouts also target.
	InOtherRollouts []dryRunConflict `json:"inOtherRollouts"`
	Estimate        dryRunEstimate   `json:"estimate"`
}

type dryRunConflict struct {
	ID        string   `json:"id"`
	Workflows []string `json:"workflows"`
}

type dryRunPhase struct {
	Name     string `json:"name"`
	Selector string `json:"selector"`
	Targets  int    `json:"targets"`
	// Approve is before, after or both; absent when the phase has no gate.
	Approve         rollout.Approval `json:"approve,omitempty"`
	ApprovalTimeout string           `json:"approvalTimeout,omitempty"`
	MaxInFlight     int              `json:"maxInFlight"` // 0: the whole wave
	// FailureThreshold and FailureAction are the phase's own limit, if any.
	FailureThreshold int          `json:"failureThreshold,omitempty"`
	FailureAction    string       `json:"failureAction,omitempty"`
	Bake             string       `json:"bake"`
	Waves            []dryRunWave `json:"waves"`
	// WaitingForWindow are the phase's targets whose windows are closed now.
	WaitingForWindow []dryRunWaiting `json:"waitingForWindow"`
	// FirstWindowOpens is when the first of WaitingForWindow may start.
	FirstWindowOpens *time.Time `json:"firstWindowOpens,omitempty"`
}

type dryRunWave struct {
	Wave     int      `json:"wave"` // 1-based, as in rollout status
	Size     int      `json:"size"`
	Clusters []string `json:"clusters"`
	// StartsAfter is how long after At the wave's first operation is
	// estimated to start.
	StartsAfter string `json:"startsAfter"`
	// Duration is estimated from the wave's first operation until the next
	// wave may start: its operations, the bake and one probe interval.
	Duration string `json:"duration"`
}

type dryRunWaiting struct {
	ID string `json:"id"`
	// OpensAt is when the cluster's windows open; absent when they do not
	// open within window.Horizon.
	OpensAt *time.Time `json:"opensAt,omitempty"`
}

type dryRunHealth struct {
	ID         string               `json:"id"`
	Health     records.HealthStatus `json:"health"`
	Reasons    []string             `json:"reasons,omitempty"`
	ObservedAt time.Time            `json:"observedAt"`
}

type dryRunEstimate struct {
	// Duration is the whole estimate, window waits included, approvals not.
	Duration string `json:"duration"`
	Seconds  int64  `json:"seconds"`
	// WindowWait is how much longer Duration is than with every window
	// open: the time spent waiting for maintenance windows.
	WindowWait string `json:"windowWait"`
	// Approvals is how many approval gates the rollout will wait at, for a
	// time not estimated.
	Approvals int `json:"approvals"`
	// NeverOpen counts the targets whose windows do not open within
	// window.Horizon: the rollout would wait for them forever.
	NeverOpen     int    `json:"neverOpen"`
	OpDuration    string `json:"opDuration"`
	ProbeInterval string `json:"probeInterval"`
	Model         string `json:"model"`
}

// estimateText is the model of the estimate, in words.
const estimateText = "the planner's dispatch, simulated from now: waves one at a time; in a wave, clusters start in ID order, " +
	"at most maxInFlight at once, each only inside its maintenance windows, each taking opDuration; " +
	"the next wave starts after the last operation, the phase's bake and one probeInterval " +
	"(with windows open: ceil(size / maxInFlight) x opDuration + bake + probeInterval per wave). " +
	"Not counted: waiting for approvals, retries, failures, clusters busy with other rollouts or held while unhealthy"

// newDryRun lays spec over the inventory with the planner's own Plan and
// describes it at instant at. It fails with Plan's error, the reason the
// planner would reject the rollout for.
func newDryRun(spec rollout.Spec, fleet fleetNow, at time.Time, m estimateModel) (dryRun, error) {
	inv := fleet.Inventory
	plan, err := spec.Plan(inv)
	if err != nil {
		return dryRun{}, err
	}
	var conflicts []dryRunConflict
	for _, ph := range plan.Phases {
		for _, wave := range ph.Waves {
			for _, id := range wave {
				if others := fleet.Rollouts[id]; len(others) > 0 {
					conflicts = append(conflicts, dryRunConflict{ID: id, Workflows: others})
				}
			}
		}
	}
	if len(conflicts) > 0 && spec.OnConflict == rollout.ConflictReject {
		return dryRun{}, decide.ConflictError(plan, func(id string) []string { return fleet.Rollouts[id] })
	}
	windows, err := spec.CompileWindows()
	if err != nil {
		return dryRun{}, fmt.Errorf("windows: %w", err) // Plan validated them
	}
	d := dryRun{
		Name: spec.Name, Operation: spec.Operation, Targets: plan.Targets, Policy: spec.Policy, At: at,
		FailureThreshold: spec.FailureThreshold.Limit(plan.Targets),
		FailureAction:    cmp.Or(string(spec.FailureThreshold.Action), "pause"),
		OnConflict:       cmp.Or(string(spec.OnConflict), "wait"),
		UnhealthyTargets: cmp.Or(string(spec.UnhealthyTargets), "hold"),
		NotHealthy:       []dryRunHealth{},
		InOtherRollouts:  conflicts,
	}
	if d.InOtherRollouts == nil {
		d.InOtherRollouts = []dryRunConflict{}
	}
	schedules := map[string]window.All{}
	never := map[string]bool{}
	t := at                      // the estimate's clock, walking the waves
	var unhindered time.Duration // the estimate as if every window were open
	for p, ph := range plan.Phases {
		out := dryRunPhase{
			Name: ph.Name, Selector: ph.Selector, MaxInFlight: ph.MaxInFlight, Bake: ph.Bake.String(),
			Waves: []dryRunWave{}, WaitingForWindow: []dryRunWaiting{},
		}
		if p < len(spec.Phases) { // a spec without phases has one phase "all" and no gates
			if th := spec.Phases[p].FailureThreshold; !th.IsZero() {
				size := 0
				for _, wave := range ph.Waves {
					size += len(wave)
				}
				out.FailureThreshold, out.FailureAction = th.Limit(size), cmp.Or(string(th.Action), "pause")
			}
			out.Approve = spec.Phases[p].Approve
			if to := spec.Phases[p].ApprovalTimeout; to > 0 {
				out.ApprovalTimeout = to.String()
			}
		}
		if len(ph.Waves) > 0 { // a phase without targets is skipped, gates and all
			if out.Approve.Before() {
				d.Estimate.Approvals++
			}
			if out.Approve.After() {
				d.Estimate.Approvals++
			}
		}
		for i, wave := range ph.Waves {
			out.Targets += len(wave)
			for _, id := range wave {
				sched := windows.For(inv[id].Labels)
				schedules[id] = sched
				if !sched.Open(at) {
					w := dryRunWaiting{ID: id}
					if opens, ok := sched.NextOpen(at); ok {
						w.OpensAt = &opens
						if out.FirstWindowOpens == nil || opens.Before(*out.FirstWindowOpens) {
							out.FirstWindowOpens = &opens
						}
					}
					out.WaitingForWindow = append(out.WaitingForWindow, w)
				}
			}
			first, last, left := simulateWave(wave, schedules, ph.MaxInFlight, m.OpDuration, t)
			for _, id := range left {
				never[id] = true
			}
			next := last.Add(ph.Bake + m.ProbeInterval)
			out.Waves = append(out.Waves, dryRunWave{
				Wave: i + 1, Size: len(wave), Clusters: wave,
				StartsAfter: roundDur(first.Sub(at)), Duration: roundDur(next.Sub(first)),
			})
			unhindered += waveDuration(len(wave), ph.MaxInFlight, ph.Bake, m)
			t = next
		}
		d.Phases = append(d.Phases, out)
	}
	for _, ph := range plan.Phases {
		for _, wave := range ph.Waves {
			for _, id := range wave {
				if h, ok := fleet.Health[id]; ok && (h.Status == records.HealthUnhealthy || h.Status == records.HealthDegraded) {
					d.NotHealthy = append(d.NotHealthy, dryRunHealth{ID: id, Health: h.Status, Reasons: h.Reasons, ObservedAt: h.ObservedAt})
				}
			}
		}
	}
	total := t.Sub(at)
	d.Estimate.Duration, d.Estimate.Seconds = roundDur(total), int64(total.Round(time.Second)/time.Second)
	d.Estimate.WindowWait = roundDur(max(0, total-unhindered))
	d.Estimate.NeverOpen = len(never)
	d.Estimate.OpDuration, d.Estimate.ProbeInterval = m.OpDuration.String(), m.ProbeInterval.String()
	d.Estimate.Model = estimateText
	return d, nil
}

// simulateWave runs a wave reached at t as the planner dispatches it:
// clusters start in ID order, at most maxInFlight (0: all) at a time, each
// only while its windows are open, and each takes op. It returns when the
// first operation starts and the last ends, and the clusters left out
// because their windows do not open within window.Horizon.
func simulateWave(ids []string, sched map[string]window.All, maxInFlight int, op time.Duration, t time.Time) (first, last time.Time, never []string) {
	limit := maxInFlight
	if limit <= 0 {
		limit = len(ids)
	}
	pending := slices.Clone(ids)
	var running []time.Time // when each operation in flight ends
	first, last = t, t
	started := false
	for clock := t; ; {
		running = slices.DeleteFunc(running, func(end time.Time) bool { return !end.After(clock) })
		pending = slices.DeleteFunc(pending, func(id string) bool {
			if len(running) >= limit || !sched[id].Open(clock) {
				return false
			}
			if !started {
				first, started = clock, true
			}
			running = append(running, clock.Add(op))
			last = clock.Add(op)
			return true
		})
		if len(pending) == 0 && len(running) == 0 {
			return first, last, never
		}
		// The next event: an operation ending, or (with a free slot) a
		// waiting cluster's window opening.
		var next time.Time
		for _, end := range running {
			if next.IsZero() || end.Before(next) {
				next = end
			}
		}
		if len(running) < limit {
			pending = slices.DeleteFunc(pending, func(id string) bool {
				opens, ok := sched[id].NextOpen(clock)
				if !ok {
					never = append(never, id)
					return true
				}
				if next.IsZero() || opens.Before(next) {
					next = opens
				}
				return false
			})
		}
		if next.IsZero() {
			return first, last, never // only clusters whose windows never open were left
		}
		clock = next
	}
}

// waveDuration is the estimate of one started wave: its operations in
// batches of maxInFlight (0: all at once), then the bake, then one probe.
func waveDuration(size, maxInFlight int, bake time.Duration, m estimateModel) time.Duration {
	if maxInFlight <= 0 || maxInFlight > size {
		maxInFlight = size
	}
	batches := (size + maxInFlight - 1) / maxInFlight
	return time.Duration(batches)*m.OpDuration + bake + m.ProbeInterval
}

func printDryRun(out io.Writer, d dryRun, showClusters bool) error {
	op := string(d.Operation.Kind)
	if d.Operation.Version != "" {
		op += " to " + d.Operation.Version
	}
	if len(d.Operation.Config) > 0 {
		op += " " + formatLabels(d.Operation.Config)
	}
	if len(d.Operation.Reset) > 0 {
		op += " reset " + strings.Join(d.Operation.Reset, ",")
	}
	fmt.Fprintf(out, "rollout %q: %s, %s in %s\n", d.Name, op, plural(d.Targets, "cluster"), plural(len(d.Phases), "phase"))
	if d.Policy != "" {
		fmt.Fprintf(out, "phases from deployment policy %q\n", d.Policy)
	}
	fmt.Fprintf(out, "dry run at %s: nothing was submitted; this is what the planner would choose now\n", d.At.UTC().Format(time.RFC3339))
	fmt.Fprintf(out, "failure threshold: %s when %s failed or turned unhealthy\n", thresholdVerb(d.FailureAction), plural(d.FailureThreshold, "cluster"))
	fmt.Fprintf(out, "policies: onConflict %s, unhealthyTargets %s\n", d.OnConflict, d.UnhealthyTargets)

	for i, ph := range d.Phases {
		sel := "selector " + ph.Selector
		if ph.Selector == "" {
			sel = "the targets left"
		}
		fmt.Fprintf(out, "\nphase %d %q (%s): ", i+1, ph.Name, sel)
		if len(ph.Waves) == 0 {
			fmt.Fprintln(out, "no targets; skipped, gates and all")
			continue
		}
		inFlight := "whole wave"
		if ph.MaxInFlight > 0 {
			inFlight = fmt.Sprint(ph.MaxInFlight)
		}
		fmt.Fprintf(out, "%s in %s, maxInFlight %s, bake %s\n", plural(ph.Targets, "cluster"), plural(len(ph.Waves), "wave"), inFlight, shortDur(ph.Bake))
		if g := gateText(ph); g != "" {
			fmt.Fprintf(out, "  gate: %s\n", g)
		}
		if ph.FailureThreshold > 0 {
			fmt.Fprintf(out, "  failure threshold: %s when %s of the phase failed or turned unhealthy\n", thresholdVerb(ph.FailureAction), plural(ph.FailureThreshold, "cluster"))
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  WAVE\tSIZE\tSTARTS\tTAKES\tCLUSTERS")
		for _, w := range ph.Waves {
			fmt.Fprintf(tw, "  %d\t%d\t+%s\t%s\t%s\n", w.Wave, w.Size, shortDur(w.StartsAfter), shortDur(w.Duration), clusterList(w.Clusters, showClusters))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if n := len(ph.WaitingForWindow); n > 0 {
			wait := fmt.Sprintf("%d clusters wait for their window", n)
			if n == 1 {
				wait = "1 cluster waits for its window"
			}
			if ph.FirstWindowOpens != nil {
				fmt.Fprintf(out, "  windows: %s, which opens at %s\n", wait, ph.FirstWindowOpens.UTC().Format(time.RFC3339))
			} else {
				fmt.Fprintf(out, "  windows: %s, which does not open within %d days\n", wait, int(window.Horizon.Hours()/24))
			}
			if showClusters {
				for _, w := range ph.WaitingForWindow {
					opens := "not within the horizon"
					if w.OpensAt != nil {
						opens = w.OpensAt.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(out, "    %-20s opens %s\n", w.ID, opens)
				}
			}
		}
	}

	if len(d.NotHealthy) > 0 {
		then := "held until it recovers"
		if d.UnhealthyTargets == string(rollout.SkipUnhealthy) {
			then = "skipped"
		}
		fmt.Fprintf(out, "\nwarning: %s not healthy now; one still unhealthy when its turn comes is %s (unhealthyTargets %s),\n"+
			"  and one seen unhealthy after its operation counts as failed:\n", plural(len(d.NotHealthy), "target"), then, d.UnhealthyTargets)
		for _, h := range d.NotHealthy {
			line := fmt.Sprintf("  %-20s %s", h.ID, h.Health)
			if len(h.Reasons) > 0 {
				line += ": " + strings.Join(h.Reasons, "; ")
			}
			fmt.Fprintln(out, line)
		}
	}

	if len(d.InOtherRollouts) > 0 {
		fmt.Fprintf(out, "\nwarning: %s in other unfinished rollouts; one busy with another rollout's operation waits for it:\n", plural(len(d.InOtherRollouts), "target"))
		for i, c := range d.InOtherRollouts {
			if i == planListed && !showClusters {
				fmt.Fprintf(out, "  and %d more\n", len(d.InOtherRollouts)-planListed)
				break
			}
			fmt.Fprintf(out, "  %-20s in %s\n", c.ID, strings.Join(c.Workflows, ", "))
		}
	}

	e := d.Estimate
	fmt.Fprintf(out, "\nestimate: about %s", shortDur(e.Duration))
	if e.WindowWait != "0s" {
		fmt.Fprintf(out, " (of which %s waiting for maintenance windows)", shortDur(e.WindowWait))
	}
	if e.Approvals > 0 {
		fmt.Fprintf(out, " + time waiting for %s (not estimated)", plural(e.Approvals, "approval"))
	}
	fmt.Fprintln(out)
	if e.NeverOpen > 0 {
		fmt.Fprintf(out, "  warning: the windows of %s do not open within %d days: the rollout would wait for them\n", plural(e.NeverOpen, "target"), int(window.Horizon.Hours()/24))
	}
	fmt.Fprintf(out, "  an estimate, assuming each operation takes %s (--op-duration) and the monitor probes every %s (--probe-interval):\n",
		shortDur(e.OpDuration), shortDur(e.ProbeInterval))
	fmt.Fprint(out, wrap(e.Model, "  ", 100))
	return nil
}

// roundDur writes an estimated duration to the second: the model is no finer.
func roundDur(d time.Duration) string { return d.Round(time.Second).String() }

// plural writes "1 cluster" or "3 clusters".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// wrap breaks text into lines of at most width columns, each indented.
func wrap(text, indent string, width int) string {
	var b strings.Builder
	line := indent
	for _, word := range strings.Fields(text) {
		if line != indent && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if line != indent {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
	return b.String()
}

// thresholdVerb says what reaching a failure threshold does.
func thresholdVerb(action string) string {
	switch rollout.ThresholdAction(action) {
	case rollout.ThresholdAbort:
		return "aborts"
	case rollout.ThresholdRollback:
		return "rolls back"
	}
	return "pauses"
}

func gateText(ph dryRunPhase) string {
	var where string
	switch {
	case ph.Approve.Before() && ph.Approve.After():
		where = "approval before the phase starts and after it ends"
	case ph.Approve.Before():
		where = "approval before the phase starts"
	case ph.Approve.After():
		where = "approval after the phase ends, before the next starts"
	default:
		return ""
	}
	if ph.ApprovalTimeout != "" {
		where += fmt.Sprintf(" (not approved within %s, the rollout pauses)", shortDur(ph.ApprovalTimeout))
	}
	return where
}

func clusterList(ids []string, all bool) string {
	if all || len(ids) <= planListed {
		return strings.Join(ids, ", ")
	}
	return strings.Join(ids[:planListed], ", ") + fmt.Sprintf(" and %d more", len(ids)-planListed)
}

// shortDur writes a Go duration string as people do: "10m", not "10m0s".
func shortDur(s string) string {
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
