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
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla-fleet/flotilla/internal/servicecmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stopProfile := profileCPU(os.Getenv("FLOTILLA_CPUPROFILE"))
	go profileHeap(ctx, os.Getenv("FLOTILLA_HEAPPROFILE"))
	err := rootCommand().ExecuteContext(ctx)
	stopProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(exitCode(err)) // 1, or a code of the command's own (rollout status --watch)
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

// profileHeap writes the heap in use to prefix.<command>.<pid> every two
// seconds until ctx ends, if prefix is set (FLOTILLA_HEAPPROFILE): what a
// service holds as it runs, for a developer looking at its memory.
func profileHeap(ctx context.Context, prefix string) {
	if prefix == "" {
		return
	}
	name := "flotilla"
	if len(os.Args) > 1 {
		name = os.Args[1]
	}
	path := fmt.Sprintf("%s.%s.%d", prefix, name, os.Getpid())
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second): // a sampling period, not a wait for a condition
		}
		f, err := os.Create(path)
		if err == nil {
			err = pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "warning: no heap profile:", err)
			return
		}
	}
}

func rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "flotilla",
		Short:         "Roll upgrades, restarts and config changes across a fleet of Kafka clusters",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(devCommand(), clusterCommand(), driftCommand(), policyCommand(), rolloutCommand(), watchCommand(), auditCommand(), aclCommand(), keysCommand(), trustCommand(), benchCommand())
	for _, svc := range []*cobra.Command{servicecmd.Planner(), servicecmd.Executor(), servicecmd.Monitor(), servicecmd.Notifier()} {
		svc.GroupID = "services"
		root.AddCommand(svc)
	}
	root.AddGroup(&cobra.Group{ID: "services", Title: "Services (each also runs alone as go run ./services/NAME):"})
	return root
}
