package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
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
	var file, reqID string
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
			id, retry := requestID(reqID)
			req := records.Request{
				Envelope: records.Envelope{ID: id, Time: now().UTC(), Principal: principal(cfg)},
				Submit:   &records.SubmitRollout{Spec: spec},
			}
			out := cmd.OutOrStdout()
			if noWait {
				if err := produceRequest(ctx, cfg, id, req); err != nil {
					return err
				}
				fmt.Fprintln(out, id)
				return nil
			}
			// The planner answers with the workflow's first row, under
			// the request ID.
			w, err := sendRequest(ctx, cfg, id, req, retry, []string{id}, func(w *records.Workflow) bool { return w.ID == id })
			if err != nil {
				return err
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
	bindRequestID(cmd, &reqID)
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
	var reason, phase, reqID string
	cmd := &cobra.Command{
		Use:   string(action) + " ID",
		Short: short,
		Long: short + `.

The request goes to the requests topic, keyed WORKFLOW/REQUEST so that it
reaches the planner that owns the workflow; the command waits until the
planner has applied it (or refused it, saying why). It reads the planner's
answer from the partitions of the workflows topic that can hold it, from
their ends as they were before the request was sent.`,
		Args: cobra.ExactArgs(1),
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, args []string) error {
			workflowID := args[0]
			id, retry := requestID(reqID)
			req := records.Request{
				Envelope: records.Envelope{ID: id, Time: now().UTC(), Principal: principal(cfg)},
				Control:  &records.ControlWorkflow{WorkflowID: workflowID, Action: action, Reason: reason, Phase: phase},
			}
			// Applied, the workflow's next row names the request; refused,
			// the request gets a rejected row of its own.
			w, err := sendRequest(ctx, cfg, records.ControlKey(workflowID, id), req, retry, []string{workflowID, id}, func(w *records.Workflow) bool {
				return w.ID == id || (w.ID == workflowID && w.LastControl == id)
			})
			if err != nil {
				return err
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
	bindRequestID(cmd, &reqID)
	if action == records.ActionApprove {
		cmd.Flags().StringVar(&phase, "phase", "", "approve only if the rollout waits at this phase's gate")
	}
	return cmd
}

// requestID returns the ID of the request to send: given (a retry of a
// request sent before), or a new one.
func requestID(given string) (id string, retry bool) {
	if given != "" {
		return given, true
	}
	return uuid.NewString(), false
}

func bindRequestID(cmd *cobra.Command, id *string) {
	cmd.Flags().StringVar(id, "id", "", "send the request under this ID (default: a new one); the ID of a request sent before retries it, "+
		"as when a command timed out: the planner acts on an ID once, and its answer is looked for from the start of the log")
}

func produceRequest(ctx context.Context, cfg backbone.Config, key string, req records.Request) error {
	value, err := encodeUserRecord(ctx, req)
	if err != nil {
		return err
	}
	return produce(ctx, cfg, &kgo.Record{Topic: cfg.Names().Requests, Key: []byte(key), Value: value})
}

// sendRequest produces req under key to the requests topic and waits for
// the planner's answer: the first header row of the workflows topic, keyed
// by one of answerKeys, that answered accepts. It reads only the
// partitions that hold rows of those keys, from their ends captured before
// producing, so none of the history before is read. A retry reads them
// from their start instead: the planner acts on a request ID once, so the
// answer to a request sent before may be anywhere in the log, and
// nothing new may come.
func sendRequest(ctx context.Context, cfg backbone.Config, key string, req records.Request, retry bool, answerKeys []string,
	answered func(*records.Workflow) bool) (records.Workflow, error) {
	topic := cfg.Names().Workflows
	parts, err := loadPartitioning(ctx, cfg, topic)
	if err != nil {
		return records.Workflow{}, err
	}
	from := map[int32]kgo.Offset{}
	partitions := parts.of(topic, answerKeys...)
	if retry {
		for _, p := range partitions {
			from[p] = kgo.NewOffset().AtStart()
		}
	} else {
		ends, err := logtable.EndOffsets(ctx, cfg.Opts(), topic, partitions)
		if err != nil {
			return records.Workflow{}, err
		}
		for p, end := range ends {
			from[p] = kgo.NewOffset().At(end)
		}
	}
	if err := produceRequest(ctx, cfg, key, req); err != nil {
		return records.Workflow{}, err
	}
	id := req.Envelope.ID
	var answer records.Workflow
	err = logtable.Follow(ctx, cfg.Opts(), topic, from, func(r *kgo.Record) bool {
		if r.Value == nil || !slices.Contains(answerKeys, string(r.Key)) {
			return false
		}
		rec, err := records.DecodeWorkflowRecord(r.Value)
		if err != nil || rec.Workflow == nil || !answered(rec.Workflow) {
			return false
		}
		answer = *rec.Workflow
		return true
	})
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return records.Workflow{}, fmt.Errorf("request %s was sent, but the planner did not answer in time (is it running?)", id)
	case err != nil:
		return records.Workflow{}, fmt.Errorf("request %s was sent, but: %w", id, err)
	}
	return answer, nil
}

// readWorkflows rebuilds every workflow from the workflows topic, with the
// planner's own code.
func readWorkflows(ctx context.Context, cfg backbone.Config) (*decide.State, error) {
	return readWorkflowRows(ctx, cfg, nil, func([]byte) bool { return true })
}

// readWorkflow rebuilds workflow id (and its rollback, if any) from the
// one partition of the workflows topic that holds its rows, decoding only
// those; nil if it has none.
func readWorkflow(ctx context.Context, cfg backbone.Config, id string) (*decide.Workflow, error) {
	topic := cfg.Names().Workflows
	parts, err := loadPartitioning(ctx, cfg, topic)
	if err != nil {
		return nil, err
	}
	s, err := readWorkflowRows(ctx, cfg, parts.of(topic, id), func(key []byte) bool { return workflowKey(key, id) })
	if err != nil {
		return nil, err
	}
	w, ok := s.Workflows[id]
	if !ok || w.State == "" {
		return nil, nil
	}
	return w, nil
}

// readWorkflowRows reads partitions (nil: all) of the workflows topic up to
// their ends as they are now, applying the rows whose key keep accepts.
func readWorkflowRows(ctx context.Context, cfg backbone.Config, partitions []int32, keep func(key []byte) bool, opts ...logtable.ReadOption) (*decide.State, error) {
	s := decide.NewState(nil, nil)
	err := logtable.ReadToEnd(ctx, cfg.Opts(), cfg.Names().Workflows, partitions, func(r *kgo.Record) {
		if keep(r.Key) {
			applyWorkflowRow(s, r)
		}
	}, opts...)
	s.Reindex()
	return s, err
}

// applyWorkflowRow applies a record of the workflows topic to s and
// returns the row it held: nil for a tombstone (a compacted workflow's
// target) or a row that cannot be decoded, which is warned about.
func applyWorkflowRow(s *decide.State, r *kgo.Record) *records.WorkflowRecord {
	if r.Value == nil {
		s.ApplyTombstone(string(r.Key))
		return nil
	}
	rec, err := records.DecodeWorkflowRecord(r.Value)
	if err != nil {
		fmt.Fprintf(os.Stderr, "warning: workflow row %d@%d: %v\n", r.Partition, r.Offset, err)
		return nil
	}
	s.ApplyRow(r.Partition, rec)
	return &rec
}

func rolloutStatusCommand() *cobra.Command {
	var f clientFlags
	var showClusters, watch bool
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "Show a rollout's state and its progress per phase and wave",
		Long: `status reads the one partition of the workflows topic that holds the
rollout's rows, up to its end as it is when status starts.

With --watch it then follows that partition from where the read ended and
shows the progress again as it changes, until the rollout ends: on a
terminal, a bar per phase redrawn in place; otherwise (a pipe, a file, a CI
log) a plain line for each change; with -o json, one Progress object per
line (JSON lines). --timeout bounds the first read only; Ctrl-C stops.

The exit code of --watch tells how the rollout ended, so that a script can
run "flotilla rollout status $ID --watch && next-step":

  0    succeeded
  1    the command itself failed (Kafka unreachable, no such rollout, ...)
  2    failed
  3    cancelled
  4    rolled back (its rollback is ID/rollback)
  5    rejected
  130  interrupted (Ctrl-C) before the rollout ended`,
		Args: cobra.ExactArgs(1),
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, args []string) error {
			if watch {
				if showClusters && f.Output != "json" {
					return errors.New("--clusters does not go with --watch (-o json --watch has every cluster)")
				}
				// The first read is bounded by --timeout; the watch
				// lasts as long as the rollout, or until Ctrl-C.
				return watchStatus(ctx, cmd.Context(), cfg, args[0], newProgressView(cmd.OutOrStdout(), f.Output == "json"))
			}
			w, err := readWorkflow(ctx, cfg, args[0])
			if err != nil {
				return err
			}
			if w == nil {
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
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the progress until the rollout ends; the exit code tells how it ended (see above)")
	return cmd
}

func printProgress(out io.Writer, p decide.Progress, showClusters bool) {
	fmt.Fprintf(out, "rollout %q (%s)\n", p.Name, p.ID)
	fmt.Fprintf(out, "state:     %s\n", p.State)
	if p.Reason != "" {
		fmt.Fprintf(out, "reason:    %s\n", p.Reason)
	}
	op := p.Operation.String()
	if p.RollbackOf != "" {
		op += " undone: each cluster back to the version or config it had before " + p.RollbackOf
	}
	fmt.Fprintf(out, "operation: %s\n", op)
	if p.Rollback != "" {
		fmt.Fprintf(out, "rollback:  %s (flotilla rollout status %s)\n", p.Rollback, p.Rollback)
	}
	if p.Compacted {
		fmt.Fprintf(out, "clusters:  %d; their rows were removed after the retention (each cluster's: flotilla cluster history ID)\n", p.Targets)
		return
	}
	fmt.Fprintf(out, "clusters:  %d: %d succeeded, %d failed, %d running, %d pending\n", p.Targets, p.Succeeded, p.Failed, p.Running, p.Pending)
	if p.Unplanned > 0 {
		fmt.Fprintf(out, "planning:  %d of %d targets written; the rollout starts once all are\n", p.Targets, p.Targets+p.Unplanned)
	}
	if p.ResumeAt != nil && p.State == records.WorkflowPaused {
		fmt.Fprintf(out, "resumes:   by itself at %s, unless a recovered cluster relapses\n", p.ResumeAt.Local().Format(time.RFC3339))
	}
	if p.Gate != "" {
		fmt.Fprintf(out, "gate:      waiting for approval at %s (flotilla rollout approve %s)\n", p.Gate, p.ID)
	}
	for _, a := range p.Approvals {
		fmt.Fprintf(out, "approvals: %s\n", a)
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
