package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Buckets of the histograms, in seconds.
var (
	fastBuckets = prometheus.ExponentialBuckets(0.001, 2, 15) // 1ms to 16s: decisions, probes
	readBuckets = prometheus.ExponentialBuckets(0.01, 2, 15)  // 10ms to 164s: tables catching up
	opBuckets   = prometheus.ExponentialBuckets(0.1, 2, 15)   // 100ms to 27min: operations
)

// clientOpts are the options that count a client's traffic in its
// service's kgo_* metrics: none without hooks.
func clientOpts(h *kafkaHooks) []kgo.Opt {
	if h == nil {
		return nil
	}
	return []kgo.Opt{h.opt()}
}

// Planner holds the planner's metrics, flotilla_planner_*.
type Planner struct {
	hooks     *kafkaHooks
	workflows *prometheus.GaugeVec
	decision  prometheus.Histogram
	catchUp   *prometheus.HistogramVec
}

// NewPlanner registers the planner's metrics and its clients' on reg.
func NewPlanner(reg prometheus.Registerer) (*Planner, error) {
	p := &Planner{
		workflows: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flotilla_planner_workflows",
			Help: "Workflows the planner holds, by state: those of the partitions it owns, kept as they change.",
		}, []string{"state"}),
		decision: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flotilla_planner_decision_seconds",
			Help:    "Time from a batch of records polled to its transaction committed: deciding, writing and committing.",
			Buckets: fastBuckets,
		}),
		catchUp: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flotilla_planner_table_catchup_seconds",
			Help:    "Time a table took to catch up with the log: inventory, health and policies at start, workflows on each partition assignment.",
			Buckets: readBuckets,
		}, []string{"table"}),
	}
	if err := register(reg, p.workflows, p.decision, p.catchUp); err != nil {
		return nil, err
	}
	var err error
	p.hooks, err = newKafkaHooks(reg, "planner")
	return p, err
}

// ClientOpts are the options that count a Kafka client's traffic in the
// planner's kgo_* metrics (none for a nil set). The service adds them to
// every client it makes (backbone.Config.ClientOpts).
func (p *Planner) ClientOpts() []kgo.Opt {
	if p == nil {
		return nil
	}
	return clientOpts(p.hooks)
}

// SetWorkflows sets the number of workflows in state.
func (p *Planner) SetWorkflows(state string, n int) {
	if p != nil {
		p.workflows.WithLabelValues(state).Set(float64(n))
	}
}

// ObserveDecision records the time a batch took to be decided and committed.
func (p *Planner) ObserveDecision(d time.Duration) {
	if p != nil {
		p.decision.Observe(d.Seconds())
	}
}

// ObserveCatchUp records the time table took to catch up with the log.
func (p *Planner) ObserveCatchUp(table string, d time.Duration) {
	if p != nil {
		p.catchUp.WithLabelValues(table).Observe(d.Seconds())
	}
}

// Outcomes of an operation, the outcome label of the executor's metrics.
const (
	Succeeded = "succeeded"
	Failed    = "failed"
)

// Executor holds the executor's metrics, flotilla_executor_*.
type Executor struct {
	hooks    *kafkaHooks
	inFlight prometheus.Gauge
	outcomes *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewExecutor registers the executor's metrics and its clients' on reg.
func NewExecutor(reg prometheus.Registerer) (*Executor, error) {
	e := &Executor{
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flotilla_executor_operations_in_flight",
			Help: "Operations acting on their cluster now (holding a slot of --concurrency); those waiting for their cluster are not counted.",
		}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_executor_operations_total",
			Help: "Operations ended and recorded, by outcome (succeeded, failed).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flotilla_executor_operation_duration_seconds",
			Help:    "Time from an operation taking its slot to its outcome recorded, by outcome.",
			Buckets: opBuckets,
		}, []string{"outcome"}),
	}
	for _, o := range []string{Succeeded, Failed} { // present at 0 before the first
		e.outcomes.WithLabelValues(o)
	}
	if err := register(reg, e.inFlight, e.outcomes, e.duration); err != nil {
		return nil, err
	}
	var err error
	e.hooks, err = newKafkaHooks(reg, "executor")
	return e, err
}

