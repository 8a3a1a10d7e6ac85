package dashboard

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/selector"
)

var (
	testClouds   = []string{"aws", "azure", "gcp"}
	testEnvs     = []string{"prod", "staging", "dev"}
	testStatuses = []records.HealthStatus{records.HealthHealthy, records.HealthDegraded, records.HealthUnhealthy, records.HealthUnknown}
)

// randomCluster returns a cluster with random labels, some of them absent.
func randomCluster(rng *rand.Rand, id string) inventory.Cluster {
	labels := map[string]string{"cloud": testClouds[rng.IntN(len(testClouds))]}
	if rng.IntN(4) > 0 {
		labels["env"] = testEnvs[rng.IntN(len(testEnvs))]
	}
	if rng.IntN(3) == 0 {
		labels["tier"] = "gold"
	}
	return inventory.Cluster{ID: id, Driver: "sim", Labels: labels, Version: fmt.Sprintf("3.%d.0", rng.IntN(3))}
}

// bruteFleet computes what Fleet should say by looking at every cluster.
func bruteFleet(t *testing.T, inv map[string]inventory.Cluster, health map[string]records.Health, sel, key string) (HealthCounts, map[string]HealthCounts, []string) {
	t.Helper()
	s := selector.MustParse(sel)
	var all HealthCounts
	groups := map[string]HealthCounts{}
	var ids []string
	for id, c := range inv {
		if !s.Matches(c.Labels) {
			continue
		}
		st, version, drifted := records.HealthUnknown, c.Version, false
		if h, ok := health[id]; ok {
			st, drifted = h.Status, len(h.Drift) > 0
			if h.ObservedVersion != "" {
				version = h.ObservedVersion
			}
		}
		all.add(st, drifted, 1)
		value := c.Labels[key]
		switch key {
		case GroupHealth:
			value = string(st)
		case GroupVersion:
			value = version
		}
		g := groups[value]
		g.add(st, drifted, 1)
		groups[value] = g
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return all, groups, ids
}

// TestFleetCountsAgreeWithACountOfEveryCluster applies random
// registrations, removals and health signals, and checks the counts the
// model keeps (and those it computes for a selector, from its index)
// against a count of every cluster, after each step.
func TestFleetCountsAgreeWithACountOfEveryCluster(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		m := NewModel()
		inv := map[string]inventory.Cluster{}
		health := map[string]records.Health{}
		for step := range 300 {
			id := fmt.Sprintf("c-%02d", rng.IntN(40))
			switch rng.IntN(5) {
			case 0, 1:
				c := randomCluster(rng, id)
				inv[id] = c
				m.ApplyCluster(id, &c)
			case 2:
				delete(inv, id)
				m.ApplyCluster(id, nil)
			case 3:
				h := records.Health{ClusterID: id, Status: testStatuses[rng.IntN(len(testStatuses))], ObservedVersion: fmt.Sprintf("3.%d.0", rng.IntN(3)), Heartbeat: rng.IntN(2) == 0}
				if rng.IntN(3) == 0 {
					h.Drift = []records.DriftItem{{Key: "version", Observed: h.ObservedVersion, Desired: "3.9.1"}}
				}
				health[id] = h
				m.ApplyHealth(id, &h)
			case 4:
				delete(health, id)
				m.ApplyHealth(id, nil)
			}
			for _, q := range []struct{ sel, key string }{
				{"", "cloud"}, {"", "env"}, {"", GroupHealth}, {"", GroupVersion},
				{"cloud=aws", "env"}, {"env in (prod,staging),tier", "cloud"}, {"cloud=a*", GroupHealth}, {"env!=prod", "tier"}, {"!env", "cloud"},
			} {
				v, err := m.Fleet(q.sel, q.key, 1)
				if err != nil {
					t.Fatal(err)
				}
				all, groups, ids := bruteFleet(t, inv, health, q.sel, q.key)
				if v.Health != all {
					t.Fatalf("seed %d step %d %+v: fleet counts %+v, want %+v", seed, step, q, v.Health, all)
				}
				got := map[string]HealthCounts{}
				for _, g := range v.Groups {
					if g.Total == 0 {
						t.Fatalf("seed %d step %d %+v: an empty group %q is shown", seed, step, q, g.Value)
					}
					got[g.Value] = g.HealthCounts
				}
				if len(groups) == 0 {
					groups = map[string]HealthCounts{}
				}
				if !reflect.DeepEqual(got, groups) {
					t.Fatalf("seed %d step %d %+v: groups\n got %+v\nwant %+v", seed, step, q, got, groups)
				}
				if v.Page.Total != len(ids) {
					t.Fatalf("seed %d step %d %+v: %d clusters listed, want %d", seed, step, q, v.Page.Total, len(ids))
				}
				var listed []string
				for _, c := range v.Clusters {
					listed = append(listed, c.ID)
				}
				if want := ids[:min(len(ids), PageSize)]; !slices.Equal(listed, want) && len(want) > 0 {
					t.Fatalf("seed %d step %d %+v: first page %v, want %v", seed, step, q, listed, want)
				}
			}
		}
	}
}

