package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// RecoveryResult is how the services start over a fleet with a long
// history in its topics, and what they cost once idle.
type RecoveryResult struct {
	Clusters        int               `json:"clusters"`
	HistoryRollouts int               `json:"historyRollouts"`
	HistoryRecords  int64             `json:"historyRecords"` // written before the start: inventory, health, finished rollouts
	Services        []ServiceRecovery `json:"services"`
	// IdleCores is the CPU time each service used over IdleSeconds once
	// all had acted, per second of it: cores kept busy.
	IdleSeconds    float64            `json:"idleSeconds"`
	IdleCores      map[string]float64 `json:"idleCores,omitempty"`
	IdleCoresTotal float64            `json:"idleCoresTotal"`
	PeakRSS        map[string]int64   `json:"peakRSS,omitempty"`
	Note           string             `json:"note,omitempty"`
	Error          string             `json:"error,omitempty"`
}

// ServiceRecovery is one service's start: from its process start to its
// first output record committed (acting), and its catch-up rate, the
// records of the topics it reads from their start over that time, beside
// a raw consume of the same topics. The notifier reads none from their
// start (it goes on from its group's committed offsets): it has no
// catch-up rate.
type ServiceRecovery struct {
	Service       string  `json:"service"`
	Acted         bool    `json:"acted"`
	ActingSeconds float64 `json:"actingSeconds"`
	Records       int64   `json:"records"`
	CatchUp       float64 `json:"catchUpPerSecond"`
	Raw           float64 `json:"rawPerSecond"`
	Ratio         float64 `json:"ratio"`
}

// serviceIO is what a service reads as it starts, and where it writes.
type serviceIO struct {
	reads []string
	out   string
}

// serviceTopics are the topics each service reads from their start as it
// starts (its tables; what its consumer group consumes it takes from the
// group's committed offsets) and the one whose first record shows it
// acting.
func serviceTopics(n topics.Names) map[string]serviceIO {
	return map[string]serviceIO{
		"planner":  {[]string{n.Inventory, n.Policies, n.Workflows, n.Health}, n.Workflows},
		"executor": {[]string{n.Commands, n.Operations, n.Claims, n.Leases}, n.Operations},
		"monitor":  {[]string{n.Inventory, n.Health}, n.Health},
		"notifier": {nil, n.Notifications},
	}
}

func (b *bench) recovery(ctx context.Context, n int) RecoveryResult {
	ctx, cancel := b.stage(ctx, fmt.Sprintf("recovery over %d clusters and %d finished rollouts", n, b.o.HistoryRollouts))
	defer cancel()
	res := RecoveryResult{Clusters: n, HistoryRollouts: b.o.HistoryRollouts}
	cfg, err := b.namespace(ctx, "recovery")
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer dropNamespace(cfg)
	svc, err := b.recover(ctx, cfg, &res)
	if svc != nil {
		res.PeakRSS = svc.peakRSS()
		svc.stop()
	}
	if err != nil {
		res.Error = err.Error()
		acted := 0
		for _, s := range res.Services {
			if s.Acted {
				acted++
			}
		}
		res.Note = fmt.Sprintf("did not finish: %d of %d services acted", acted, len(serviceNames))
	}
	return res
}

// recover writes the history, starts the services and measures them.
func (b *bench) recover(ctx context.Context, cfg backbone.Config, res *RecoveryResult) (*services, error) {
	dir := filepath.Join(b.dir, cfg.Namespace)
	st, err := prepareRecovery(ctx, cfg, filepath.Join(dir, "sim"), res)
	if err != nil {
		return nil, err
	}
	names := cfg.Names()
	obs, err := observe(ctx, cfg, true, names.Workflows, names.Operations, names.Health, names.Notifications)
	if err != nil {
		return nil, err
	}
	// One at a time, as a service restarts: the embedded broker serves
	// every request on one goroutine, so services catching up together
	// would measure how they share it, against a raw consume that had it
	// alone. The ones started before idle meanwhile.
	svc := &services{down: make(chan struct{})}
	for _, name := range serviceNames {
		if err := svc.start(b.o, cfg, dir, simulation{concurrency: 64}, name); err != nil {
			return svc, err
		}
		err = obs.wait(ctx, svc, func() bool { _, ok := obs.first[st[name].out]; return ok })
		noteActing(obs, svc, st, res)
		if err != nil {
			return svc, fmt.Errorf("waiting for the %s to act: %w", name, err)
		}
	}
	return svc, b.measureIdle(ctx, svc, res)
}

// prepareRecovery writes the history of a fleet of res.Clusters, reads
// each service's topics raw, and writes something for each service to
// act on.
func prepareRecovery(ctx context.Context, cfg backbone.Config, simDir string, res *RecoveryResult) (map[string]serviceIO, error) {
	clusters := simfleet.GenerateClusters(res.Clusters + 1)
	fleet, newcomer := clusters[:res.Clusters], clusters[res.Clusters]
	written, err := writeHistory(ctx, cfg, fleet, res.HistoryRollouts)
	res.HistoryRecords = written
	if err != nil {
		return nil, fmt.Errorf("write the history: %w", err)
	}
	if err := createSimState(ctx, simDir, fleet); err != nil {
		return nil, err
	}
	if err := commitGroups(ctx, cfg); err != nil {
		return nil, err
	}
	st := serviceTopics(cfg.Names())
	for _, name := range serviceNames {
		s, err := rawRead(ctx, cfg, name, st[name].reads)
		if err != nil {
			return nil, err
		}
		res.Services = append(res.Services, s)
	}
	return st, writeTriggers(ctx, cfg, fleet, newcomer)
}

