package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

func clusterHistoryCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "history ID",
		Short: "Show what each rollout did to a cluster, oldest first",
		Long: `history reads the cluster's partition of the history topic, where the
planner records how each workflow's operation on a cluster ended (its
version before and after, or why it failed or was skipped). The history
outlives the workflows' own rows, and is kept for a year.`,
		Args: cobra.ExactArgs(1),
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, args []string) error {
			entries, err := readHistory(ctx, cfg, args[0])
			if err != nil {
				return err
			}
			if len(entries) == 0 {
				return fmt.Errorf("no history for cluster %s: no rollout has finished an operation on it (see: flotilla cluster list)", args[0])
			}
			if f.Output == "json" {
				return printJSON(cmd.OutOrStdout(), entries)
			}
			return printHistory(cmd.OutOrStdout(), entries)
		}),
	}
	f.bind(cmd)
	return cmd
}

// historyEntry is one workflow's operation on a cluster, as it ended.
type historyEntry struct {
	WorkflowID string `json:"workflowId"`
	// RequestedBy is who asked for the workflow (for a rollback, who asked
	// to roll back), as its request in the requests topic says.
	RequestedBy     string              `json:"requestedBy,omitempty"`
	Operation       rollout.Operation   `json:"operation"`
	State           records.TargetState `json:"state"`
	PreviousVersion string              `json:"previousVersion,omitempty"`
	Version         string              `json:"version,omitempty"`
	Attempts        int                 `json:"attempts"`
	StartedAt       *time.Time          `json:"startedAt,omitempty"`
	FinishedAt      time.Time           `json:"finishedAt"`
	Reason          string              `json:"reason,omitempty"`
}

// readHistory reads the history of cluster id from its one partition of
// the history topic, decoding only its records, oldest first.
func readHistory(ctx context.Context, cfg backbone.Config, id string) ([]historyEntry, error) {
	topic := cfg.Names().History
	parts, err := loadPartitioning(ctx, cfg, topic)
	if err != nil {
		return nil, err
	}
	byWorkflow := map[string]historyEntry{}
	prefix := id + "/"
	err = logtable.ReadToEnd(ctx, cfg.Opts(), topic, parts.of(topic, id), func(r *kgo.Record) {
		key := string(r.Key)
		if !strings.HasPrefix(key, prefix) {
			return
		}
		if r.Value == nil {
			delete(byWorkflow, key)
			return
		}
		rec, err := records.DecodeWorkflowRecord(r.Value)
		if err != nil || rec.Target == nil {
			fmt.Fprintf(os.Stderr, "warning: history record %d@%d: %v\n", r.Partition, r.Offset, err)
			return
		}
		t := rec.Target
		e := historyEntry{
			WorkflowID: t.WorkflowID, Operation: t.Operation, State: t.State, PreviousVersion: t.PreviousVersion,
			Version: t.Version, Attempts: t.Attempt, FinishedAt: t.FinishedAt, Reason: t.Reason,
		}
		if !t.StartedAt.IsZero() {
			at := t.StartedAt
			e.StartedAt = &at
		}
		byWorkflow[key] = e
	})
	if err != nil {
		return nil, err
	}
	entries := make([]historyEntry, 0, len(byWorkflow))
	for _, e := range byWorkflow {
		entries = append(entries, e)
	}
	if err := addRequesters(ctx, cfg, entries); err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool {
		if !entries[i].FinishedAt.Equal(entries[j].FinishedAt) {
			return entries[i].FinishedAt.Before(entries[j].FinishedAt)
		}
		return entries[i].WorkflowID < entries[j].WorkflowID
	})
	return entries, nil
}

// addRequesters fills in who asked for each entry's workflow, from the
// requests of those workflows: on their partitions of the requests topic,
// decoding only the records keyed by one of them (a submit, keyed by the
// workflow ID; a rollback, keyed ID/request).
func addRequesters(ctx context.Context, cfg backbone.Config, entries []historyEntry) error {
	if len(entries) == 0 {
		return nil
	}
	topic := cfg.Names().Requests
	parts, err := loadPartitioning(ctx, cfg, topic)
	if err != nil {
		return err
	}
	wanted := map[string]bool{} // the workflows asked for, a rollback's by its workflow's ID
	for _, e := range entries {
		wanted[strings.TrimSuffix(e.WorkflowID, "/rollback")] = true
	}
	ids := slices.Sorted(maps.Keys(wanted))
	who := map[string]string{}
	err = logtable.ReadToEnd(ctx, cfg.Opts(), topic, parts.of(topic, ids...), func(r *kgo.Record) {
		id, _, _ := strings.Cut(string(r.Key), "/")
		if !wanted[id] || r.Value == nil {
			return
		}
		req, err := records.DecodeRequest(r.Value)
		if err != nil {
			return // audit names it; it asked for nothing the planner did
		}
		switch {
		case req.Submit != nil && req.Envelope.ID == id:
			who[id] = req.Envelope.Principal
		case req.Control != nil && req.Control.Action == records.ActionRollback && req.Control.WorkflowID == id:
			who[records.RollbackID(id)] = req.Envelope.Principal
		}
	})
	if err != nil {
		return err
	}
	for i := range entries {
		entries[i].RequestedBy = who[entries[i].WorkflowID]
	}
	return nil
}

func printHistory(out io.Writer, entries []historyEntry) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FINISHED\tWORKFLOW\tASKED BY\tOPERATION\tSTATE\tVERSION\tREASON")
	for _, e := range entries {
		version := e.Version
		if e.PreviousVersion != "" && e.Version != "" && e.PreviousVersion != e.Version {
			version = e.PreviousVersion + " → " + e.Version
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.FinishedAt.UTC().Format(time.RFC3339), e.WorkflowID,
			e.RequestedBy, e.Operation, e.State, version, e.Reason)
	}
	return tw.Flush()
}
