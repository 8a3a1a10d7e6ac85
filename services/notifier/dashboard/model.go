// Package dashboard is the notifier's web dashboard: the fleet, every
// rollout and every cluster, live, in a browser, with a JSON twin of each
// view under /api/.
//
// It keeps a model of the fleet in memory, materialised from the
// inventory, health, workflows, history and requests topics — every
// partition of each, whatever partitions this copy of the notifier owns
// for its other work — and updated as records come. What a page shows is
// computed from the model when it is asked for; what changed is pushed to
// the browser as server-sent events (see events.go), whose IDs are
// positions in the notifications topic.
package dashboard

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// Pseudo-labels a fleet can be grouped by besides its clusters' labels.
const (
	// GroupVersion groups clusters by the version they were seen to run
	// (the registered one until a probe says).
	GroupVersion = "version"
	// GroupHealth groups clusters by health.
	GroupHealth = "health"
)

// healthChangesKept is how many changes of health a cluster keeps for its
// page: the recent past, not the whole log.
const healthChangesKept = 20

// Model is the fleet as the dashboard shows it. It is safe for concurrent
// use: the topics' readers apply records to it while pages read it.
//
// Every cost of an update is per record (a cluster's aggregates are moved
// from its old group to its new one); the counts of the whole fleet by
// any label are kept, never recounted, so the fleet page is as fast with
// 100,000 clusters as with ten.
type Model struct {
	mu       sync.RWMutex
	clusters map[string]*cluster
	// groups counts clusters by label key, value and health, for every
	// key any cluster has (and the pseudo-labels version and health).
	groups map[string]map[string]*HealthCounts
	// index holds the IDs of the clusters by label key and value: a
	// selector narrows its search to a set of it (selector.Required).
	index map[string]map[string]map[string]struct{}
	all   HealthCounts
	ids   []string // every cluster's ID, sorted; nil when stale

	workflows  *decide.State
	stale      map[string]bool           // workflows whose waves need indexing again
	requests   map[string]*requester     // workflow ID → who asked for it
	timelines  map[string][]TimelineItem // workflow ID → what happened to it
	seenEvents map[string]int64          // workflow ID → Seq of the last header row put in its timeline

	// version grows by one with every visible change. It starts at a
	// random number, so that a page made by an earlier run of the
	// notifier, or by another copy behind the same address, never
	// matches it by chance (see events: ?since).
	version uint64
	changed chan struct{} // closed and replaced on every visible change
	ready   bool
}

// cluster is what the model holds of one cluster.
type cluster struct {
	info       inventory.Cluster
	registered bool // in the inventory (health may come first, or outlive it)
	health     records.Health
	probed     bool
	changes    []HealthChange            // newest last, at most healthChangesKept
	history    map[string]records.Target // workflow ID → how its operation on the cluster ended
}

// requester is who asked for a workflow, and when.
type requester struct {
	principal string
	at        time.Time
}

// HealthCounts counts clusters by health.
type HealthCounts struct {
	Total     int `json:"total"`
	Healthy   int `json:"healthy"`
	Degraded  int `json:"degraded"`
	Unhealthy int `json:"unhealthy"`
	Unknown   int `json:"unknown"`
	// Drifted counts those whose last signal reports drift, whatever
	// their health (drift leaves the status alone).
	Drifted int `json:"drifted"`
}

func (h *HealthCounts) add(s records.HealthStatus, drifted bool, delta int) {
	h.Total += delta
	if drifted {
		h.Drifted += delta
	}
	switch s {
	case records.HealthHealthy:
		h.Healthy += delta
	case records.HealthDegraded:
		h.Degraded += delta
	case records.HealthUnhealthy:
		h.Unhealthy += delta
	default:
		h.Unknown += delta
	}
}

// HealthChange is one change of a cluster's health.
type HealthChange struct {
	At      time.Time            `json:"at"`
	From    records.HealthStatus `json:"from"`
	To      records.HealthStatus `json:"to"`
	Version string               `json:"version,omitempty"`
	Reasons []string             `json:"reasons,omitempty"`
}

