package dashboard

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/selector"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// The views are what each page shows, computed from the model when asked
// for; each page renders one and its JSON twin under /api/ is the same
// value encoded.

// PageSize is how many rows a page of clusters or rollouts lists.
const PageSize = 50

// CellsPerWave is how many clusters of a wave a rollout's grid draws;
// the rest of a larger wave is counted, and listed a page at a time.
const CellsPerWave = 500

// Page says where a paged list is.
type Page struct {
	Number int `json:"page"` // 1-based
	Pages  int `json:"pages"`
	Total  int `json:"total"`
}

func paginate(total, number int) (Page, int, int) {
	pages := max(1, (total+PageSize-1)/PageSize)
	number = min(max(number, 1), pages)
	from := (number - 1) * PageSize
	return Page{Number: number, Pages: pages, Total: total}, from, min(from+PageSize, total)
}

// FleetView is the fleet page: clusters grouped by a label, with their
// health, and a page of the clusters the selector picks.
type FleetView struct {
	Selector string       `json:"selector,omitempty"`
	GroupBy  string       `json:"groupBy"`
	Keys     []string     `json:"keys"` // what the fleet can be grouped by
	Health   HealthCounts `json:"health"`
	Groups   []Group      `json:"groups"`
	Clusters []ClusterRow `json:"clusters"`
	Page     Page         `json:"pageOfClusters"`
}

// Group is the clusters holding one value of the grouping label.
type Group struct {
	Value string `json:"value"` // "" for the clusters without the label
	HealthCounts
	// Selector selects the group's clusters, within the fleet view's.
	Selector string `json:"selector"`
}

// ClusterRow is one cluster in a list: what Kafka operators look at first.
type ClusterRow struct {
	ID      string               `json:"id"`
	Kind    string               `json:"kind,omitempty"`
	Version string               `json:"version,omitempty"`
	Health  records.HealthStatus `json:"health"`
	Reasons []string             `json:"reasons,omitempty"`
	Drifted bool                 `json:"drifted,omitempty"`
	// What a Kafka probe measured ("" where it did not): brokers online
	// and expected, the controller, offline, under-replicated and
	// under-min-ISR partitions.
	BrokersOnline   string `json:"brokersOnline,omitempty"`
	BrokersExpected string `json:"brokersExpected,omitempty"`
	Controller      string `json:"controller,omitempty"`
	Offline         string `json:"offlinePartitions,omitempty"`
	UnderReplicated string `json:"underReplicatedPartitions,omitempty"`
	UnderMinISR     string `json:"underMinIsrPartitions,omitempty"`
}

func (c *cluster) row() ClusterRow {
	d := c.health.Details
	return ClusterRow{
		ID: c.info.ID, Kind: c.info.Labels["kind"], Version: c.version(), Health: c.status(), Reasons: c.health.Reasons, Drifted: c.drifted(),
		BrokersOnline: d["brokers.online"], BrokersExpected: d["brokers.expected"], Controller: d["controller"],
		Offline: d["partitions.offline"], UnderReplicated: d["partitions.under_replicated"], UnderMinISR: d["partitions.under_min_isr"],
	}
}

// value is a cluster's value of a grouping key, and whether it has one.
func (c *cluster) value(key string) (string, bool) {
	switch key {
	case GroupHealth:
		return string(c.status()), true
	case GroupVersion:
		return c.version(), true
	}
	v, ok := c.info.Labels[key]
	return v, ok
}

