// Command monitor runs Flotilla's monitor service on its own:
//
//	go run ./services/monitor --brokers 127.0.0.1:9092
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/flotilla-fleet/flotilla/pkg/servicecmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := servicecmd.Monitor().ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}