func TestFleetPagesAndGroupLinks(t *testing.T) {
	m := NewModel()
	for i := range 120 {
		c := inventory.Cluster{ID: fmt.Sprintf("k-%03d", i), Driver: "sim", Labels: map[string]string{"env": []string{"prod", "dev"}[i%2]}}
		if i%10 == 0 {
			delete(c.Labels, "env")
		}
		m.ApplyCluster(c.ID, &c)
	}
	v, err := m.Fleet("", "env", 3)
	if err != nil {
		t.Fatal(err)
	}
	if v.Page != (Page{Number: 3, Pages: 3, Total: 120}) || len(v.Clusters) != 20 || v.Clusters[0].ID != "k-100" {
		t.Fatalf("page 3: %+v, %d clusters from %s", v.Page, len(v.Clusters), v.Clusters[0].ID)
	}
	var sels []string
	for _, g := range v.Groups {
		sels = append(sels, fmt.Sprintf("%s:%d:%s", g.Value, g.Total, g.Selector))
	}
	if want := []string{"dev:60:env=dev", "prod:48:env=prod", ":12:!env"}; !slices.Equal(sels, want) {
		t.Fatalf("groups %v, want %v (the clusters without the label last, each a link to its selector)", sels, want)
	}
	if v, _ := m.Fleet("env=dev", "env", 99); v.Page.Number != 2 {
		t.Fatalf("a page past the end shows the last: %+v", v.Page)
	}
	if _, err := m.Fleet("env in (prod", "env", 1); err == nil {
		t.Fatal("a bad selector gives no error")
	}
}

func TestClusterKeepsItsHistoryAndHealthChanges(t *testing.T) {
	m := NewModel()
	c := inventory.Cluster{ID: "k-1", Driver: "sim", Version: "3.8.0", Labels: map[string]string{"env": "prod"}}
	m.ApplyCluster(c.ID, &c)
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	m.ApplyRequest(records.Request{Envelope: records.Envelope{ID: "w1", Principal: "alice", Time: t0},
		Submit: &records.SubmitRollout{Spec: rollout.Spec{Name: "up"}}})
	m.ApplyWorkflowRow("w1", &records.WorkflowRecord{Workflow: &records.Workflow{ID: "w1", Spec: rollout.Spec{Name: "up",
		Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}}, State: records.WorkflowRunning, Event: "submitted", Seq: 1}})
	m.ApplyHistory("k-1", "w1", &records.Target{WorkflowID: "w1", ClusterID: "k-1", State: records.TargetSucceeded,
		PreviousVersion: "3.8.0", Version: "3.9.1", Attempt: 1, StartedAt: t0, FinishedAt: t0.Add(time.Minute)})
	for i, s := range []records.HealthStatus{records.HealthHealthy, records.HealthHealthy, records.HealthUnhealthy} {
		h := records.Health{ClusterID: "k-1", Status: s, ObservedVersion: "3.9.1", ObservedAt: t0.Add(time.Duration(i) * time.Minute), Heartbeat: i == 1, Reasons: map[bool][]string{true: {"bad"}}[s == records.HealthUnhealthy]}
		m.ApplyHealth("k-1", &h)
	}
	v, ok := m.Cluster("k-1")
	if !ok {
		t.Fatal("no cluster k-1")
	}
	if len(v.History) != 1 || v.History[0].RequestedBy != "alice" || v.History[0].Operation != "upgrade to 3.9.1" || v.History[0].Name != "up" {
		t.Fatalf("history %+v: want one entry, requested by alice, upgrade to 3.9.1", v.History)
	}
	if len(v.Changes) != 2 || v.Changes[0].To != records.HealthUnhealthy || v.Changes[1].To != records.HealthHealthy {
		t.Fatalf("health changes %+v: want unhealthy then (older) healthy, the heartbeat not counted", v.Changes)
	}
	if _, ok := m.Cluster("nope"); ok {
		t.Fatal("an unknown cluster was found")
	}
	m.ApplyCluster("k-1", nil)
	if v, ok := m.Cluster("k-1"); !ok || v.Registered {
		t.Fatalf("a removed cluster with a history: %+v, %v; want it kept, not registered", v, ok)
	}
}

func TestAHeartbeatThatChangesNothingIsNoVisibleChange(t *testing.T) {
	m := NewModel()
	h := records.Health{ClusterID: "k-1", Status: records.HealthHealthy, ObservedVersion: "3.8.0"}
	m.ApplyHealth("k-1", &h)
	_, before := m.Changed()
	h.Heartbeat, h.ObservedAt = true, time.Now()
	m.ApplyHealth("k-1", &h)
	if _, after := m.Changed(); after != before {
		t.Fatalf("a heartbeat moved the version %d → %d: every browser would fetch its page again", before, after)
	}
	h.Status = records.HealthDegraded
	m.ApplyHealth("k-1", &h)
	if _, after := m.Changed(); after == before {
		t.Fatal("a change of health is no visible change")
	}
}

func TestPositionRoundTrips(t *testing.T) {
	p := Position{0: 12, 2: 0, 1: 7}
	if p.String() != "0:12,1:7,2:0" {
		t.Fatalf("String: %q", p.String())
	}
	back, err := ParsePosition(p.String())
	if err != nil || !reflect.DeepEqual(back, p) {
		t.Fatalf("ParsePosition: %v, %v", back, err)
	}
	for _, bad := range []string{"", "0", "0:x", "-1:3", "0:-2", "0:1,,1:2"} {
		if _, err := ParsePosition(bad); err == nil {
			t.Errorf("ParsePosition(%q) gave no error", bad)
		}
	}
}
