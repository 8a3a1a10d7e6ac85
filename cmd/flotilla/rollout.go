package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

func rolloutCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "rollout", Short: "Submit rollouts and follow their progress"}
	cmd.AddCommand(rolloutSubmitCommand(), rolloutStatusCommand(), rolloutListCommand(),
		rolloutPlanCommand(),
		rolloutControlCommand(records.ActionApprove, "Approve the gate a rollout waits at, so it goes on"),
		rolloutControlCommand(records.ActionPause, "Pause a rollout: nothing new starts; operations in flight finish"),
		rolloutControlCommand(records.ActionResume, "Resume a paused rollout; the failures that paused it are acknowledged"),
		rolloutControlCommand(records.ActionRetry, "Retry a rollout's failed clusters with the same plan, from the earliest wave that has one"),
		rolloutControlCommand(records.ActionCancel, "Cancel a rollout: nothing new starts; operations in flight finish"),
		rolloutControlCommand(records.ActionRollback, "Roll a rollout back: once its operations in flight finish, undo it on the clusters it changed, newest first, under its own pacing"))
	return cmd
}

func rolloutSubmitCommand() *cobra.Command {
	var f clientFlags
	var file string
	var noWait bool
	cmd := &cobra.Command{
		Use:   "submit -f SPEC.yaml",
		Short: "Submit a rollout; prints its workflow ID on the last line",
		Long: `submit reads a rollout spec (YAML), checks it, produces a request to the
requests topic and waits for the planner to accept or reject it. The
workflow ID (the request ID) is printed on the last line.`,
		Args: cobra.NoArgs,
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, _ []string) error {
			data, err := readSpecFile(file)
			if err != nil {
				return err
			}
			// Only the shape is checked here: the planner validates the
			// request, so that a rejection is told in one place, as a
			// notification, whichever client sent it.
			spec, err := rollout.ParseYAML(data)
			if err != nil {
				return fmt.Errorf("%s:\n%w", file, err)
			}
			id := uuid.NewString()
			value, err := records.Encode(records.Request{
				Envelope: records.Envelope{ID: id, Time: now().UTC(), Principal: principal()},
				Submit:   &records.SubmitRollout{Spec: spec},
			})
			if err != nil {
				return err
			}
			if err := produce(ctx, cfg, &kgo.Record{Topic: cfg.Names().Requests, Key: []byte(id), Value: value}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if noWait {
				fmt.Fprintln(out, id)
				return nil
			}
			w, err := waitForWorkflow(ctx, cfg, id)
			if err != nil {
				return fmt.Errorf("request %s was sent, but: %w", id, err)
			}
			if w.State == records.WorkflowRejected {
				return fmt.Errorf("request %s rejected: %s", id, w.Reason)
			}
			fmt.Fprintf(out, "rollout %q accepted: %d clusters in %d phases\n", spec.Name, w.Targets, len(w.Phases))
			fmt.Fprintln(out, id)
			return nil
		}),
	}
	f.bind(cmd)
	cmd.Flags().StringVarP(&file, "file", "f", "", "rollout spec (YAML); - reads standard input")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "print the ID once the request is written, without waiting for the planner")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

func readSpecFile(file string) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(os.Stdin)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	return data, nil
}

func rolloutControlCommand(action records.ControlAction, short string) *cobra.Command {
	var f clientFlags
	var reason, phase string
	cmd := &cobra.Command{
		Use:   string(action) + " ID",
		Short: short,
		Long: short + `.

The request goes to the requests topic, keyed WORKFLOW/REQUEST so that it
reaches the planner that owns the workflow; the command waits until the
planner has applied it (or refused it, saying why).`,
		Args: cobra.ExactArgs(1),
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, args []string) error {
			workflowID, id := args[0], uuid.NewString()
			value, err := records.Encode(records.Request{
				Envelope: records.Envelope{ID: id, Time: now().UTC(), Principal: principal()},
				Control:  &records.ControlWorkflow{WorkflowID: workflowID, Action: action, Reason: reason, Phase: phase},
			})
			if err != nil {
				return err
			}
			if err := produce(ctx, cfg, &kgo.Record{Topic: cfg.Names().Requests, Key: []byte(records.ControlKey(workflowID, id)), Value: value}); err != nil {
				return err
			}
			w, err := awaitWorkflow(ctx, cfg, func(t *logtable.Table[records.WorkflowRecord]) (records.Workflow, bool) {
				if rec, ok := t.Get(id); ok && rec.Workflow != nil {
					return *rec.Workflow, true // refused
				}
				rec, ok := t.Get(workflowID)
				if ok && rec.Workflow != nil && rec.Workflow.LastControl == id {
					return *rec.Workflow, true
				}
				return records.Workflow{}, false
			})
			if err != nil {
				return fmt.Errorf("request %s was sent, but: %w", id, err)
			}
			if w.State == records.WorkflowRejected {
				return errors.New(w.Reason)
			}
			line := fmt.Sprintf("rollout %s is %s", workflowID, w.State)
			if w.Reason != "" {
				line += ": " + w.Reason
			}
			fmt.Fprintln(cmd.OutOrStdout(), line)
			return nil
		}),
	}
	f.bind(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the audit trail and the notification")
	if action == records.ActionApprove {
		cmd.Flags().StringVar(&phase, "phase", "", "approve only if the rollout waits at this phase's gate")
	}
	return cmd
}

