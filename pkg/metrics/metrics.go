// Package metrics is what Flotilla's services expose to Prometheus: a
// registry with the Go runtime and process collectors, the HTTP handler
// and server of /metrics, the franz-go client metrics of each service
// (through kprom), and each service's own metrics (Planner, Executor,
// Monitor, Notifier, Deliveries).
//
// A service is given its set (planner.Config.Metrics and so on); a nil set
// records nothing, so a service built without one behaves as before, and
// every method of a set is safe to call on a nil one. Sets are made once
// per process and service: a second set of the same service on one
// registry fails with the registry's AlreadyRegisteredError. Copies of a
// service running in one process (tests) may share one set.
//
// Nothing here scans the fleet at scrape time: every value is kept by
// the code where the thing happens.
package metrics

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flotilla-fleet/flotilla/pkg/httpserve"
)

// Path is where Serve answers.
const Path = "/metrics"

// NewRegistry returns a registry holding the Go runtime's and the
// process's collectors (go_*, process_*), for the sets of the services
// that run in this process.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves what g gathers in the Prometheus exposition formats.
// It is what Serve mounts at Path; mount it on another server (the
// dashboard's) to expose the same metrics there. A collector that fails
// is reported in the scrape's errors, the others are still served.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Listen opens addr ("host:port", ":9100", "127.0.0.1:0") for
// ServeListener; its error names the address. Opening it before the
// service starts makes a port already taken fail the start, not later.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve listens on addr and serves g's metrics at Path until ctx ends
// (see ServeListener), over plain HTTP.
func Serve(ctx context.Context, addr string, g prometheus.Gatherer) error {
	ln, err := Listen(addr)
	if err != nil {
		return err
	}
	return ServeListener(ctx, ln, g, "")
}

// shutdownGrace is how long a scrape under way may go on once ctx ends.
const shutdownGrace = 2 * time.Second

// ServeListener serves g's metrics at Path on ln, with the TLS and users
// of webConfig ("" for none; package httpserve), until ctx ends, then
// shuts the server down (scrapes under way get shutdownGrace) and returns
// nil. It closes ln. It returns an error only if serving fails.
func ServeListener(ctx context.Context, ln net.Listener, g prometheus.Gatherer, webConfig string) error {
	mux := http.NewServeMux()
	mux.Handle(Path, Handler(g))
	if err := httpserve.Serve(ctx, ln, mux, httpserve.Options{WebConfig: webConfig, Grace: shutdownGrace}); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// register registers the collectors on reg, stopping at the first error.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}
