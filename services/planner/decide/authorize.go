package decide

import (
	"fmt"
	"slices"
	"strings"

	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// This file authorises requests by the roles of the trust store
// (State.Authz, set when signatures are required). What separation of
// duties needs to know is in the workflow's rows: who submitted it
// (Requester), and who approved each gate (Approvals): those of the
// gate it waits at so far, and those that opened the gates behind it.

// approvers returns who approved gate so far, without opening it.
func approvers(w *Workflow, gate string) []string {
	var out []string
	for _, a := range w.Approvals {
		if a.Gate == gate {
			out = append(out, a.Principal)
		}
	}
	return out
}

// planClusters returns the clusters of a plan, with their labels.
func (d *decision) planClusters(plan rollout.Plan) []authz.Cluster {
	var out []authz.Cluster
	for _, ph := range plan.Phases {
		for _, wave := range ph.Waves {
			for _, id := range wave {
				out = append(out, d.cluster(id))
			}
		}
	}
	return out
}

// workflowClusters returns the clusters of a workflow's targets (those
// with a row and those not written yet), with their labels.
func (d *decision) workflowClusters(w *Workflow) []authz.Cluster {
	out := make([]authz.Cluster, 0, len(w.Targets)+len(w.unplanned))
	for id := range w.Targets {
		out = append(out, d.cluster(id))
	}
	for _, t := range w.unplanned {
		out = append(out, d.cluster(t.clusterID))
	}
	return out
}

func (d *decision) cluster(id string) authz.Cluster {
	c := d.s.Inventory[id] // a cluster gone from the inventory has no labels
	return authz.Cluster{ID: id, Labels: c.Labels}
}

// gatePhase is the phase a gate ("before:canary") is of.
func gatePhase(gate string) string {
	_, phase, _ := strings.Cut(gate, ":")
	return phase
}

// approval decides on an approval of w's gate by who under separation of
// duties: it returns a refusal, or records the approval and says whether
// the gate opens now (else it waits for more). Without Authz every
// approval opens the gate.
func (d *decision) approval(w *Workflow, who string) (refusal string, opens bool) {
	if d.s.Authz == nil {
		w.Approvals = append(w.Approvals, records.GateApproval{Gate: w.Gate, Principal: who})
		return "", true
	}
	g := d.s.Authz.GateOf(d.workflowClusters(w), string(w.Spec.Operation.Kind), gatePhase(w.Gate))
	rules := ""
	if len(g.Rules) > 0 {
		rules = fmt.Sprintf(" (rule %q)", strings.Join(g.Rules, `", "`))
	}
	if g.Separate && who == w.Requester {
		return fmt.Sprintf("%s submitted workflow %s and may not approve its gates: separation of duties%s requires another approver", who, w.ID, rules), false
	}
	prior := approvers(w, w.Gate)
	if slices.Contains(prior, who) {
		return fmt.Sprintf("%s already approved gate %s of workflow %s: it needs %d distinct approvals%s, %d so far", who, w.Gate, w.ID, g.Approvals, rules, len(prior)), false
	}
	w.Approvals = append(w.Approvals, records.GateApproval{Gate: w.Gate, Principal: who})
	return "", len(prior)+1 >= g.Approvals
}

// pendingApprovals says how many approvals w's gate has and needs.
func (d *decision) pendingApprovals(w *Workflow) string {
	g := d.s.Authz.GateOf(d.workflowClusters(w), string(w.Spec.Operation.Kind), gatePhase(w.Gate))
	return fmt.Sprintf("%d of %d approvals (%s)", len(approvers(w, w.Gate)), g.Approvals, strings.Join(approvers(w, w.Gate), ", "))
}
