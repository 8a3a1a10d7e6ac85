package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/metrics"
	"github.com/flotilla-fleet/flotilla/pkg/metrics/metricstest"
)

// TestServeListensAndStops serves a registry on a free port, scrapes it,
// and stops with its context; a port taken fails Listen, naming it.
func TestServeListensAndStops(t *testing.T) {
	ln, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if _, err := metrics.Listen(addr); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("Listen on a port taken: %v, want an error naming %s", err, addr)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- metrics.ServeListener(ctx, ln, metrics.NewRegistry(), "") }()
	fams, err := metricstest.Scrape(t.Context(), "http://"+addr+metrics.Path)
	if err != nil {
		t.Fatal(err)
	}
	if fams.Value("go_goroutines") == 0 || !fams.Has("process_cpu_seconds_total") {
		t.Errorf("the scrape has no Go or process metrics: %d families", len(fams))
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeListener returned %v once its context ended, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeListener did not return once its context ended")
	}
	if err := metrics.Serve(t.Context(), addr+"0000", metrics.NewRegistry()); err == nil || !strings.Contains(err.Error(), addr+"0000") {
		t.Errorf("Serve on a bad address: %v, want an error naming it", err)
	}
}

// TestNilSetsRecordNothing calls every method of nil sets: a service
// built without metrics calls them all the same.
func TestNilSetsRecordNothing(t *testing.T) {
	var p *metrics.Planner
	p.SetWorkflows("running", 1)
	p.ObserveDecision(time.Second)
	p.ObserveCatchUp("inventory", time.Second)
	var e *metrics.Executor
	e.Started()
	e.Ended(metrics.Succeeded, time.Second)
	var m *metrics.Monitor
	m.ObserveProbe(time.Second, true)
	m.ProbeFailed()
	m.Published(metrics.SignalChange)
	m.SetDrifted(3)
	var n *metrics.Notifier
	n.Written("workflow.succeeded", "info")
	n.Deliveries().Delivered("webhook")
	n.Deliveries().Failed("webhook")
	for _, opts := range [][]kgo.Opt{p.ClientOpts(), e.ClientOpts(), m.ClientOpts(), n.ClientOpts()} {
		if opts != nil {
			t.Errorf("a nil set has client options %v", opts)
		}
	}
}

// TestASecondSetOfAServiceIsRefused: two sets of one service on one
// registry would count apart under the same names.
func TestASecondSetOfAServiceIsRefused(t *testing.T) {
	reg := metrics.NewRegistry()
	if _, err := metrics.NewExecutor(reg); err != nil {
		t.Fatal(err)
	}
	_, err := metrics.NewExecutor(reg)
	if are := (prometheus.AlreadyRegisteredError{}); !errors.As(err, &are) {
		t.Errorf("a second executor set: %v, want an AlreadyRegisteredError", err)
	}
	if _, err := metrics.NewPlanner(reg); err != nil {
		t.Errorf("another service's set on the same registry: %v", err)
	}
}

// TestKafkaHooksCountEveryClientOfAService makes several clients with one
// set's options, short-lived ones too, as a service does: none panics,
// what they produce and fetch adds up under the service's label, and
// closing one leaves the metrics of the others.
func TestKafkaHooksCountEveryClientOfAService(t *testing.T) {
	reg := metrics.NewRegistry()
	set, err := metrics.NewMonitor(reg)
	if err != nil {
		t.Fatal(err)
	}
	topic := fmt.Sprintf("metrics-hooks-%d", time.Now().UnixNano())
	admCl, err := kgo.NewClient(brokertest.Opts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	if _, err := kadm.NewClient(admCl).CreateTopic(t.Context(), 1, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	client := func(extra ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append(append(brokertest.Opts(t), set.ClientOpts()...), extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	short := client(kgo.DefaultProduceTopic(topic))
	if err := short.ProduceSync(t.Context(), &kgo.Record{Value: []byte("first")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	short.Close()
	long := client(kgo.DefaultProduceTopic(topic), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer long.Close()
	if err := long.ProduceSync(t.Context(), &kgo.Record{Value: []byte("second")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for got := 0; got < 2; {
		fetches := long.PollFetches(t.Context())
		if err := fetches.Err0(); err != nil {
			t.Fatal(err)
		}
		got += fetches.NumRecords()
	}
	srv := httptest.NewServer(metrics.Handler(reg))
	defer srv.Close()
	fams, err := metricstest.Scrape(t.Context(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if got := fams.Value("kgo_produce_records_total", "service", "monitor", "topic", topic); got != 2 {
		t.Errorf("kgo_produce_records_total = %v, want the 2 records of both clients", got)
	}
	if got := fams.Value("kgo_fetch_records_total", "service", "monitor", "topic", topic); got != 2 {
		t.Errorf("kgo_fetch_records_total = %v, want 2", got)
	}
	if fams.Value("kgo_produce_bytes_total", "service", "monitor") == 0 || fams.Value("kgo_connects_total", "service", "monitor") == 0 {
		t.Error("no bytes produced or connections counted")
	}
	for _, name := range []string{"kgo_buffered_produce_records_total", "kgo_buffered_fetch_records_total", "kgo_buffered_produce_bytes", "kgo_buffered_fetch_bytes"} {
		if fam := fams[name]; fam == nil || len(fam.GetMetric()) != 1 {
			t.Errorf("%s: %v, want one series, summed over the open clients", name, fam)
		}
	}
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("scrape: %s", resp.Status)
	}
}

// recorder records the names of the metrics registered through it.
type recorder struct {
	prometheus.Registerer
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) Register(c prometheus.Collector) error {
	descs := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(descs); close(descs) }()
	for d := range descs {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return r.Registerer.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// registeredNames returns the name of every metric a process running the
// four services registers: Flotilla's, kprom's (once a client is made) and
// the Go and process collectors'.
func registeredNames(t *testing.T) map[string]bool {
	t.Helper()
	reg := metrics.NewRegistry()
	rec := &recorder{Registerer: reg, names: map[string]bool{}}
	var opts []kgo.Opt
	p, err := metrics.NewPlanner(rec)
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, p.ClientOpts()...)
	for _, mk := range []func(prometheus.Registerer) error{
		func(r prometheus.Registerer) error { _, err := metrics.NewExecutor(r); return err },
		func(r prometheus.Registerer) error { _, err := metrics.NewMonitor(r); return err },
		func(r prometheus.Registerer) error { _, err := metrics.NewNotifier(r); return err },
	} {
		if err := mk(rec); err != nil {
			t.Fatal(err)
		}
	}
	// kprom registers its collectors when the first client is made.
	cl, err := kgo.NewClient(append(brokertest.Opts(t), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	cl.Close()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		rec.names[f.GetName()] = true
	}
	return rec.names
}