// noteActing records when each service acted, and its catch-up rate.
func noteActing(obs *observer, svc *services, st map[string]serviceIO, res *RecoveryResult) {
	obs.mu.Lock()
	defer obs.mu.Unlock()
	for i := range res.Services {
		s := &res.Services[i]
		seen, ok := obs.first[st[s.Service].out]
		p := svc.get(s.Service)
		if !ok || p == nil {
			continue
		}
		s.Acted = true
		s.ActingSeconds = seconds(seen.Sub(p.started))
		if s.Records > 0 {
			s.CatchUp = float64(s.Records) / s.ActingSeconds
			s.Ratio = s.CatchUp / s.Raw
		}
	}
}

// rawRead counts the records of a service's topics and reads them all
// with a raw consumer, for the service's catch-up to be compared to.
func rawRead(ctx context.Context, cfg backbone.Config, service string, topicNames []string) (ServiceRecovery, error) {
	s := ServiceRecovery{Service: service}
	if len(topicNames) == 0 {
		return s, nil
	}
	ends, err := listEnds(ctx, cfg, topicNames...)
	if err != nil {
		return s, err
	}
	ends.Each(func(lo kadm.ListedOffset) { s.Records += lo.Offset }) // the bench wrote them all, without transactions
	elapsed, err := rawConsume(ctx, cfg, int(s.Records), topicNames...)
	if err != nil {
		return s, fmt.Errorf("raw consume of %s's topics: %w", service, err)
	}
	s.Raw = rate(int(s.Records), elapsed)
	return s, nil
}

// measureIdle measures the services' CPU time over the idle window.
func (b *bench) measureIdle(ctx context.Context, svc *services, res *RecoveryResult) error {
	before, err := svc.cpuTimes()
	if err != nil {
		return err
	}
	start := time.Now()
	select {
	case <-time.After(b.o.IdleWindow): // the measurement's window, not a wait for a condition
	case <-svc.down:
		return svc.exited()
	case <-ctx.Done():
		return ctx.Err()
	}
	after, err := svc.cpuTimes()
	if err != nil {
		return err
	}
	window := time.Since(start)
	res.IdleSeconds = seconds(window)
	res.IdleCores = map[string]float64{}
	for name, t := range after {
		res.IdleCores[name] = (t - before[name]).Seconds() / window.Seconds()
		res.IdleCoresTotal += res.IdleCores[name]
	}
	return nil
}

// writeHistory writes what the topics of a fleet hold after rollouts:
// the inventory, a health signal per cluster, and finished rollouts
// (each over a tenth of the fleet: its request, workflow rows, commands
// and operation events), as the services would have written them. It
// returns how many records it wrote.
func writeHistory(ctx context.Context, cfg backbone.Config, clusters []inventory.Cluster, rollouts int) (int64, error) {
	w, err := newWriter(cfg)
	if err != nil {
		return 0, err
	}
	defer w.close()
	names := cfg.Names()
	for _, c := range clusters {
		if err := w.add(ctx, names.Inventory, c.ID, records.ClusterRecord{Envelope: envelope(), Cluster: c}); err != nil {
			return 0, err
		}
		if err := w.add(ctx, names.Health, c.ID, healthSignal(c, records.HealthHealthy, records.HealthUnknown)); err != nil {
			return 0, err
		}
	}
	per := max(1, len(clusters)/10)
	for k := range rollouts {
		targets := make([]inventory.Cluster, per)
		for i := range targets {
			targets[i] = clusters[(k*per+i)%len(clusters)]
		}
		if err := writeFinishedRollout(ctx, w, names, k, targets); err != nil {
			return w.count.Load(), err
		}
	}
	return w.count.Load(), w.flush(ctx)
}

// writeFinishedRollout writes the records of one rollout that restarted
// targets and succeeded.
func writeFinishedRollout(ctx context.Context, w *writer, names topics.Names, k int, targets []inventory.Cluster) error {
	spec := rollout.Spec{Name: fmt.Sprintf("history-%d", k), Operation: rollout.Operation{Kind: rollout.Restart}, Selector: "kind=kafka"}
	req := envelope()
	wf, now := req.ID, time.Now().UTC()
	head := records.Workflow{
		ID: wf, Spec: spec, State: records.WorkflowRunning, Event: "submitted",
		Phases:  []records.PhasePlan{{Name: "all", WaveSizes: []int{len(targets)}}},
		Targets: len(targets), CreatedAt: now, UpdatedAt: now, Seq: 1,
	}
	add := func(topic, key string, v any) error { return w.add(ctx, topic, key, v) }
	if err := add(names.Requests, wf, records.Request{Envelope: req, Submit: &records.SubmitRollout{Spec: spec}}); err != nil {
		return err
	}
	if err := add(names.Workflows, wf, records.WorkflowRecord{Envelope: envelope(), Workflow: &head}); err != nil {
		return err
	}
	for i, c := range targets {
		if err := writeFinishedTarget(add, names, wf, spec.Operation, c, i); err != nil {
			return err
		}
	}
	head.State, head.Event, head.Phase, head.Seq = records.WorkflowSucceeded, "succeeded", 1, 2
	return add(names.Workflows, wf, records.WorkflowRecord{Envelope: envelope(), Workflow: &head})
}