// TimelineItem is one thing that happened to a workflow: a request about
// it (who asked what) or a decision of the planner.
type TimelineItem struct {
	At        time.Time `json:"at"`
	Principal string    `json:"principal"`
	Kind      string    `json:"kind"` // "request" or "decision"
	What      string    `json:"what"`
}

// NewModel returns an empty model.
func NewModel() *Model {
	return &Model{
		clusters:   map[string]*cluster{},
		groups:     map[string]map[string]*HealthCounts{},
		index:      map[string]map[string]map[string]struct{}{},
		workflows:  decide.NewState(nil, nil),
		stale:      map[string]bool{},
		requests:   map[string]*requester{},
		timelines:  map[string][]TimelineItem{},
		seenEvents: map[string]int64{},
		changed:    make(chan struct{}),
		version:    rand.Uint64(),
	}
}

// Changed returns a channel closed at the next visible change, and the
// version of the model now.
func (m *Model) Changed() (<-chan struct{}, uint64) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.changed, m.version
}

// Ready reports whether every topic was read up to where it ended when
// the dashboard started.
func (m *Model) Ready() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.ready
}

func (m *Model) markReady() {
	m.mu.Lock()
	m.ready = true
	m.bump()
	m.mu.Unlock()
}

// bump records a visible change; m.mu is held.
func (m *Model) bump() {
	m.version++
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *Model) clusterOf(id string) *cluster {
	c, ok := m.clusters[id]
	if !ok {
		c = &cluster{info: inventory.Cluster{ID: id}}
		m.clusters[id] = c
	}
	return c
}

// dropIfGone forgets a cluster that is neither registered nor has any
// health or history left.
func (m *Model) dropIfGone(c *cluster) {
	if !c.registered && !c.probed && len(c.history) == 0 {
		delete(m.clusters, c.info.ID)
	}
}

// status is the health a cluster counts under.
func (c *cluster) status() records.HealthStatus {
	if !c.probed || c.health.Status == "" {
		return records.HealthUnknown
	}
	return c.health.Status
}

// drifted reports whether a cluster's last signal reports drift.
func (c *cluster) drifted() bool { return c.probed && len(c.health.Drift) > 0 }

// version is the version a cluster is seen to run: the probe's, else the
// registered one.
func (c *cluster) version() string {
	if c.probed && c.health.ObservedVersion != "" {
		return c.health.ObservedVersion
	}
	return c.info.Version
}

// count adds (delta 1) or removes (-1) a registered cluster's contribution
// to the aggregates and the index.
func (m *Model) count(c *cluster, delta int) {
	if !c.registered {
		return
	}
	s, d := c.status(), c.drifted()
	m.all.add(s, d, delta)
	m.addTo(GroupHealth, string(s), s, d, delta)
	m.addTo(GroupVersion, c.version(), s, d, delta)
	for k, v := range c.info.Labels {
		m.addTo(k, v, s, d, delta)
		m.indexLabel(k, v, c.info.ID, delta)
	}
}

// addTo counts a cluster in (or out of) the group of one value of key. A
// group emptied goes, so that a value (or a label) no cluster has any more
// is not shown, nor offered to group by.
func (m *Model) addTo(key, value string, s records.HealthStatus, drifted bool, delta int) {
	byValue, ok := m.groups[key]
	if !ok {
		byValue = map[string]*HealthCounts{}
		m.groups[key] = byValue
	}
	h, ok := byValue[value]
	if !ok {
		h = &HealthCounts{}
		byValue[value] = h
	}
	h.add(s, drifted, delta)
	if h.Total == 0 {
		delete(byValue, value)
		if len(byValue) == 0 {
			delete(m.groups, key)
		}
	}
}

