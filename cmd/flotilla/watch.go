package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/records"
)

func watchCommand() *cobra.Command {
	var f clientFlags
	var fromStart bool
	var workflow, cluster string
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Follow live notifications (Ctrl-C stops)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			start := kgo.NewOffset().AtEnd()
			if fromStart {
				start = kgo.NewOffset().AtStart()
			}
			cl, err := cfg.Client(
				kgo.ConsumeTopics(cfg.Names().Notifications),
				kgo.ConsumeResetOffset(start),
				kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			)
			if err != nil {
				return err
			}
			defer cl.Close()
			return follow(cmd.Context(), cl, cmd.OutOrStdout(), f.Output == "json", func(n records.Notification) bool {
				return (workflow == "" || n.WorkflowID == workflow) && (cluster == "" || n.ClusterID == cluster)
			})
		},
	}
	f.bind(cmd)
	cmd.Flags().BoolVar(&fromStart, "from-start", false, "replay the notifications kept, then follow")
	cmd.Flags().StringVar(&workflow, "workflow", "", "only notifications of this workflow")
	cmd.Flags().StringVar(&cluster, "cluster", "", "only notifications about this cluster")
	return cmd
}

// follow prints notifications until ctx ends. The notifier writes each
// exactly once and this reads committed records only: nothing repeats.
func follow(ctx context.Context, cl *kgo.Client, out io.Writer, asJSON bool, keep func(records.Notification) bool) error {
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err := fetches.Err0(); err != nil {
			fmt.Fprintln(os.Stderr, "warning:", err)
		}
		var batch []records.Notification
		fetches.EachRecord(func(r *kgo.Record) {
			n, err := records.DecodeNotification(r.Value)
			if err != nil {
				fmt.Fprintf(os.Stderr, "warning: notification %d@%d: %v\n", r.Partition, r.Offset, err)
				return
			}
			if keep(n) {
				batch = append(batch, n)
			}
		})
		// Partitions interleave: show a batch in time order.
		sort.SliceStable(batch, func(i, j int) bool { return batch[i].Envelope.Time.Before(batch[j].Envelope.Time) })
		for _, n := range batch {
			if asJSON {
				if err := printJSONLine(out, n); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintf(out, "%s  %-7s  %s\n", n.Envelope.Time.Local().Format(time.TimeOnly), strings.ToUpper(string(n.Severity)), n.Message)
		}
	}
}
