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
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/flotilla-fleet/flotilla/internal/servicecmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stopProfile := profileCPU(os.Getenv("FLOTILLA_CPUPROFILE"))
	err := rootCommand().ExecuteContext(ctx)
	stopProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// profileCPU writes a CPU profile of this process to prefix.<command>.<pid>
// until the returned function is called, if prefix is set (the environment's
// FLOTILLA_CPUPROFILE): for a developer looking at where a service's time
// goes, also under flotilla bench, whose service processes inherit it.
func profileCPU(prefix string) (stop func()) {
	if prefix == "" {
		return func() {}
	}
	name := "flotilla"
	if len(os.Args) > 1 {
		name = os.Args[1]
	}
	f, err := os.Create(fmt.Sprintf("%s.%s.%d", prefix, name, os.Getpid()))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "warning: no CPU profile:", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
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