// writeFinishedTarget writes one target's command, its operation's
// start and success, and its target row.
func writeFinishedTarget(add func(topic, key string, v any) error, names topics.Names, wf string, op rollout.Operation, c inventory.Cluster, order int) error {
	key, cmdID, now := wf+"/"+c.ID, uuid.NewString(), time.Now().UTC()
	cmd := records.Command{Envelope: envelope(), ID: cmdID, WorkflowID: wf, ClusterID: c.ID, Attempt: 1, Operation: op, Cluster: c}
	started := records.OperationEvent{Envelope: envelope(), CommandID: cmdID, WorkflowID: wf, ClusterID: c.ID, Attempt: 1,
		Status: records.OperationStarted, PreviousVersion: c.Version, Deadline: now.Add(30 * time.Minute), Executor: "bench"}
	done := started
	done.Envelope, done.Status, done.Version = envelope(), records.OperationSucceeded, c.Version
	target := records.Target{WorkflowID: wf, ClusterID: c.ID, State: records.TargetSucceeded, CommandID: cmdID, Attempt: 1,
		PreviousVersion: c.Version, Version: c.Version, StartedAt: now, FinishedAt: now, Order: order}
	for _, r := range []struct {
		topic string
		v     any
	}{
		{names.Commands, cmd}, {names.Operations, started}, {names.Operations, done},
		{names.Workflows, records.WorkflowRecord{Envelope: envelope(), Target: &target}},
	} {
		if err := add(r.topic, key, r.v); err != nil {
			return err
		}
	}
	return nil
}

// createSimState creates the simulated clusters' state in dir, as the
// fleet's own would be before a restart: probing them creates them.
func createSimState(ctx context.Context, dir string, clusters []inventory.Cluster) error {
	sim, err := simfleet.New(simfleet.Options{Dir: dir})
	if err != nil {
		return err
	}
	defer sim.Close()
	for _, c := range clusters {
		if _, err := sim.Probe(ctx, c); err != nil {
			return fmt.Errorf("create the simulated fleet: %w", err)
		}
	}
	return nil
}

// commitGroups commits the planner's and the notifier's consumer groups
// at the end of the topics they consume, as if they had run through the
// history: a restart, not a first start that announces every record.
func commitGroups(ctx context.Context, cfg backbone.Config) error {
	n := cfg.Names()
	cl, err := cfg.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for group, consumed := range map[string][]string{
		n.Group("planner"):  {n.Requests, n.Operations},
		n.Group("notifier"): {n.Workflows, n.Operations, n.Health, n.DeadLetters},
	} {
		ends, err := listEnds(ctx, cfg, consumed...)
		if err != nil {
			return err
		}
		if err := adm.CommitAllOffsets(ctx, group, ends.Offsets()); err != nil {
			return fmt.Errorf("commit the offsets of %s: %w", group, err)
		}
	}
	return nil
}

// writeTriggers writes, after the history, something for each service to
// act on: a rollout request for the planner, a command for the executor,
// a new cluster for the monitor, a health change for the notifier.
func writeTriggers(ctx context.Context, cfg backbone.Config, fleet []inventory.Cluster, newcomer inventory.Cluster) error {
	w, err := newWriter(cfg)
	if err != nil {
		return err
	}
	defer w.close()
	names := cfg.Names()
	restart := rollout.Operation{Kind: rollout.Restart}
	req := envelope()
	spec := rollout.Spec{Name: "bench-recovery", Operation: restart, Selector: "kind=none", Clusters: []string{fleet[0].ID}}
	cmdWorkflow := uuid.NewString()
	cmd := records.Command{Envelope: envelope(), ID: uuid.NewString(), WorkflowID: cmdWorkflow, ClusterID: fleet[1].ID, Attempt: 1, Operation: restart, Cluster: fleet[1]}
	for _, r := range []struct {
		topic, key string
		v          any
	}{
		{names.Requests, req.ID, records.Request{Envelope: req, Submit: &records.SubmitRollout{Spec: spec}}},
		{names.Commands, cmdWorkflow + "/" + fleet[1].ID, cmd},
		{names.Inventory, newcomer.ID, records.ClusterRecord{Envelope: envelope(), Cluster: newcomer}},
		{names.Health, fleet[2].ID, healthSignal(fleet[2], records.HealthUnhealthy, records.HealthHealthy)},
	} {
		if err := w.add(ctx, r.topic, r.key, r.v); err != nil {
			return err
		}
	}
	return w.flush(ctx)
}