func (m *Model) indexLabel(key, value, id string, delta int) {
	byValue, ok := m.index[key]
	if !ok {
		byValue = map[string]map[string]struct{}{}
		m.index[key] = byValue
	}
	ids, ok := byValue[value]
	if !ok {
		ids = map[string]struct{}{}
		byValue[value] = ids
	}
	if delta > 0 {
		ids[id] = struct{}{}
		return
	}
	delete(ids, id)
	if len(ids) == 0 {
		delete(byValue, value)
	}
	if len(byValue) == 0 {
		delete(m.index, key)
	}
}

// ApplyCluster applies a record of the inventory: c registered, or the
// cluster id removed when c is nil.
func (m *Model) ApplyCluster(id string, c *inventory.Cluster) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cl := m.clusterOf(id)
	m.count(cl, -1)
	if c == nil {
		if cl.registered {
			m.ids = nil
		}
		cl.registered = false
		m.dropIfGone(cl)
		m.bump()
		return
	}
	if !cl.registered {
		m.ids = nil
	}
	cl.info, cl.registered = *c, true
	m.count(cl, 1)
	m.bump()
}

// ApplyHealth applies a health signal, or forgets a cluster's health when
// h is nil (a tombstone). A heartbeat that changes nothing shown is not a
// visible change.
func (m *Model) ApplyHealth(id string, h *records.Health) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cl := m.clusterOf(id)
	if h == nil {
		m.count(cl, -1)
		cl.probed, cl.health = false, records.Health{}
		m.count(cl, 1)
		m.dropIfGone(cl)
		m.bump()
		return
	}
	before := cl.health
	visible := !cl.probed || before.Status != h.Status || before.ObservedVersion != h.ObservedVersion ||
		!slices.Equal(before.Reasons, h.Reasons) || !slices.Equal(before.Drift, h.Drift) || !sameDetails(before.Details, h.Details)
	m.count(cl, -1)
	cl.health, cl.probed = *h, true
	m.count(cl, 1)
	if !h.Heartbeat && (before.Status != h.Status || before.ObservedVersion != h.ObservedVersion || !slices.Equal(before.Reasons, h.Reasons)) {
		cl.changes = append(cl.changes, HealthChange{At: h.ObservedAt, From: h.PreviousStatus, To: h.Status, Version: h.ObservedVersion, Reasons: h.Reasons})
		if len(cl.changes) > healthChangesKept {
			cl.changes = slices.Delete(cl.changes, 0, len(cl.changes)-healthChangesKept)
		}
	}
	if visible {
		m.bump()
	}
}

func sameDetails(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// ApplyHistory applies a record of the history topic: how workflow's
// operation on the cluster ended (t), or its removal after retention.
func (m *Model) ApplyHistory(clusterID, workflowID string, t *records.Target) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cl := m.clusterOf(clusterID)
	if t == nil {
		delete(cl.history, workflowID)
		m.dropIfGone(cl)
		m.bump()
		return
	}
	if cl.history == nil {
		cl.history = map[string]records.Target{}
	}
	kept := *t
	kept.PreviousConfig, kept.PreviousUnset = nil, nil // not shown
	cl.history[workflowID] = kept
	m.bump()
}

// ApplyWorkflowRow applies a row of the workflows topic, or the tombstone
// of key when rec is nil.
func (m *Model) ApplyWorkflowRow(key string, rec *records.WorkflowRecord) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rec == nil {
		switch id := m.workflows.ApplyTombstone(key); id {
		case "":
		case key: // the workflow itself is gone
			delete(m.timelines, id)
			delete(m.seenEvents, id)
			delete(m.requests, id)
			delete(m.stale, id)
		default: // one of its targets
			m.stale[id] = true
		}
		m.bump()
		return
	}
	switch {
	case rec.Workflow != nil:
		w := rec.Workflow
		if w.Event != "" && w.Event != "progress" && w.Seq > m.seenEvents[w.ID] {
			m.seenEvents[w.ID] = w.Seq
			m.timelines[w.ID] = append(m.timelines[w.ID], TimelineItem{At: w.UpdatedAt, Principal: rec.Envelope.Principal, Kind: "decision", What: describeDecision(w)})
		}
		m.workflows.ApplyRow(0, *rec)
		m.stale[w.ID] = true // its phases may be new
	case rec.Spec != nil:
		m.workflows.ApplyRow(0, *rec)
	case rec.Target != nil:
		w, ok := m.workflows.Workflows[rec.Target.WorkflowID]
		if !ok || w.Targets[rec.Target.ClusterID] == nil {
			m.stale[rec.Target.WorkflowID] = true // a new target: its wave's index changes
		}
		m.workflows.ApplyRow(0, *rec)
	}
	m.bump()
}