// ClientOpts are the options that count a Kafka client's traffic in the
// executor's kgo_* metrics (none for a nil set). The service adds them to
// every client it makes (backbone.Config.ClientOpts).
func (e *Executor) ClientOpts() []kgo.Opt {
	if e == nil {
		return nil
	}
	return clientOpts(e.hooks)
}

// Started counts an operation acting; Ended must follow it.
func (e *Executor) Started() {
	if e != nil {
		e.inFlight.Inc()
	}
}

// Ended counts an operation that stopped acting; outcome is Succeeded or
// Failed once its outcome is recorded, "" when it stopped without one (its
// partition was revoked: the next owner resumes it).
func (e *Executor) Ended(outcome string, took time.Duration) {
	if e == nil {
		return
	}
	e.inFlight.Dec()
	if outcome != "" {
		e.outcomes.WithLabelValues(outcome).Inc()
		e.duration.WithLabelValues(outcome).Observe(took.Seconds())
	}
}

// Kinds of health signal, the kind label of flotilla_monitor_health_signals_total.
const (
	SignalChange    = "change"
	SignalHeartbeat = "heartbeat"
	SignalTombstone = "tombstone"
)

// Monitor holds the monitor's metrics, flotilla_monitor_*.
type Monitor struct {
	hooks    *kafkaHooks
	probes   prometheus.Histogram
	failures prometheus.Counter
	signals  *prometheus.CounterVec
	drifted  prometheus.Gauge
}

// NewMonitor registers the monitor's metrics and its clients' on reg.
func NewMonitor(reg prometheus.Registerer) (*Monitor, error) {
	m := &Monitor{
		probes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flotilla_monitor_probe_duration_seconds",
			Help:    "Time a probe of a cluster took, through its driver, failed or not.",
			Buckets: fastBuckets,
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flotilla_monitor_probe_failures_total",
			Help: "Probes that failed or timed out (the cluster is then reported unhealthy), or found no prober for the cluster's driver.",
		}),
		signals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_monitor_health_signals_total",
			Help: "Health records Kafka took, by kind: change, heartbeat, tombstone (a cluster left the inventory).",
		}, []string{"kind"}),
		drifted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flotilla_monitor_drifted_clusters",
			Help: "Clusters of this copy's partitions whose observed config or version drifted from what Flotilla last applied.",
		}),
	}
	for _, k := range []string{SignalChange, SignalHeartbeat, SignalTombstone} {
		m.signals.WithLabelValues(k)
	}
	if err := register(reg, m.probes, m.failures, m.signals, m.drifted); err != nil {
		return nil, err
	}
	var err error
	m.hooks, err = newKafkaHooks(reg, "monitor")
	return m, err
}

// ClientOpts are the options that count a Kafka client's traffic in the
// monitor's kgo_* metrics (none for a nil set). The service adds them to
// every client it makes (backbone.Config.ClientOpts).
func (m *Monitor) ClientOpts() []kgo.Opt {
	if m == nil {
		return nil
	}
	return clientOpts(m.hooks)
}

// ObserveProbe records a probe's duration, and whether it failed.
func (m *Monitor) ObserveProbe(took time.Duration, failed bool) {
	if m == nil {
		return
	}
	m.probes.Observe(took.Seconds())
	if failed {
		m.failures.Inc()
	}
}

// ProbeFailed counts a probe that could not run (no prober for the
// cluster's driver), without a duration.
func (m *Monitor) ProbeFailed() {
	if m != nil {
		m.failures.Inc()
	}
}

// Published counts a health record Kafka took, of kind SignalChange,
// SignalHeartbeat or SignalTombstone.
func (m *Monitor) Published(kind string) {
	if m != nil {
		m.signals.WithLabelValues(kind).Inc()
	}
}