// Fleet returns the fleet page for a selector (in the rollout spec's
// syntax; "" for every cluster), grouped by key, with page number of the
// clusters it picks. Without a selector the counts are the model's own;
// with one, only the clusters holding what it requires (selector.Required)
// are looked at.
func (m *Model) Fleet(sel string, key string, page int) (FleetView, error) {
	s, err := selector.Parse(sel)
	if err != nil {
		return FleetView{}, fmt.Errorf("selector: %w", err)
	}
	if key == "" {
		key = "env"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	v := FleetView{Selector: sel, GroupBy: key, Keys: m.groupKeys()}
	var picked []string // the selected clusters' IDs, sorted
	if s.Empty() {
		v.Health = m.all
		for value, h := range m.groups[key] {
			v.Groups = append(v.Groups, Group{Value: value, HealthCounts: *h})
		}
		if key != GroupHealth && key != GroupVersion {
			if without := m.all.Total - sumTotals(v.Groups); without > 0 {
				v.Groups = append(v.Groups, Group{HealthCounts: m.without(key)})
			}
		}
		picked = m.sortedIDs()
	} else {
		groups := map[string]*HealthCounts{}
		for _, id := range m.candidates(s) {
			c := m.clusters[id]
			if c == nil || !c.registered || !s.Matches(c.info.Labels) {
				continue
			}
			picked = append(picked, id)
			st, d := c.status(), c.drifted()
			v.Health.add(st, d, 1)
			value, _ := c.value(key)
			h := groups[value]
			if h == nil {
				h = &HealthCounts{}
				groups[value] = h
			}
			h.add(st, d, 1)
		}
		slices.Sort(picked)
		for value, h := range groups {
			v.Groups = append(v.Groups, Group{Value: value, HealthCounts: *h})
		}
	}
	slices.SortFunc(v.Groups, func(a, b Group) int {
		if (a.Value == "") != (b.Value == "") { // the clusters without the label last
			return boolOrder(a.Value == "")
		}
		return strings.Compare(a.Value, b.Value)
	})
	for i := range v.Groups {
		v.Groups[i].Selector = groupSelector(sel, key, v.Groups[i].Value)
	}
	var from, to int
	v.Page, from, to = paginate(len(picked), page)
	for _, id := range picked[from:to] {
		v.Clusters = append(v.Clusters, m.clusters[id].row())
	}
	return v, nil
}

// without counts the registered clusters that lack label key: the fleet
// less those counted under one of its values.
func (m *Model) without(key string) HealthCounts {
	h := m.all
	for _, g := range m.groups[key] {
		h.Total -= g.Total
		h.Healthy -= g.Healthy
		h.Degraded -= g.Degraded
		h.Unhealthy -= g.Unhealthy
		h.Unknown -= g.Unknown
		h.Drifted -= g.Drifted
	}
	return h
}

func sumTotals(groups []Group) int {
	n := 0
	for _, g := range groups {
		n += g.Total
	}
	return n
}

// groupSelector is the selector of one group of a fleet view; the pseudo
// labels (health, version) have none, so their groups are not links.
func groupSelector(sel, key, value string) string {
	if key == GroupHealth || key == GroupVersion {
		return ""
	}
	req := key + "=" + value
	if value == "" {
		req = "!" + key
	}
	if strings.TrimSpace(sel) == "" {
		return req
	}
	return sel + "," + req
}

// groupKeys returns what the fleet can be grouped by, sorted.
func (m *Model) groupKeys() []string {
	keys := make([]string, 0, len(m.groups))
	for k := range m.groups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// candidates returns the IDs of the clusters that may match s: those of
// the smallest set the index holds for one of its required keys, or
// every cluster when it requires none (k!=v, notin, !k only).
func (m *Model) candidates(s selector.Selector) []string {
	var best []string
	found := false
	s.Required(func(key string, matches func(string) bool) bool {
		var ids []string
		for value, set := range m.index[key] {
			if matches(value) {
				for id := range set {
					ids = append(ids, id)
				}
			}
		}
		if !found || len(ids) < len(best) {
			best, found = ids, true
		}
		return len(best) > 0
	})
	if found {
		return best
	}
	return m.sortedIDs()
}

// ClusterView is a cluster's page: its labels and health now, its
// history of operations across every rollout, its changes of health.
type ClusterView struct {
	ID         string               `json:"id"`
	Registered bool                 `json:"registered"`
	Driver     string               `json:"driver,omitempty"`
	Address    string               `json:"address,omitempty"`
	Labels     map[string]string    `json:"labels,omitempty"`
	Version    string               `json:"registeredVersion,omitempty"`
	Health     records.HealthStatus `json:"health"`
	Reasons    []string             `json:"reasons,omitempty"`
	Observed   string               `json:"observedVersion,omitempty"`
	ObservedAt *time.Time           `json:"observedAt,omitempty"`
	Details    []Detail             `json:"details,omitempty"`
	// Summary is the cluster's row in the fleet's list: what Kafka
	// operators look at first.
	Summary ClusterRow `json:"summary"`
	// Drift is how the cluster differs from its desired state, as its
	// last signal says.
	Drift   []records.DriftItem `json:"drift,omitempty"`
	History []HistoryItem       `json:"history"`
	Changes []HealthChange      `json:"healthChanges"`
}

// Detail is one measurement of a cluster's last probe.
type Detail struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HistoryItem is one rollout's operation on a cluster, as it ended.
type HistoryItem struct {
	WorkflowID      string              `json:"workflowId"`
	Name            string              `json:"name,omitempty"` // the rollout's, while its header is kept
	RequestedBy     string              `json:"requestedBy,omitempty"`
	Operation       string              `json:"operation"`
	State           records.TargetState `json:"state"`
	PreviousVersion string              `json:"previousVersion,omitempty"`
	Version         string              `json:"version,omitempty"`
	Attempts        int                 `json:"attempts"`
	StartedAt       *time.Time          `json:"startedAt,omitempty"`
	FinishedAt      time.Time           `json:"finishedAt"`
	Reason          string              `json:"reason,omitempty"`
}

// Cluster returns a cluster's page, and false if the model knows nothing
// of it.
func (m *Model) Cluster(id string) (ClusterView, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.clusters[id]
	if !ok {
		return ClusterView{}, false
	}
	v := ClusterView{ID: id, Registered: c.registered, Driver: c.info.Driver, Address: c.info.Address, Labels: c.info.Labels,
		Version: c.info.Version, Health: c.status(), History: []HistoryItem{}, Changes: slices.Clone(c.changes), Summary: c.row()}
	if c.probed {
		v.Reasons, v.Observed, v.Drift = c.health.Reasons, c.health.ObservedVersion, c.health.Drift
		at := c.health.ObservedAt
		v.ObservedAt = &at
		for name, value := range c.health.Details {
			v.Details = append(v.Details, Detail{name, value})
		}
		slices.SortFunc(v.Details, func(a, b Detail) int { return strings.Compare(a.Name, b.Name) })
	}
	slices.Reverse(v.Changes) // newest first
	for wid, t := range c.history {
		item := HistoryItem{WorkflowID: wid, State: t.State, PreviousVersion: t.PreviousVersion, Version: t.Version,
			Attempts: t.Attempt, FinishedAt: t.FinishedAt, Reason: t.Reason}
		if !t.StartedAt.IsZero() {
			at := t.StartedAt
			item.StartedAt = &at
		}
		op := t.Operation
		if w, ok := m.workflows.Workflows[wid]; ok {
			item.Name = w.Spec.Name
			if op.Kind == "" {
				op = w.Spec.Operation
			}
		}
		item.Operation = op.String()
		item.RequestedBy = m.requestedBy(wid)
		v.History = append(v.History, item)
	}
	slices.SortFunc(v.History, func(a, b HistoryItem) int {
		return cmp.Or(b.FinishedAt.Compare(a.FinishedAt), strings.Compare(a.WorkflowID, b.WorkflowID)) // newest first
	})
	return v, true
}

// RolloutsView is the rollouts page: every rollout, newest first.
type RolloutsView struct {
	Rollouts []RolloutRow `json:"rollouts"`
	Page     Page         `json:"page"`
}

// RolloutRow is one rollout in the list, with its progress per phase.
type RolloutRow struct {
	ID          string                `json:"id"`
	Name        string                `json:"name"`
	State       records.WorkflowState `json:"state"`
	Reason      string                `json:"reason,omitempty"`
	Operation   string                `json:"operation"`
	RequestedBy string                `json:"requestedBy,omitempty"`
	CreatedAt   time.Time             `json:"createdAt"`
	RollbackOf  string                `json:"rollbackOf,omitempty"`
	decide.Counts
	Phases []PhaseRow `json:"phases"`
}

// PhaseRow is one phase's progress in the rollouts list.
type PhaseRow struct {
	Name  string `json:"name"`
	State string `json:"state"`
	decide.Counts
	Waves int `json:"waves"`
	// Wave is the wave in progress (1-based), 0 when none is.
	Wave int `json:"wave,omitempty"`
}

// Rollouts returns a page of every rollout, newest first.
func (m *Model) Rollouts(page int) RolloutsView {
	m.mu.Lock()
	defer m.mu.Unlock()
	type entry struct {
		id string
		at time.Time
	}
	var all []entry
	for id, w := range m.workflows.Workflows {
		if w.State != "" {
			all = append(all, entry{id, w.CreatedAt})
		}
	}
	slices.SortFunc(all, func(a, b entry) int { return cmp.Or(b.at.Compare(a.at), strings.Compare(a.id, b.id)) })
	v := RolloutsView{Rollouts: []RolloutRow{}}
	var from, to int
	v.Page, from, to = paginate(len(all), page)
	for _, e := range all[from:to] {
		w, _ := m.workflow(e.id)
		p := w.Progress()
		row := RolloutRow{ID: p.ID, Name: p.Name, State: p.State, Reason: p.Reason, Operation: p.Operation.String(),
			CreatedAt: p.CreatedAt, RollbackOf: p.RollbackOf, Counts: p.Counts, Phases: []PhaseRow{}}
		row.RequestedBy = m.requestedBy(e.id)
		for _, ph := range p.Phases {
			pr := PhaseRow{Name: ph.Name, State: ph.State, Counts: ph.Counts, Waves: len(ph.Waves)}
			for _, wv := range ph.Waves {
				if inProgress(wv.State) {
					pr.Wave = wv.Wave
				}
			}
			row.Phases = append(row.Phases, pr)
		}
		v.Rollouts = append(v.Rollouts, row)
	}
	return v
}

// RolloutView is a rollout's page: its phases and waves as a grid of
// clusters, its gates, waits, failures and timeline.
type RolloutView struct {
	decide.Progress
	OperationText string         `json:"operationText"`
	RequestedBy   string         `json:"requestedBy,omitempty"`
	Failures      []Failure      `json:"failures"`
	Timeline      []TimelineItem `json:"timeline"`
	// Current is the wave in progress, "phase/wave" (1-based), "" when none.
	Current string `json:"current,omitempty"`
}

// Failure is a cluster of a rollout that failed, with why.
type Failure struct {
	Cluster string `json:"cluster"`
	Phase   string `json:"phase"`
	Wave    int    `json:"wave"`
	Reason  string `json:"reason"`
}

// Rollout returns a rollout's page, and false if there is no such
// rollout. A wave's clusters beyond CellsPerWave are counted, not drawn.
func (m *Model) Rollout(id string) (RolloutView, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.workflow(id)
	if !ok {
		return RolloutView{}, false
	}
	v := RolloutView{Progress: w.Progress(), Failures: []Failure{}, Timeline: sortedTimeline(m.timelines[id])}
	v.OperationText = v.Operation.String()
	v.RequestedBy = m.requestedBy(id)
	for pi := range v.Phases {
		ph := &v.Phases[pi]
		for wi := range ph.Waves {
			wv := &ph.Waves[wi]
			if inProgress(wv.State) {
				v.Current = strconv.Itoa(pi+1) + "/" + strconv.Itoa(wv.Wave)
			}
			for _, c := range wv.Clusters {
				if c.State == records.TargetFailed {
					v.Failures = append(v.Failures, Failure{Cluster: c.ID, Phase: ph.Name, Wave: wv.Wave, Reason: c.Reason})
				}
			}
			if len(wv.Clusters) > CellsPerWave {
				wv.Clusters = wv.Clusters[:CellsPerWave]
			}
		}
	}
	return v, true
}

// inProgress reports whether a wave in this state is the rollout's
// current one: running, baking, paused, or the next to run behind a gate.
func inProgress(state string) bool {
	switch state {
	case "running", "baking", "paused", "awaiting approval":
		return true
	}
	return false
}

// boolOrder orders true after false.
func boolOrder(last bool) int {
	if last {
		return 1
	}
	return -1
}
