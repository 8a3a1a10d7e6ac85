// Package fleettest runs Flotilla's four services in-process against a
// broker, on a fake clock, with a simulated fleet, for integration tests.
//
// The broker is FLOTILLA_TEST_BROKERS when set (a real Kafka), otherwise
// an embedded one started once per test binary (package brokertest). Every
// Fleet gets its own namespace, so tests share a broker without seeing each
// other's topics.
package fleettest

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest/brokertest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/metrics"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
	"github.com/flotilla-fleet/flotilla/pkg/trust"
	"github.com/flotilla-fleet/flotilla/services/executor/executor"
	"github.com/flotilla-fleet/flotilla/services/monitor/monitor"
	"github.com/flotilla-fleet/flotilla/services/notifier/notifier"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
	"github.com/flotilla-fleet/flotilla/services/planner/planner"
)

// Services names the four services, in the order they start.
var Services = []string{"planner", "executor", "monitor", "notifier"}

// runID tells this test binary's namespaces from those of earlier runs.
var runID = uuid.NewString()[:6]

var nsCounter atomic.Int64

// Brokers returns the test broker's addresses, starting an embedded
// broker on first use unless FLOTILLA_TEST_BROKERS names one (see
// brokertest.Addrs).
func Brokers(t testing.TB) []string {
	t.Helper()
	return brokertest.Addrs(t)
}

// Options shape a Fleet.
type Options struct {
	Clusters    int           // simulated clusters registered (default 20)
	OpDuration  time.Duration // of a simulated operation (default 2s, fake time)
	BadVersions []string
	FailureRate float64
	Partitions  int32 // of each topic (default 3)
	// Retention is the planner's retention of finished workflows' rows
	// (default its own, a week).
	Retention time.Duration
	// Drivers registers drivers and probes besides the simulated fleet's.
	Drivers func(*drivers.Registry)
	// Metrics, if set, is the registry of the services' metrics (package
	// metrics); copies of a service share one set.
	Metrics prometheus.Registerer
	// Brokers, if set, are the broker the fleet runs on instead of the
	// test broker: a secure one (brokertest.Secure), or one that the test
	// compacts (brokertest.ForCompaction, Fleet.Compact).
	Brokers []string
	// ClientOpts, if set, are the client options of each service
	// ("planner", "executor", "monitor", "notifier") and of the harness's
	// own clients ("harness"): their credentials on a secure broker.
	ClientOpts func(who string) []kgo.Opt
	// Log, if set, also gets every log line of the services and the
	// harness, at debug level: for a test that reads what they log.
	Log io.Writer
	// Trust is what the services require of the records users write
	// (package trust). With Trust.Require, the inventory is signed by
	// Operator as principal OperatorName, and users' records carry the
	// real time (the broker stamps them with its own).
	Trust        trust.Config
	Operator     keys.Signer
	OperatorName string
	// ClockStart is the services' fake clock's first reading (default
	// 2026-11-22 12:00 UTC): the real time, for a test whose signed
	// records must carry it and sort before what the services write.
	ClockStart time.Time
	// Setup, if set, runs once the topics exist, before the fleet is
	// registered and any service starts: to write the trust store, or to
	// apply ACLs.
	Setup func(f *Fleet)
	// PlannerKey and ExecutorKey sign the checkpoints of the services'
	// hash chains (package auditchain); nil: unsigned. The services
	// checkpoint every 100ms (real time).
	PlannerKey, ExecutorKey *keys.Signer
}

// checkpointInterval is how often the services checkpoint their chains
// in tests: often, so that a test waits little for a signed checkpoint.
const checkpointInterval = 100 * time.Millisecond

// Fleet is the four services and a simulated fleet under test.
type Fleet struct {
	t        testing.TB
	Backbone backbone.Config
	Clock    *clockwork.FakeClock
	Sim      *simfleet.Fleet
	Clusters []inventory.Cluster
	registry *drivers.Registry

	mu       sync.Mutex
	running  map[string]*service
	ctx      context.Context
	cancel   context.CancelFunc
	workflow *logtable.Table[records.WorkflowRecord]
	opts     Options
	metrics  metrics.Services // nil sets without Options.Metrics
}