// SetDrifted sets flotilla_monitor_drifted_clusters: the drift detection
// calls it with the number of drifted clusters among those this copy owns
// whenever that number changes (and with the new count after partitions
// are gained or lost), not by counting the fleet on every scrape.
func (m *Monitor) SetDrifted(n int) {
	if m != nil {
		m.drifted.Set(float64(n))
	}
}

// Notifier holds the notifier's metrics, flotilla_notifier_*, and the
// deliveries of its sinks.
type Notifier struct {
	hooks      *kafkaHooks
	written    *prometheus.CounterVec
	deliveries *Deliveries
}

// NewNotifier registers the notifier's metrics, its sinks' deliveries
// and its clients' on reg.
func NewNotifier(reg prometheus.Registerer) (*Notifier, error) {
	n := &Notifier{
		written: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_notifier_notifications_total",
			Help: "Notifications written to the notifications topic (transaction committed), by kind and severity.",
		}, []string{"kind", "severity"}),
		deliveries: &Deliveries{total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_notifier_deliveries_total",
			Help: "Notifications handed to a destination (a sink: webhook, live stream...), by destination and outcome (delivered, failed).",
		}, []string{"destination", "outcome"})},
	}
	if err := register(reg, n.written, n.deliveries.total); err != nil {
		return nil, err
	}
	var err error
	n.hooks, err = newKafkaHooks(reg, "notifier")
	return n, err
}

// ClientOpts are the options that count a Kafka client's traffic in the
// notifier's kgo_* metrics (none for a nil set). The service adds them to
// every client it makes (backbone.Config.ClientOpts).
func (n *Notifier) ClientOpts() []kgo.Opt {
	if n == nil {
		return nil
	}
	return clientOpts(n.hooks)
}

// Written counts a notification committed to the notifications topic.
func (n *Notifier) Written(kind, severity string) {
	if n != nil {
		n.written.WithLabelValues(kind, severity).Inc()
	}
}

// Deliveries returns the counters of the notifier's sinks (nil for a nil
// set, whose methods do nothing).
func (n *Notifier) Deliveries() *Deliveries {
	if n == nil {
		return nil
	}
	return n.deliveries
}

// Deliveries counts what the notifier's sinks deliver, per destination,
// in flotilla_notifier_deliveries_total{destination,outcome}. A sink calls
// Delivered or Failed once per notification and destination, after the
// attempt (a retry that succeeds counts one failure and one delivery).
// destination names where it went, with few distinct values ("webhook:ops",
// "stream"): not a URL with a token in it. Safe for concurrent use, and on
// a nil *Deliveries.
type Deliveries struct {
	total *prometheus.CounterVec
}

// Delivered counts a notification delivered to destination.
func (d *Deliveries) Delivered(destination string) {
	if d != nil {
		d.total.WithLabelValues(destination, "delivered").Inc()
	}
}

// Failed counts a notification that could not be delivered to destination.
func (d *Deliveries) Failed(destination string) {
	if d != nil {
		d.total.WithLabelValues(destination, "failed").Inc()
	}
}

// Services are the metrics of the four services run in one process
// (flotilla dev, tests), each set made on one registry.
type Services struct {
	Planner  *Planner
	Executor *Executor
	Monitor  *Monitor
	Notifier *Notifier
}

// NewServices makes the four services' sets on reg; with a nil reg, none
// (every set nil, which records nothing).
func NewServices(reg prometheus.Registerer) (s Services, err error) {
	if reg == nil {
		return s, nil
	}
	if s.Planner, err = NewPlanner(reg); err != nil {
		return s, err
	}
	if s.Executor, err = NewExecutor(reg); err != nil {
		return s, err
	}
	if s.Monitor, err = NewMonitor(reg); err != nil {
		return s, err
	}
	s.Notifier, err = NewNotifier(reg)
	return s, err
}
