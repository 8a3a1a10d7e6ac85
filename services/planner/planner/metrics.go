package planner

import (
	"sync"

	"github.com/flotilla-fleet/flotilla/pkg/metrics"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// workflowGauge keeps flotilla_planner_workflows, the workflows the
// planner holds by state. It follows the header rows the planner commits,
// one transition each, and is recounted only when the workflows held
// change wholesale (partitions assigned or revoked, a rebuild), so a
// scrape reads a few counts and never the workflows.
type workflowGauge struct {
	m *metrics.Planner // nil: no metrics, and nothing is kept

	mu     sync.Mutex
	states map[string]records.WorkflowState
	counts map[records.WorkflowState]int
}

func newWorkflowGauge(m *metrics.Planner) *workflowGauge {
	g := &workflowGauge{m: m, states: map[string]records.WorkflowState{}, counts: map[records.WorkflowState]int{}}
	if m != nil {
		for _, s := range workflowStates { // present at 0 before the first
			m.SetWorkflows(string(s), 0)
		}
	}
	return g
}

// workflowStates are the states a workflow's header row may say.
var workflowStates = []records.WorkflowState{
	records.WorkflowPending, records.WorkflowRunning, records.WorkflowPaused, records.WorkflowSucceeded,
	records.WorkflowFailed, records.WorkflowCancelled, records.WorkflowRollingBack, records.WorkflowRolledBack,
	records.WorkflowRejected,
}

// committed follows the header rows of a committed transaction, to the
// states the workflows held have now: a workflow its partition's
// revocation dropped meanwhile is not counted again. Callers hold the
// planner's lock.
func (g *workflowGauge) committed(out decide.Outputs, held map[string]*decide.Workflow) {
	if g.m == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, row := range out.Rows {
		if row.Workflow == nil {
			continue
		}
		id := row.Workflow.ID
		if w, ok := held[id]; ok && w.State != "" {
			g.move(id, w.State)
		} else {
			g.drop(id)
		}
	}
}

// recount counts the workflows held afresh. Callers hold the planner's lock.
func (g *workflowGauge) recount(held map[string]*decide.Workflow) {
	if g.m == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	clear(g.states)
	for s := range g.counts {
		g.counts[s] = 0
	}
	for id, w := range held {
		if w.State != "" { // target rows read before their header's
			g.states[id] = w.State
			g.counts[w.State]++
		}
	}
	for s, n := range g.counts {
		g.m.SetWorkflows(string(s), n)
	}
}

func (g *workflowGauge) drop(id string) {
	if from, ok := g.states[id]; ok {
		delete(g.states, id)
		g.counts[from]--
		g.m.SetWorkflows(string(from), g.counts[from])
	}
}

func (g *workflowGauge) move(id string, to records.WorkflowState) {
	from, ok := g.states[id]
	if ok && from == to {
		return
	}
	if ok {
		g.counts[from]--
		g.m.SetWorkflows(string(from), g.counts[from])
	}
	g.states[id] = to
	g.counts[to]++
	g.m.SetWorkflows(string(to), g.counts[to])
}