// waitForWorkflow follows the workflows topic until the planner has
// written the workflow's first row.
func waitForWorkflow(ctx context.Context, cfg backbone.Config, id string) (records.Workflow, error) {
	return awaitWorkflow(ctx, cfg, func(t *logtable.Table[records.WorkflowRecord]) (records.Workflow, bool) {
		rec, ok := t.Get(id)
		if !ok || rec.Workflow == nil {
			return records.Workflow{}, false
		}
		return *rec.Workflow, true
	})
}

// awaitWorkflow follows the workflows topic until found finds the row it
// waits for.
func awaitWorkflow(ctx context.Context, cfg backbone.Config, found func(*logtable.Table[records.WorkflowRecord]) (records.Workflow, bool)) (records.Workflow, error) {
	table := logtable.New(cfg.Names().Workflows, cfg.Opts(), func(r *kgo.Record) (records.WorkflowRecord, error) {
		return records.DecodeWorkflowRecord(r.Value)
	}, logtable.WithLogger[records.WorkflowRecord](cfg.Log()))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go table.Run(ctx)
	var w records.Workflow
	err := table.WaitFor(ctx, func(t *logtable.Table[records.WorkflowRecord]) bool {
		var ok bool
		w, ok = found(t)
		return ok
	})
	if errors.Is(err, context.DeadlineExceeded) {
		return records.Workflow{}, errors.New("the planner did not answer in time (is it running?)")
	}
	return w, err
}

// readWorkflows rebuilds every workflow from the workflows topic, with the
// planner's own code.
func readWorkflows(ctx context.Context, cfg backbone.Config) (*decide.State, error) {
	s := decide.NewState(nil, nil)
	err := logtable.ReadToEnd(ctx, cfg.Opts(), cfg.Names().Workflows, nil, func(r *kgo.Record) {
		if r.Value == nil {
			return
		}
		rec, err := records.DecodeWorkflowRecord(r.Value)
		if err != nil {
			fmt.Fprintf(os.Stderr, "warning: workflow row %d@%d: %v\n", r.Partition, r.Offset, err)
			return
		}
		s.ApplyRow(r.Partition, rec)
	})
	s.Reindex()
	return s, err
}

func rolloutStatusCommand() *cobra.Command {
	var f clientFlags
	var showClusters bool
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "Show a rollout's state and its progress per phase and wave",
		Args:  cobra.ExactArgs(1),
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, args []string) error {
			s, err := readWorkflows(ctx, cfg)
			if err != nil {
				return err
			}
			w, ok := s.Workflows[args[0]]
			if !ok || w.State == "" {
				return fmt.Errorf("no rollout %s (see: flotilla rollout list)", args[0])
			}
			p := w.Progress()
			if f.Output == "json" {
				return printJSON(cmd.OutOrStdout(), p)
			}
			printProgress(cmd.OutOrStdout(), p, showClusters)
			return nil
		}),
	}
	f.bind(cmd)
	cmd.Flags().BoolVar(&showClusters, "clusters", false, "list every cluster of every wave")
	return cmd
}

