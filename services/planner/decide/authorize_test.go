package decide

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// authzHarness is a harness whose state authorises by role: sre may do
// anything on prod (every cluster of fleet()), where a gate needs two
// approvals by others than the requester; dev may do nothing there.
func authzHarness(t *testing.T) *harness {
	h := newHarness(t, fleet(6))
	h.s.Authz = authz.NewPolicy([]authz.Role{
		{Name: "dev", Rules: []authz.Rule{{Name: "off-prod", Actions: []string{authz.ActionAll}, Selector: "env!=prod"}}},
		{Name: "sre", Rules: []authz.Rule{
			{Name: "prod-sre-only", Actions: []string{authz.ActionAll}, Selector: "env=prod"},
			{Name: "prod-gates", Actions: []string{authz.ActionApprove}, Selector: "env=prod", Approvals: 2, SeparateApprover: true},
		}},
	}, map[string][]string{"alice": {"dev"}, "sam": {"sre"}, "sue": {"sre"}, "sid": {"sre"}})
	return h
}

func (h *harness) submitAs(who, id string, spec rollout.Spec, refused error) {
	h.t.Helper()
	h.do(Submit{Key: id, Refused: refused, Request: records.Request{
		Envelope: records.Envelope{ID: id, Time: h.now, Principal: who}, Submit: &records.SubmitRollout{Spec: spec}}})
}

func (h *harness) controlAs(who, workflowID string, action records.ControlAction) string {
	h.t.Helper()
	id := h.id("ctl")
	h.do(Submit{Key: records.ControlKey(workflowID, id), Request: records.Request{
		Envelope: records.Envelope{ID: id, Time: h.now, Principal: who},
		Control:  &records.ControlWorkflow{WorkflowID: workflowID, Action: action}}})
	return id
}

func TestRequestsAreAuthorisedByRole(t *testing.T) {
	h := authzHarness(t)
	gated := upgradeSpec(rollout.Phase{Name: "all", Approve: rollout.ApproveBefore})
	h.submitAs("alice", "r-alice", upgradeSpec(), nil)
	h.submitAs("sam", "r-forged", upgradeSpec(), errors.New("forged: signed with key k1 of bob, but names principal \"sam\""))
	h.submitAs("sam", "r-sam", gated, nil)
	for _, tc := range []struct{ id, want string }{
		{"r-alice", `request r-alice refused: not authorised: alice (roles dev) may not submit upgrade to clusters matching env=prod: rule "prod-sre-only" allows only role sre`},
		{"r-forged", `request r-forged by sam refused: forged: signed with key k1 of bob, but names principal "sam"`},
	} {
		if w := h.workflow(tc.id); w.State != records.WorkflowRejected || w.Reason != tc.want {
			t.Errorf("%s: %s (%s), want rejected: %s", tc.id, w.State, w.Reason, tc.want)
		}
	}
	w := h.workflow("r-sam")
	if w.State != records.WorkflowRunning || w.Gate != "before:all" || w.Requester != "sam" || len(w.Progress().Approved) != 0 {
		t.Fatalf("sam's rollout: %s at gate %q, requester %q, approved %v; want running at before:all, by sam, nothing approved", w.State, w.Gate, w.Requester, w.Progress().Approved)
	}

	steps := []struct {
		who, want string // want: the refusal; "" accepted
		opens     bool
	}{
		{"alice", `approve of workflow r-sam refused: not authorised: alice (roles dev) may not approve the gate of phase all of workflow r-sam on clusters matching env=prod: rule "prod-sre-only" allows only role sre`, false},
		{"sam", `approve of workflow r-sam refused: sam submitted workflow r-sam and may not approve its gates: separation of duties (rule "prod-gates") requires another approver`, false},
		{"sue", "", false},
		{"sue", `approve of workflow r-sam refused: sue already approved gate before:all of workflow r-sam: it needs 2 distinct approvals (rule "prod-gates"), 1 so far`, false},
		{"sid", "", true},
	}
	for i, st := range steps {
		id := h.controlAs(st.who, "r-sam", records.ActionApprove)
		w := h.workflow("r-sam")
		if st.want != "" {
			if r := h.workflow(id); r == nil || r.Reason != st.want {
				t.Fatalf("step %d (%s): refusal %v, want %q", i, st.who, r, st.want)
			}
			continue
		}
		if w.LastControl != id || (w.Gate == "") != st.opens {
			t.Fatalf("step %d (%s): last control %s, gate %q; want the approval applied, the gate open: %v", i, st.who, w.LastControl, w.Gate, st.opens)
		}
		if !st.opens && !strings.Contains(w.Reason, "1 of 2 approvals (sue)") {
			t.Errorf("after sue's approval the reason is %q, want it to count 1 of 2", w.Reason)
		}
		// The approvals so far are in the rows: a planner rebuilt from them agrees.
		if got := approvers(h.rebuilt().Workflows["r-sam"], "before:all"); !slices.Equal(got, approvers(w, "before:all")) {
			t.Errorf("step %d: rebuilt approvers %v, live %v", i, got, approvers(w, "before:all"))
		}
	}
	// Who opened the gate is kept, and only those the planner accepted.
	want := []GateApprovals{{Gate: "before:all", By: []string{"sue", "sid"}, Opened: true}}
	if w := h.workflow("r-sam"); !slices.Contains(w.Approved, "before:all") || !reflect.DeepEqual(w.Progress().Approvals, want) {
		t.Errorf("approved %v, approvals %+v; want the gate opened by %+v", w.Approved, w.Progress().Approvals, want)
	}
	if got := h.rebuilt().Workflows["r-sam"].Progress().Approvals; !reflect.DeepEqual(got, want) {
		t.Errorf("rebuilt approvals %+v, want %+v", got, want)
	}
	if id := h.controlAs("alice", "r-sam", records.ActionPause); h.workflow(id).State != records.WorkflowRejected {
		t.Error("alice paused a prod rollout")
	}
}