type service struct {
	cancel context.CancelFunc
	done   chan error
}

// Start registers a simulated fleet and starts the four services.
func Start(t testing.TB, o Options) *Fleet {
	t.Helper()
	if o.Clusters == 0 {
		o.Clusters = 20
	}
	if o.OpDuration == 0 {
		o.OpDuration = 2 * time.Second
	}
	if o.Partitions == 0 {
		o.Partitions = 3
	}
	clock := clockwork.NewFakeClockAt(cmp.Or(o.ClockStart, time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)))
	sim, err := simfleet.New(simfleet.Options{OpDuration: o.OpDuration, BadVersions: o.BadVersions, FailureRate: o.FailureRate, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	reg := drivers.NewRegistry()
	sim.Register(reg)
	if o.Drivers != nil {
		o.Drivers(reg)
	}
	// The run's own prefix too: a broker kept between runs (a developer's)
	// must not hand one run another's topics and groups.
	ns := fmt.Sprintf("test%s%d-%s", runID, nsCounter.Add(1), strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())))
	if len(ns) > 60 {
		ns = ns[:60]
	}
	level := slog.LevelWarn
	if l := os.Getenv("FLOTILLA_TEST_LOG"); l != "" { // e.g. FLOTILLA_TEST_LOG=info to see the services at work
		_ = level.UnmarshalText([]byte(l))
	}
	var handler slog.Handler = slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level})
	if o.Log != nil {
		handler = slog.NewMultiHandler(handler, slog.NewTextHandler(o.Log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	log := slog.New(handler)
	brokers := o.Brokers
	if brokers == nil {
		brokers = Brokers(t)
	}
	f := &Fleet{
		t:        t,
		Backbone: backbone.Config{Brokers: brokers, Namespace: ns, Logger: log, ClientOpts: o.clientOpts("harness")},
		Clock:    clock,
		Sim:      sim,
		Clusters: simfleet.GenerateClusters(o.Clusters),
		registry: reg,
		running:  map[string]*service{},
		opts:     o,
	}
	if f.metrics, err = metrics.NewServices(o.Metrics); err != nil {
		t.Fatal(err)
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	t.Cleanup(f.stopAll)
	ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
	defer cancel()
	if err := f.Backbone.EnsureTopics(ctx, o.Partitions, 1); err != nil {
		t.Fatalf("create topics: %v", err)
	}
	if o.Setup != nil {
		o.Setup(f)
	}
	f.Register(f.Clusters...)
	f.workflow = logtable.New(f.Backbone.Names().Workflows, f.Backbone.Opts(), func(r *kgo.Record) (records.WorkflowRecord, error) {
		return records.DecodeWorkflowRecord(r.Value)
	})
	go f.workflow.Run(f.ctx)
	for _, name := range Services {
		f.StartService(name)
	}
	return f
}

func (o Options) clientOpts(who string) []kgo.Opt {
	if o.ClientOpts == nil {
		return nil
	}
	return o.ClientOpts(who)
}

// testWriter sends the services' warnings to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Register writes clusters to the inventory.
func (f *Fleet) Register(clusters ...inventory.Cluster) {
	f.t.Helper()
	var recs []*kgo.Record
	for _, c := range clusters {
		rec := records.ClusterRecord{
			Envelope: records.Envelope{ID: uuid.NewString(), Time: f.Clock.Now(), Principal: "test"},
			Cluster:  c,
		}
		if f.opts.Trust.Require {
			rec.Envelope.Time, rec.Envelope.Principal = time.Now(), f.opts.OperatorName
			recs = append(recs, f.SignedRecord(f.Backbone.Names().Inventory, c.ID, rec, f.opts.Operator))
			continue
		}
		recs = append(recs, f.Record(f.Backbone.Names().Inventory, c.ID, rec))
	}
	f.Produce(recs...)
}

// Record encodes v into a record for topic under key.
func (f *Fleet) Record(topic, key string, v any) *kgo.Record {
	f.t.Helper()
	value, err := records.Encode(v)
	if err != nil {
		f.t.Fatalf("encode %T: %v", v, err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(key), Value: value}
}

// SignedRecord encodes v signed by s into a record for topic under key.
func (f *Fleet) SignedRecord(topic, key string, v any, s keys.Signer) *kgo.Record {
	f.t.Helper()
	value, err := records.EncodeSigned(v, s.ID, s.Sign)
	if err != nil {
		f.t.Fatalf("encode %T: %v", v, err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(key), Value: value}
}

// Produce writes records and waits until Kafka has them.
func (f *Fleet) Produce(recs ...*kgo.Record) {
	f.t.Helper()
	if err := f.ProduceErr(recs...); err != nil {
		f.t.Fatalf("produce: %v", err)
	}
}

// ProduceErr writes records, waits until Kafka has them, and returns the
// first error: for records a broker may refuse.
func (f *Fleet) ProduceErr(recs ...*kgo.Record) error {
	f.t.Helper()
	cl, err := f.Backbone.Client()
	if err != nil {
		f.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
	defer cancel()
	return cl.ProduceSync(ctx, recs...).FirstErr()
}

// Submit produces a rollout request, as the CLI does, and returns its ID.
func (f *Fleet) Submit(spec rollout.Spec) string {
	f.t.Helper()
	id := uuid.NewString()
	f.Produce(f.Record(f.Backbone.Names().Requests, id, records.Request{
		Envelope: records.Envelope{ID: id, Time: f.Clock.Now(), Principal: "alice"},
		Submit:   &records.SubmitRollout{Spec: spec},
	}))
	return id
}

// Control produces a control request of principal (approve, pause...),
// as the CLI does, and returns its ID.
func (f *Fleet) Control(principal string, c records.ControlWorkflow) string {
	f.t.Helper()
	id := uuid.NewString()
	f.Produce(f.Record(f.Backbone.Names().Requests, records.ControlKey(c.WorkflowID, id), records.Request{
		Envelope: records.Envelope{ID: id, Time: f.Clock.Now(), Principal: principal},
		Control:  &c,
	}))
	return id
}

// StartService starts one of the four services. A name "planner#2"
// starts a second copy of the planner, with its own instance ID.
func (f *Fleet) StartService(name string) {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.running[name]; ok {
		f.t.Fatalf("%s is already running", name)
	}
	ctx, cancel := context.WithCancel(f.ctx)
	cfg := f.Backbone
	kind, copyID, _ := strings.Cut(name, "#")
	cfg.ClientOpts = f.opts.clientOpts(kind)
	if copyID == "" {
		copyID = "0"
	}
	var run func() error
	switch kind {
	case "planner":
		run = func() error {
			return planner.Run(ctx, planner.Config{Backbone: cfg, Clock: f.Clock, InstanceID: "p" + copyID, PollInterval: 20 * time.Millisecond, Retention: f.opts.Retention,
				Metrics: f.metrics.Planner, Trust: f.opts.Trust, Signer: f.opts.PlannerKey, CheckpointInterval: checkpointInterval})
		}
	case "executor":
		instance := "" // the first copy is a dynamic member, holding as "executor"
		if strings.Contains(name, "#") {
			// Other copies hold leases and grants under names of their
			// own (and so are static members, gone after a session).
			instance = "e" + copyID
			cfg.SessionTimeout = 6 * time.Second // the broker's least
		}
		run = func() error {
			return executor.Run(ctx, executor.Config{Backbone: cfg, Drivers: f.registry, Clock: f.Clock, InstanceID: instance, Metrics: f.metrics.Executor,
				Signer: f.opts.ExecutorKey, CheckpointInterval: checkpointInterval})
		}
	case "monitor":
		run = func() error {
			return monitor.Run(ctx, monitor.Config{Backbone: cfg, Probers: f.registry, Clock: f.Clock, Interval: 5 * time.Second, Heartbeat: time.Minute,
				Metrics: f.metrics.Monitor, Trust: f.opts.Trust})
		}
	case "notifier":
		run = func() error {
			return notifier.Run(ctx, notifier.Config{Backbone: cfg, InstanceID: "n" + copyID, Metrics: f.metrics.Notifier})
		}
	default:
		f.t.Fatalf("no service %q", name)
	}
	s := &service{cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- run() }()
	f.running[name] = s
}

// StopService stops a service as a crash would cut it off: its context
// ends wherever it is, and nothing it had not written survives. It fails
// the test if the service ended with an error.
func (f *Fleet) StopService(name string) {
	f.t.Helper()
	if err := f.stopService(name); err != nil {
		f.t.Errorf("%s stopped with: %v", name, err)
	}
}

// stopService stops a service and returns the error it ended with: nil
// when it stopped because it was asked to.
func (f *Fleet) stopService(name string) error {
	f.t.Helper()
	f.mu.Lock()
	s, ok := f.running[name]
	delete(f.running, name)
	f.mu.Unlock()
	if !ok {
		f.t.Fatalf("%s is not running", name)
	}
	s.cancel()
	select {
	case err := <-s.done:
		return err
	case <-time.After(30 * time.Second):
		f.t.Fatalf("%s did not stop within 30s", name)
		return nil
	}
}

// StopAll stops every running service, and returns the errors those that
// had ended by themselves ended with, by name: a test of faults judges
// them (a fault may end a service at any moment, even once the rollout it
// watched is over).
func (f *Fleet) StopAll() map[string]error {
	f.t.Helper()
	f.mu.Lock()
	names := make([]string, 0, len(f.running))
	for name := range f.running {
		names = append(names, name)
	}
	f.mu.Unlock()
	errs := map[string]error{}
	for _, name := range names {
		if err := f.stopService(name); err != nil {
			errs[name] = err
		}
	}
	return errs
}

func (f *Fleet) stopAll() {
	for name, err := range f.StopAll() {
		f.t.Errorf("%s stopped with: %v", name, err)
	}
	f.cancel()
}

// Workflow returns a workflow as the planner's rows show it now, if any.
func (f *Fleet) Workflow(id string) (*decide.Workflow, bool) {
	s := decide.NewState(nil, nil)
	for _, rec := range f.workflow.Snapshot() {
		if (rec.Workflow != nil && rec.Workflow.ID == id) || (rec.Target != nil && rec.Target.WorkflowID == id) || (rec.Spec != nil && rec.Spec.WorkflowID == id) {
			s.ApplyRow(0, rec)
		}
	}
	s.Reindex()
	w, ok := s.Workflows[id]
	return w, ok && w.State != ""
}

// Await advances the fake clock step by step until cond holds for the
// workflow, failing the test after timeout of real time. Between steps it
// lets the services catch up with what the last step changed.
func (f *Fleet) Await(id string, step, timeout time.Duration, what string, cond func(*decide.Workflow) bool) *decide.Workflow {
	f.t.Helper()
	var last *decide.Workflow
	ok := f.Eventually(step, timeout, func() bool {
		w, ok := f.Workflow(id)
		last = w
		return ok && cond(w)
	})
	if !ok {
		if last != nil {
			p := last.Progress()
			f.t.Fatalf("workflow %s: %s did not happen in %v; it is %s (%s): %d succeeded, %d failed, %d running, %d pending",
				id, what, timeout, p.State, p.Reason, p.Succeeded, p.Failed, p.Running, p.Pending)
		}
		f.t.Fatalf("workflow %s: %s did not happen in %v; no workflow row", id, what, timeout)
	}
	return last
}

// Eventually checks cond every few milliseconds of real time, advancing
// the fake clock by step each time, until it holds or timeout passes.
func (f *Fleet) Eventually(step, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		if step > 0 {
			f.Clock.Advance(step)
		}
		time.Sleep(10 * time.Millisecond) // the services run in real time; give them a moment per step
	}
	return cond()
}

// Compact makes the fleet's broker compact its compacted topics now (see
// brokertest.Compact): the fleet must run on a broker of
// brokertest.ForCompaction (Options.Brokers).
func (f *Fleet) Compact() {
	f.t.Helper()
	brokertest.Compact(f.t, f.Backbone.Brokers)
}

// ReadAll reads a topic of the fleet from the start to its end.
func (f *Fleet) ReadAll(topic string) []*kgo.Record {
	f.t.Helper()
	var out []*kgo.Record
	ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
	defer cancel()
	if err := logtable.ReadToEnd(ctx, f.Backbone.Opts(), topic, nil, func(r *kgo.Record) { out = append(out, r) }); err != nil {
		f.t.Fatalf("read %s: %v", topic, err)
	}
	return out
}

// Notifications returns every notification written so far.
func (f *Fleet) Notifications() []records.Notification {
	f.t.Helper()
	var out []records.Notification
	for _, r := range f.ReadAll(f.Backbone.Names().Notifications) {
		n, err := records.DecodeNotification(r.Value)
		if err != nil {
			f.t.Fatalf("notification %d@%d: %v", r.Partition, r.Offset, err)
		}
		out = append(out, n)
	}
	return out
}

// Operations returns every operation event written so far.
func (f *Fleet) Operations() []records.OperationEvent {
	f.t.Helper()
	var out []records.OperationEvent
	for _, r := range f.ReadAll(f.Backbone.Names().Operations) {
		ev, err := records.DecodeOperationEvent(r.Value)
		if err != nil {
			f.t.Fatalf("operation %d@%d: %v", r.Partition, r.Offset, err)
		}
		out = append(out, ev)
	}
	return out
}

// Healths returns the last health signal of every cluster, read once.
func (f *Fleet) Healths() map[string]records.Health {
	f.t.Helper()
	out := map[string]records.Health{}
	for _, r := range f.ReadAll(f.Backbone.Names().Health) {
		if r.Value == nil {
			delete(out, string(r.Key))
			continue
		}
		h, err := records.DecodeHealth(r.Value)
		if err != nil {
			f.t.Fatalf("health %d@%d: %v", r.Partition, r.Offset, err)
		}
		out[h.ClusterID] = h
	}
	return out
}

// Health returns the last health signal of a cluster.
func (f *Fleet) Health(clusterID string) (records.Health, bool) {
	f.t.Helper()
	h, ok := f.Healths()[clusterID]
	return h, ok
}

// HealthOf describes the last health signals of clusters, for messages.
func (f *Fleet) HealthOf(clusters []inventory.Cluster) string {
	var parts []string
	healths := f.Healths()
	for _, c := range clusters {
		h, ok := healths[c.ID]
		if !ok {
			parts = append(parts, c.ID+": none")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %s %v %v", c.ID, h.Status, h.Reasons, h.Details))
	}
	return strings.Join(parts, "; ")
}

// PassTime moves the fake clock on by at least d and returns once the
// services have run through that time: the monitor has published a signal
// observed at or after it, which the planner, following the health table,
// decides on like any other. Tests use it to show that nothing happens
// over a stretch of time.
func (f *Fleet) PassTime(d time.Duration) {
	f.t.Helper()
	until := f.Clock.Now().Add(d)
	reached := func() bool {
		for _, h := range f.Healths() {
			if !h.ObservedAt.Before(until) {
				return true
			}
		}
		return false
	}
	if !f.Eventually(time.Minute, time.Minute, reached) {
		f.t.Fatalf("the services did not run through %v of fake time within a minute", d)
	}
}
