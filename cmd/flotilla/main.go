// Command flotilla is Flotilla's CLI: it registers clusters, submits and
// follows rollouts, replays the log for audit, runs any of the four
// services, and runs everything at once on an embedded broker (`dev`).
//
// Every client command only produces to the requests (or inventory, or
// policies) topic and reads topics: any Kafka client can do the same.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/flotilla-fleet/flotilla/internal/servicecmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "flotilla",
		Short:         "Roll upgrades, restarts and config changes across a fleet of Kafka clusters",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(devCommand(), clusterCommand(), policyCommand(), rolloutCommand(), watchCommand(), auditCommand(), benchCommand())
	for _, svc := range []*cobra.Command{servicecmd.Planner(), servicecmd.Executor(), servicecmd.Monitor(), servicecmd.Notifier()} {
		svc.GroupID = "services"
		root.AddCommand(svc)
	}
	root.AddGroup(&cobra.Group{ID: "services", Title: "Services (each also runs alone as go run ./services/NAME):"})
	return root
}