func printProgress(out io.Writer, p decide.Progress, showClusters bool) {
	fmt.Fprintf(out, "rollout %q (%s)\n", p.Name, p.ID)
	fmt.Fprintf(out, "state:     %s\n", p.State)
	if p.Reason != "" {
		fmt.Fprintf(out, "reason:    %s\n", p.Reason)
	}
	op := string(p.Operation.Kind)
	if p.Operation.Version != "" {
		op += " to " + p.Operation.Version
	}
	if len(p.Operation.Config) > 0 {
		op += " " + formatLabels(p.Operation.Config)
	}
	if len(p.Operation.Reset) > 0 {
		op += " reset " + strings.Join(p.Operation.Reset, ",")
	}
	if p.RollbackOf != "" {
		op += " undone: each cluster back to the version or config it had before " + p.RollbackOf
	}
	fmt.Fprintf(out, "operation: %s\n", op)
	if p.Rollback != "" {
		fmt.Fprintf(out, "rollback:  %s (flotilla rollout status %s)\n", p.Rollback, p.Rollback)
	}
	fmt.Fprintf(out, "clusters:  %d: %d succeeded, %d failed, %d running, %d pending\n", p.Targets, p.Succeeded, p.Failed, p.Running, p.Pending)
	if p.ResumeAt != nil && p.State == records.WorkflowPaused {
		fmt.Fprintf(out, "resumes:   by itself at %s, unless a recovered cluster relapses\n", p.ResumeAt.Local().Format(time.RFC3339))
	}
	if p.Gate != "" {
		fmt.Fprintf(out, "gate:      waiting for approval at %s (flotilla rollout approve %s)\n", p.Gate, p.ID)
	}
	if p.Waiting != "" && p.State == records.WorkflowRunning {
		fmt.Fprintf(out, "waiting:   %s\n", p.Waiting)
	}
	if p.BakeUntil != nil && p.State == records.WorkflowRunning {
		fmt.Fprintf(out, "baking until %s\n", p.BakeUntil.Local().Format(time.RFC3339))
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PHASE\tWAVE\tSTATE\tCLUSTERS\tSUCCEEDED\tFAILED\tRUNNING\tPENDING")
	for _, ph := range p.Phases {
		fmt.Fprintf(tw, "%s\t\t%s\t%d\t%d\t%d\t%d\t%d\n", ph.Name, ph.State, ph.Targets, ph.Succeeded, ph.Failed, ph.Running, ph.Pending)
		for _, w := range ph.Waves {
			fmt.Fprintf(tw, "\t%d\t%s\t%d\t%d\t%d\t%d\t%d\n", w.Wave, w.State, w.Targets, w.Succeeded, w.Failed, w.Running, w.Pending)
		}
	}
	tw.Flush()
	if !showClusters {
		return
	}
	for _, ph := range p.Phases {
		for _, w := range ph.Waves {
			fmt.Fprintf(out, "\n%s wave %d:\n", ph.Name, w.Wave)
			for _, c := range w.Clusters {
				line := fmt.Sprintf("  %-20s %s", c.ID, c.State)
				if op := c.Operation; op != nil && op.Version != "" {
					line += " (to " + op.Version + ")"
				} else if op != nil {
					line += " (" + formatLabels(op.Config) + " reset " + strings.Join(op.Reset, ",") + ")"
				}
				if c.Reason != "" {
					line += ": " + c.Reason
				}
				fmt.Fprintln(out, line)
			}
		}
	}
}

func rolloutListCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List rollouts, newest first",
		Args:  cobra.NoArgs,
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, _ []string) error {
			s, err := readWorkflows(ctx, cfg)
			if err != nil {
				return err
			}
			var list []decide.Progress
			for _, w := range s.Workflows {
				if w.State != "" {
					list = append(list, w.Progress())
				}
			}
			sort.Slice(list, func(i, j int) bool { return list[i].CreatedAt.After(list[j].CreatedAt) })
			if f.Output == "json" {
				for i := range list {
					list[i].Phases = nil // the list is a summary; status has the details
				}
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSTATE\tCLUSTERS\tSUCCEEDED\tFAILED\tCREATED\tREASON")
			for _, p := range list {
				reason := p.Reason
				if len(reason) > 60 {
					reason = reason[:57] + "..."
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", p.ID, p.Name, p.State, p.Targets, p.Succeeded, p.Failed,
					p.CreatedAt.Local().Format("2006-01-02 15:04:05"), strings.ReplaceAll(reason, "\n", " "))
			}
			return tw.Flush()
		}),
	}
	f.bind(cmd)
	return cmd
}
