package authz

import (
	"errors"
	"testing"
)

func testPolicy() *Policy {
	return NewPolicy([]Role{
		{Name: "dev", Rules: []Rule{
			{Name: "dev-anything", Actions: []string{ActionAll}, Selector: "env=dev"},
		}},
		{Name: "sre", Rules: []Rule{
			{Name: "prod-sre-only", Actions: []string{ActionSubmit, ActionPause, ActionResume, ActionCancel, ActionRollback, ActionRetry}, Selector: "env=prod"},
			{Name: "prod-approvals", Actions: []string{ActionApprove}, Selector: "env=prod", Phases: []string{"canary", "rest"}, Approvals: 2, SeparateApprover: true},
		}},
		{Name: "release", Rules: []Rule{
			{Name: "upgrades-only", Actions: []string{ActionSubmit}, Operations: []string{"upgrade"}},
		}},
		{Name: "ops", Rules: []Rule{
			{Name: "inventory", Actions: []string{ActionInventory, ActionPolicy}},
		}},
	}, map[string][]string{"alice": {"dev"}, "sam": {"sre"}, "rita": {"release"}, "otto": {"ops"}, "nobody": nil})
}

var (
	prod1 = Cluster{ID: "p1", Labels: map[string]string{"env": "prod"}}
	prod2 = Cluster{ID: "p2", Labels: map[string]string{"env": "prod"}}
	dev1  = Cluster{ID: "d1", Labels: map[string]string{"env": "dev"}}
	gone  = Cluster{ID: "x1"} // no longer in the inventory
)

func TestCheck(t *testing.T) {
	p := testPolicy()
	for _, tc := range []struct {
		name string
		req  Request
		want string // "" allowed
	}{
		{"dev submits to dev", Request{Principal: "alice", Action: ActionSubmit, Operation: "upgrade", Clusters: []Cluster{dev1}}, ""},
		{"dev submits to prod", Request{Principal: "alice", Action: ActionSubmit, Operation: "upgrade", Clusters: []Cluster{dev1, prod1}},
			`not authorised: alice (roles dev) may not submit upgrade to clusters matching env=prod: rule "prod-sre-only" allows only role sre`},
		{"sre submits to prod", Request{Principal: "sam", Action: ActionSubmit, Operation: "restart", Clusters: []Cluster{prod1, prod2}}, ""},
		{"sre to dev and prod", Request{Principal: "sam", Action: ActionSubmit, Operation: "restart", Clusters: []Cluster{prod1, dev1}},
			`not authorised: sam (roles sre) may not submit restart to clusters matching env=dev: rule "dev-anything" allows only role dev`},
		{"release upgrades anywhere", Request{Principal: "rita", Action: ActionSubmit, Operation: "upgrade", Clusters: []Cluster{prod1, dev1, gone}}, ""},
		{"release may not restart", Request{Principal: "rita", Action: ActionSubmit, Operation: "restart", Clusters: []Cluster{prod1}},
			`not authorised: rita (roles release) may not submit restart to clusters matching env=prod: rule "prod-sre-only" allows only role sre`},
		{"a cluster no rule covers", Request{Principal: "sam", Action: ActionPause, Workflow: "w1", Clusters: []Cluster{gone}},
			`not authorised: sam (roles sre) may not pause workflow w1 on cluster x1: no rule of any role allows it`},
		{"approve a listed phase", Request{Principal: "sam", Action: ActionApprove, Workflow: "w1", Phase: "canary", Clusters: []Cluster{prod1}}, ""},
		{"approve another phase", Request{Principal: "sam", Action: ActionApprove, Workflow: "w1", Phase: "final", Clusters: []Cluster{prod1}},
			`not authorised: sam (roles sre) may not approve the gate of phase final of workflow w1 on cluster p1 (env=prod): no rule of any role allows it`},
		{"no roles", Request{Principal: "nobody", Action: ActionCancel, Workflow: "w1", Clusters: []Cluster{dev1}},
			`not authorised: nobody (no roles) may not cancel workflow w1 on clusters matching env=dev: rule "dev-anything" allows only role dev`},
		{"inventory", Request{Principal: "otto", Action: ActionInventory, Clusters: []Cluster{prod1}}, ""},
		{"inventory by dev, prod cluster", Request{Principal: "alice", Action: ActionInventory, Clusters: []Cluster{prod1}},
			`not authorised: alice (roles dev) may not write the inventory record of cluster p1 (env=prod): rule "inventory" allows only role ops`},
		{"policy", Request{Principal: "otto", Action: ActionPolicy}, ""},
		{"policy by sre", Request{Principal: "sam", Action: ActionPolicy},
			`not authorised: sam (roles sre) may not write deployment policies: rule "inventory" allows only role ops`},
	} {
		err := p.Check(tc.req)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || err.Error() != tc.want || !errors.Is(err, ErrDenied)):
			t.Errorf("%s:\n got %v\nwant %s", tc.name, err, tc.want)
		}
	}
}

func TestGateOf(t *testing.T) {
	p := testPolicy()
	if g := p.GateOf([]Cluster{dev1}, "upgrade", "canary"); g.Approvals != 1 || g.Separate {
		t.Errorf("dev gate %+v, want one approval by anyone", g)
	}
	if g := p.GateOf([]Cluster{dev1, prod1}, "upgrade", "canary"); g.Approvals != 2 || !g.Separate || len(g.Rules) != 1 || g.Rules[0] != "prod-approvals" {
		t.Errorf("prod gate %+v, want two approvals, not by the requester, by rule prod-approvals", g)
	}
}

func TestCheckRole(t *testing.T) {
	for _, r := range []Role{
		{Name: "x", Rules: []Rule{{Name: "a"}}},
		{Name: "x", Rules: []Rule{{Name: "a", Actions: []string{"deploy"}}}},
		{Name: "x", Rules: []Rule{{Name: "a", Actions: []string{"submit"}, Selector: "env in prod"}}},
		{Name: "x", Rules: []Rule{{Name: "a", Actions: []string{"submit"}}, {Name: "a", Actions: []string{"pause"}}}},
	} {
		if err := CheckRole(r); err == nil {
			t.Errorf("CheckRole(%+v) = nil", r)
		}
	}
}
