package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/selector"
)

func driftCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drift",
		Short: "List the clusters that differ from their desired state, and correct them",
		Long: `A cluster's desired state is what the inventory declares for it (cluster add
--desired-version, --desired-config) and, where it declares nothing, what the
last successful rollout left. The monitor compares every probe with it, on
the declared keys only and outside the cluster's --drift-ignore list, and
puts what differs in the cluster's health signal.`,
	}
	cmd.AddCommand(driftListCommand(), driftFixCommand())
	return cmd
}

// driftView is a drifted cluster as drift list shows it.
type driftView struct {
	Cluster    string               `json:"cluster"`
	Health     records.HealthStatus `json:"health"`
	ObservedAt time.Time            `json:"observedAt"`
	Drift      []driftItemView      `json:"drift"`
}

type driftItemView struct {
	Key      string `json:"key"`
	Observed string `json:"observed"`
	Desired  string `json:"desired"`
	// From says where the desired value comes from: "inventory", or
	// "rollout" (what the last successful rollout left).
	From string `json:"from"`
}

// readDrift reads the inventory and the health topic to their ends and
// returns the drifted clusters the selector picks, by ID, with the
// inventory.
func readDrift(ctx context.Context, cfg backbone.Config, sel string, warn io.Writer) ([]driftView, map[string]inventory.Cluster, map[string]records.Health, error) {
	s, err := selector.Parse(sel)
	if err != nil {
		return nil, nil, nil, err
	}
	inv, err := planReadInventory(ctx, cfg, warn)
	if err != nil {
		return nil, nil, nil, err
	}
	health, err := planReadHealth(ctx, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	var out []driftView
	for _, id := range slices.Sorted(maps.Keys(inv)) {
		c := inv[id]
		h, ok := health[id]
		if !ok || len(h.Drift) == 0 || !s.Matches(c.Labels) {
			continue
		}
		v := driftView{Cluster: id, Health: h.Status, ObservedAt: h.ObservedAt}
		for _, d := range h.Drift {
			v.Drift = append(v.Drift, driftItemView{Key: d.Key, Observed: d.Observed, Desired: d.Desired, From: desiredFrom(c, d.Key)})
		}
		out = append(out, v)
	}
	return out, inv, health, nil
}

func desiredFrom(c inventory.Cluster, key string) string {
	if key == inventory.DriftVersionKey && c.Desired.Version != "" {
		return "inventory"
	}
	if _, ok := c.Desired.Config[key]; ok && key != inventory.DriftVersionKey {
		return "inventory"
	}
	return "rollout"
}

func driftListCommand() *cobra.Command {
	var f clientFlags
	var sel string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the clusters that differ from their desired state, with what differs",
		Long: `list reads the inventory and the health topic to their ends (like cluster
list) and shows, for each drifted cluster the selector picks, each key that
differs: what the monitor observed, what is desired and where that comes
from (the inventory, or the last successful rollout). A cluster with an
operation in flight keeps the drift it had until the operation's outcome is
known.`,
		Example: `  flotilla drift list
  flotilla drift list -s env=prod -o json`,
		Args: cobra.NoArgs,
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, _ []string) error {
			views, _, _, err := readDrift(ctx, cfg, sel, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if f.Output == "json" {
				if views == nil {
					views = []driftView{}
				}
				return printJSON(cmd.OutOrStdout(), views)
			}
			out := cmd.OutOrStdout()
			if len(views) == 0 {
				fmt.Fprintln(out, "no cluster drifted")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CLUSTER\tKEY\tOBSERVED\tDESIRED\tFROM\tOBSERVED AT")
			for _, v := range views {
				for i, d := range v.Drift {
					id, at := v.Cluster, v.ObservedAt.Local().Format("2006-01-02 15:04:05")
					if i > 0 {
						id, at = "", ""
					}
					observed := d.Observed
					if observed == "" {
						observed = "(unset)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", id, d.Key, observed, d.Desired, d.From, at)
				}
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(out, "%s drifted\n", plural(len(views), "cluster"))
			return nil
		}),
	}
	f.bind(cmd)
	cmd.Flags().StringVarP(&sel, "selector", "s", "", `only clusters matching a label selector, e.g. "env=prod"`)
	return cmd
}

// corrections groups drifted clusters by the operation that brings them
// back: an upgrade to each desired version, a config change for each set
// of desired key values. A cluster drifted on both gets both (the second
// rollout waits for the first: onConflict wait). Clusters in unfinished
// rollouts are left out.
func corrections(views []driftView, busy map[string][]string, name string) ([]rollout.Spec, map[string][]string) {
	groups := map[string]*rollout.Spec{}
	skipped := map[string][]string{}
	add := func(key string, op rollout.Operation, id string) {
		g := groups[key]
		if g == nil {
			g = &rollout.Spec{Name: name + "-" + key, Operation: op}
			groups[key] = g
		}
		g.Clusters = append(g.Clusters, id)
	}
	for _, v := range views {
		if ids := busy[v.Cluster]; len(ids) > 0 {
			skipped[v.Cluster] = ids
			continue
		}
		config := map[string]string{}
		for _, d := range v.Drift {
			if d.Key == inventory.DriftVersionKey {
				add("upgrade-"+d.Desired, rollout.Operation{Kind: rollout.Upgrade, Version: d.Desired}, v.Cluster)
			} else {
				config[d.Key] = d.Desired
			}
		}
		if len(config) > 0 {
			add("config-"+configDigest(config), rollout.Operation{Kind: rollout.Config, Config: config}, v.Cluster)
		}
	}
	var out []rollout.Spec
	for _, key := range slices.Sorted(maps.Keys(groups)) {
		out = append(out, *groups[key])
	}
	return out, skipped
}

// configDigest names a set of config values briefly and stably.
func configDigest(config map[string]string) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(config)) {
		fmt.Fprintf(h, "%s=%s\n", k, config[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:8]
}

func driftFixCommand() *cobra.Command {
	var f clientFlags
	var sel, policy, name string
	var dry, showClusters bool
	var maxInFlight int
	model := estimateModel{OpDuration: 5 * time.Minute, ProbeInterval: 10 * time.Second}
	cmd := &cobra.Command{
		Use:   "fix",
		Short: "Submit the rollouts that bring drifted clusters back to their desired state",
		Long: `fix reads the drift as drift list does, groups the drifted clusters the
selector picks by the correction they need (an upgrade to version X; a
config change setting k=v, ...), and submits one rollout per group through
the requests topic, with the clusters listed by name: the planner plans and
paces it like any rollout, and every safety control applies (phases and
waves, failure thresholds, windows, approvals, one operation per cluster,
health gates). The phases are those of a deployment policy (--policy), or
else one phase with at most --max-in-flight clusters changing at once. A
cluster drifted on its version and its config gets both rollouts, the
second waiting for the first. Clusters already in an unfinished rollout are
left out, and listed.

--dry-run submits nothing: for each rollout it prints the planner's dry run
(as rollout plan does).`,
		Example: `  flotilla drift fix --dry-run
  flotilla drift fix -s env=staging --policy internal-first`,
		Args: cobra.NoArgs,
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, _ []string) error {
			if maxInFlight < 1 {
				return fmt.Errorf("--max-in-flight must be at least 1, got %d", maxInFlight)
			}
			views, inv, health, err := readDrift(ctx, cfg, sel, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(views) == 0 {
				if f.Output == "json" {
					return printJSON(out, []any{})
				}
				fmt.Fprintln(out, "no cluster drifted: nothing to fix")
				return nil
			}
			workflows, err := readWorkflows(ctx, cfg)
			if err != nil {
				return fmt.Errorf("read workflows: %w", err)
			}
			busy := unfinishedRollouts(workflows, inv)
			specs, skipped := corrections(views, busy, name)
			for _, id := range slices.Sorted(maps.Keys(skipped)) {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: left alone, in unfinished rollouts %s\n", id, strings.Join(skipped[id], ", "))
			}
			var policies map[string]rollout.Policy
			if policy != "" {
				recs, err := readPolicies(ctx, cfg, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				policies = policyMap(recs)
			}
			for i := range specs {
				if policy != "" {
					specs[i].Policy = policy
				} else {
					specs[i].Phases = []rollout.Phase{{Name: "drift", MaxInFlight: maxInFlight}}
				}
			}
			if dry {
				fleet := fleetNow{Inventory: inv, Health: health, Rollouts: busy}
				var runs []dryRun
				for _, spec := range specs {
					planned := spec
					if err := planned.Validate(); err != nil {
						return fmt.Errorf("rollout %q: %w", spec.Name, err)
					}
					if policy != "" {
						if planned, err = planned.WithPolicy(policies); err != nil {
							return fmt.Errorf("rollout %q: the planner would reject it: %w", spec.Name, err)
						}
					}
					d, err := newDryRun(planned, fleet, now(), model)
					if err != nil {
						return fmt.Errorf("rollout %q: the planner would reject it: %w", spec.Name, err)
					}
					runs = append(runs, d)
				}
				if f.Output == "json" {
					return printJSON(out, runs)
				}
				fmt.Fprintf(out, "dry run: %s would be submitted\n", plural(len(specs), "rollout"))
				for _, d := range runs {
					fmt.Fprintln(out)
					if err := printDryRun(out, d, showClusters); err != nil {
						return err
					}
				}
				return nil
			}
			type submitted struct {
				ID   string       `json:"id"`
				Spec rollout.Spec `json:"spec"`
			}
			var done []submitted
			for _, spec := range specs {
				id := uuid.NewString()
				req := records.Request{
					Envelope: records.Envelope{ID: id, Time: now().UTC(), Principal: principal(cfg)},
					Submit:   &records.SubmitRollout{Spec: spec},
				}
				w, err := sendRequest(ctx, cfg, id, req, false, []string{id}, func(w *records.Workflow) bool { return w.ID == id })
				if err != nil {
					return err
				}
				if w.State == records.WorkflowRejected {
					return fmt.Errorf("rollout %q (request %s) rejected: %s", spec.Name, id, w.Reason)
				}
				done = append(done, submitted{ID: id, Spec: spec})
				if f.Output != "json" {
					fmt.Fprintf(out, "rollout %q accepted: %s on %s (flotilla rollout status %s)\n", spec.Name, describeFix(spec.Operation), plural(w.Targets, "cluster"), id)
				}
			}
			if f.Output == "json" {
				return printJSON(out, done)
			}
			for _, d := range done {
				fmt.Fprintln(out, d.ID)
			}
			return nil
		}),
	}
	f.bind(cmd)
	fs := cmd.Flags()
	fs.StringVarP(&sel, "selector", "s", "", `only clusters matching a label selector, e.g. "env=prod"`)
	fs.BoolVar(&dry, "dry-run", false, "print the rollouts that would be submitted, with the planner's dry run of each; submit nothing")
	fs.StringVar(&policy, "policy", "", "the phases of this deployment policy for every rollout")
	fs.IntVar(&maxInFlight, "max-in-flight", 1, "without --policy: most clusters changing at once")
	fs.StringVar(&name, "name", "drift-fix", "prefix of the rollouts' names")
	fs.BoolVar(&showClusters, "clusters", false, "with --dry-run: list every cluster of every wave")
	return cmd
}

func describeFix(op rollout.Operation) string {
	if op.Kind == rollout.Upgrade {
		return "upgrade to " + op.Version
	}
	return "config " + formatLabels(op.Config)
}