// describeDecision says in a line what a header row decided.
func describeDecision(w *records.Workflow) string {
	what := strings.ReplaceAll(w.Event, "-", " ")
	if w.Phase < len(w.Phases) && !w.State.Terminal() && (strings.HasPrefix(w.Event, "phase") || strings.HasPrefix(w.Event, "wave")) {
		what += ": phase " + w.Phases[w.Phase].Name + ", wave " + strconv.Itoa(w.Wave+1)
	}
	if w.Reason != "" {
		what += ": " + w.Reason
	}
	return what
}

// ApplyRequest applies a request: who asked for a workflow, and each
// control of one (pause, approve, ...), go into its timeline.
func (m *Model) ApplyRequest(req records.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	env := req.Envelope
	switch {
	case req.Submit != nil:
		m.requests[env.ID] = &requester{principal: env.Principal, at: env.Time}
		m.timelines[env.ID] = append(m.timelines[env.ID], TimelineItem{At: env.Time, Principal: env.Principal, Kind: "request",
			What: "asked for rollout " + strconv.Quote(req.Submit.Spec.Name)})
	case req.Control != nil:
		c := req.Control
		what := "asked to " + string(c.Action)
		if c.Phase != "" {
			what += " phase " + c.Phase
		}
		if c.Reason != "" {
			what += ": " + c.Reason
		}
		m.timelines[c.WorkflowID] = append(m.timelines[c.WorkflowID], TimelineItem{At: env.Time, Principal: env.Principal, Kind: "request", What: what})
		if c.Action == records.ActionRollback {
			m.requests[records.RollbackID(c.WorkflowID)] = &requester{principal: env.Principal, at: env.Time}
		}
	default:
		return
	}
	m.bump()
}

// requestedBy says who asked for workflow id: the requester the planner
// recorded (it verified the request, where signatures are required),
// else, for rows written before it did, the request's principal.
func (m *Model) requestedBy(id string) string {
	if w, ok := m.workflows.Workflows[id]; ok && w.Requester != "" {
		return w.Requester
	}
	if r := m.requests[id]; r != nil {
		return r.principal
	}
	return ""
}

// workflow returns a workflow with its waves indexed; m.mu is held for
// writing.
func (m *Model) workflow(id string) (*decide.Workflow, bool) {
	w, ok := m.workflows.Workflows[id]
	if !ok || w.State == "" {
		return nil, false
	}
	if m.stale[id] {
		w.Reindex()
		delete(m.stale, id)
	}
	return w, true
}

// sortedIDs returns every registered cluster's ID, sorted; m.mu is held
// for writing (the sorted list is kept until the inventory adds or
// removes a cluster).
func (m *Model) sortedIDs() []string {
	if m.ids == nil {
		m.ids = make([]string, 0, len(m.clusters))
		for id, c := range m.clusters {
			if c.registered {
				m.ids = append(m.ids, id)
			}
		}
		slices.Sort(m.ids)
	}
	return m.ids
}

// sortedTimeline returns a workflow's timeline, oldest first.
func sortedTimeline(items []TimelineItem) []TimelineItem {
	out := slices.Clone(items)
	slices.SortStableFunc(out, func(a, b TimelineItem) int { return cmp.Compare(a.At.UnixNano(), b.At.UnixNano()) })
	return out
}
