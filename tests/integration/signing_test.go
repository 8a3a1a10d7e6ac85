package integration

import (
	"context"
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/pkg/trust"
	"github.com/flotilla-fleet/flotilla/services/notifier/dashboard"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// securedFleet is a fleet whose services require signatures, with a trust
// store written by the trust root: ops writes the inventory; alice (dev)
// may do anything off prod; sam, sue and sid (sre) on prod, where a gate
// needs two approvals by others than the requester.
type securedFleet struct {
	*fleettest.Fleet
	signers map[string]keys.Signer // by name: alice, sam, sue, sid, ops, and alice's expired and revoked keys
	root    ed25519.PublicKey      // the trust root's
}

func newKey(t *testing.T) keys.Signer {
	t.Helper()
	_, priv, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return keys.NewSigner(priv)
}

func startSecured(t *testing.T, clusters int) *securedFleet {
	t.Helper()
	root := newKey(t)
	sf := &securedFleet{signers: map[string]keys.Signer{}, root: root.Public()}
	for _, n := range []string{"alice", "alice-expired", "alice-revoked", "sam", "sue", "sid", "ops"} {
		sf.signers[n] = newKey(t)
	}
	key := func(n string) records.TrustKey {
		return records.TrustKey{ID: sf.signers[n].ID, Public: sf.signers[n].Public()}
	}
	expired, revoked := key("alice-expired"), key("alice-revoked")
	expired.Expires = time.Now().Add(-time.Hour)
	revoked.Revoked = time.Now().Add(-time.Minute)
	store := []records.TrustRecord{
		{Principal: &records.TrustPrincipal{Name: "ops", Roles: []string{"ops"}, Keys: []records.TrustKey{key("ops")}}},
		{Principal: &records.TrustPrincipal{Name: "alice", Roles: []string{"dev"}, Keys: []records.TrustKey{key("alice"), expired, revoked}}},
		{Principal: &records.TrustPrincipal{Name: "sam", Roles: []string{"sre"}, Keys: []records.TrustKey{key("sam")}}},
		{Principal: &records.TrustPrincipal{Name: "sue", Roles: []string{"sre"}, Keys: []records.TrustKey{key("sue")}}},
		{Principal: &records.TrustPrincipal{Name: "sid", Roles: []string{"sre"}, Keys: []records.TrustKey{key("sid")}}},
		{Role: &authz.Role{Name: "ops", Rules: []authz.Rule{{Name: "inventory", Actions: []string{authz.ActionInventory, authz.ActionPolicy}}}}},
		{Role: &authz.Role{Name: "dev", Rules: []authz.Rule{{Name: "off-prod", Actions: []string{authz.ActionAll}, Selector: "env!=prod"}}}},
		{Role: &authz.Role{Name: "sre", Rules: []authz.Rule{
			{Name: "prod-sre-only", Actions: []string{authz.ActionAll}, Selector: "env=prod"},
			{Name: "prod-gates", Actions: []string{authz.ActionApprove}, Selector: "env=prod", Approvals: 2, SeparateApprover: true},
		}}},
	}
	sf.Fleet = fleettest.Start(t, fleettest.Options{
		Clusters:     clusters,
		Trust:        trust.Config{Require: true, Root: root.Public()},
		Operator:     sf.signers["ops"],
		OperatorName: "ops",
		Setup: func(f *fleettest.Fleet) {
			var recs []*kgo.Record
			for _, rec := range store {
				rec.Envelope = records.Envelope{ID: uuid.NewString(), Time: time.Now(), Principal: trust.RootPrincipal}
				key := ""
				if rec.Principal != nil {
					key = records.TrustPrincipalKey(rec.Principal.Name)
				} else {
					key = records.TrustRoleKey(rec.Role.Name)
				}
				recs = append(recs, f.SignedRecord(f.Backbone.Names().Trust, key, rec, root))
			}
			f.Produce(recs...)
		},
	})
	return sf
}

// submit produces a rollout request by who, signed with key (unsigned if
// ""), and returns its ID and record.
func (sf *securedFleet) submit(who, key string, spec rollout.Spec, at time.Time) (string, *kgo.Record) {
	id := uuid.NewString()
	req := records.Request{Envelope: records.Envelope{ID: id, Time: at, Principal: who}, Submit: &records.SubmitRollout{Spec: spec}}
	var r *kgo.Record
	if key == "" {
		r = sf.Record(sf.Backbone.Names().Requests, id, req)
	} else {
		r = sf.SignedRecord(sf.Backbone.Names().Requests, id, req, sf.signers[key])
	}
	sf.Produce(r)
	return id, r
}

func (sf *securedFleet) control(who, workflowID string, action records.ControlAction) string {
	id := uuid.NewString()
	req := records.Request{Envelope: records.Envelope{ID: id, Time: time.Now(), Principal: who},
		Control: &records.ControlWorkflow{WorkflowID: workflowID, Action: action}}
	sf.Produce(sf.SignedRecord(sf.Backbone.Names().Requests, records.ControlKey(workflowID, id), req, sf.signers[who]))
	return id
}

func rejected(w *decide.Workflow) bool { return w.State == records.WorkflowRejected }

func upgrade(sel string) rollout.Spec {
	return rollout.Spec{Name: "up", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"}, Selector: sel}
}

// TestSignedRequests: a signed rollout by a principal its roles allow
// runs; every other request is rejected, saying what is wrong and where.
func TestSignedRequests(t *testing.T) {
	t.Parallel()
	sf := startSecured(t, 20)
	now := time.Now()
	okID, okRec := sf.submit("alice", "alice", upgrade("kind=kafka,env=dev"), now)

	tampered := *sf.SignedRecord(sf.Backbone.Names().Requests, "", records.Request{
		Envelope: records.Envelope{ID: uuid.NewString(), Time: now, Principal: "alice"}, Submit: &records.SubmitRollout{Spec: upgrade("env=dev")}}, sf.signers["alice"])
	dec, _ := records.DecodeRequest(tampered.Value)
	tampered.Key = []byte(dec.Envelope.ID)
	tampered.Value = append([]byte{}, tampered.Value...)
	tampered.Value[len(tampered.Value)-110] ^= 1 // in the spec, before the key ID (33 bytes) and the signature (66)
	sf.Produce(&tampered)

	cases := map[string]string{}
	id, _ := sf.submit("alice", "", upgrade("env=dev"), now)
	cases[id] = "by alice refused: not signed, and signatures are required"
	id, _ = sf.submit("alice", "sam", upgrade("env=dev"), now)
	cases[id] = "by alice refused: forged: signed with key " + sf.signers["sam"].ID + " of sam, but names principal \"alice\""
	cases[string(tampered.Key)] = "forged or altered: its signature does not verify with key " + sf.signers["alice"].ID + " of alice"
	id, _ = sf.submit("alice", "alice", upgrade("env=dev"), now.Add(-10*time.Minute))
	cases[id] = "from when it was appended"
	id, _ = sf.submit("alice", "alice-expired", upgrade("env=dev"), now)
	cases[id] = "signed with key " + sf.signers["alice-expired"].ID + " of alice, which expired at"
	id, _ = sf.submit("alice", "alice-revoked", upgrade("env=dev"), now)
	cases[id] = "signed with key " + sf.signers["alice-revoked"].ID + " of alice, revoked at"
	id, _ = sf.submit("alice", "alice", upgrade("kind=kafka"), now)
	cases[id] = `alice (roles dev) may not submit upgrade to clusters matching env=prod: rule "prod-sre-only" allows only role sre`
	for id, reason := range cases {
		w := sf.Await(id, 0, 30*time.Second, "the rejection", rejected)
		if !strings.Contains(w.Reason, reason) || !strings.Contains(w.Reason, id) {
			t.Errorf("request %s rejected with %q, want it to name the request and say %q", id, w.Reason, reason)
		}
	}
	if w := sf.Await(okID, time.Second, time.Minute, "the signed rollout finishing", finished); w.State != records.WorkflowSucceeded {
		t.Fatalf("the signed rollout is %s (%s), want succeeded", w.State, w.Reason)
	}

	// The same record again, under the same ID: set aside, not acted on.
	replay := &kgo.Record{Topic: okRec.Topic, Key: okRec.Key, Value: okRec.Value}
	sf.Produce(replay)
	var reason string
	if !sf.Eventually(0, 30*time.Second, func() bool {
		for _, r := range sf.ReadAll(sf.Backbone.Names().DeadLetters) {
			if d, err := records.DecodeDeadLetter(r.Value); err == nil && d.SourceTopic == okRec.Topic && string(d.Key) == okID {
				reason = d.Reason
				return true
			}
		}
		return false
	}) {
		t.Fatal("the replayed request was not set aside")
	}
	if want := "request " + okID + " by alice replayed"; !strings.Contains(reason, want) {
		t.Errorf("replay set aside with %q, want %q", reason, want)
	}
}

// TestSeparationOfDuties: on prod, the requester may not approve its
// rollout's gate, and the gate needs two distinct approvals.
func TestSeparationOfDuties(t *testing.T) {
	t.Parallel()
	sf := startSecured(t, 20)
	spec := upgrade("kind=kafka,env=prod")
	spec.Phases = []rollout.Phase{{Name: "all", Approve: rollout.ApproveBefore}}
	id, _ := sf.submit("sam", "sam", spec, time.Now())
	sf.Await(id, 0, time.Minute, "the gate", func(w *decide.Workflow) bool { return w.Gate == "before:all" })

	own := sf.control("sam", id, records.ActionApprove)
	w := sf.Await(own, 0, 30*time.Second, "the requester's approval refused", rejected)
	if want := "sam submitted workflow " + id + ` and may not approve its gates: separation of duties (rule "prod-gates") requires another approver`; !strings.Contains(w.Reason, want) {
		t.Errorf("own approval refused with %q, want %q", w.Reason, want)
	}
	first := sf.control("sue", id, records.ActionApprove)
	w = sf.Await(id, 0, 30*time.Second, "the first approval", func(w *decide.Workflow) bool { return w.LastControl == first })
	if w.Gate != "before:all" || !strings.Contains(w.Reason, "1 of 2 approvals (sue)") {
		t.Errorf("after one approval: gate %q, reason %q; want it still waiting, saying 1 of 2", w.Gate, w.Reason)
	}
	again := sf.control("sue", id, records.ActionApprove)
	w = sf.Await(again, 0, 30*time.Second, "the second approval by the same principal refused", rejected)
	if want := "sue already approved gate before:all of workflow " + id + ": it needs 2 distinct approvals"; !strings.Contains(w.Reason, want) {
		t.Errorf("second approval by sue refused with %q, want %q", w.Reason, want)
	}
	if f := sf.Sim.TotalApplies(); f != 0 {
		t.Fatalf("%d clusters changed before the gate opened", f)
	}
	sf.control("sid", id, records.ActionApprove)
	if w := sf.Await(id, time.Second, time.Minute, "the rollout finishing", finished); w.State != records.WorkflowSucceeded {
		t.Fatalf("state %s (%s), want succeeded once two others approved", w.State, w.Reason)
	}
}

// TestUnsignedInventoryIsSetAside: an inventory record that is not signed
// is set aside by the monitor, saying why, and no service acts on it: a
// rollout naming the cluster is rejected, as for a cluster never added.
func TestUnsignedInventoryIsSetAside(t *testing.T) {
	t.Parallel()
	sf := startSecured(t, 10)
	c := sf.Clusters[0]
	c.ID, c.Address = "intruder", "sim://intruder"
	c.Labels = map[string]string{"env": "dev", "kind": "kafka"}
	sf.Produce(sf.Record(sf.Backbone.Names().Inventory, c.ID, records.ClusterRecord{
		Envelope: records.Envelope{ID: uuid.NewString(), Time: time.Now(), Principal: "mallory"}, Cluster: c}))
	var reason string
	if !sf.Eventually(0, 30*time.Second, func() bool {
		for _, r := range sf.ReadAll(sf.Backbone.Names().DeadLetters) {
			if d, err := records.DecodeDeadLetter(r.Value); err == nil && string(d.Key) == c.ID {
				reason = d.Reason
				return true
			}
		}
		return false
	}) {
		t.Fatal("the unsigned inventory record was not set aside")
	}
	if want := "inventory record of cluster intruder by mallory refused: not signed"; !strings.Contains(reason, want) {
		t.Errorf("set aside with %q, want %q", reason, want)
	}
	// The dashboard, given the services' trust settings, does not show it
	// either; one without them does (the record is there to be read).
	shown := func(trustCfg trust.Config, id string) bool {
		t.Helper()
		d := dashboard.New(dashboard.Config{Backbone: sf.Backbone, Trust: trustCfg})
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		go d.Run(ctx)
		if !sf.Eventually(0, 30*time.Second, d.Model().Ready) {
			t.Fatal("the dashboard never caught up with the log")
		}
		rec := httptest.NewRecorder()
		d.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/clusters/"+id, nil))
		return rec.Code == http.StatusOK
	}
	trusted := trust.Config{Require: true, Root: sf.root}
	if shown(trusted, "intruder") || !shown(trusted, sf.Clusters[1].ID) {
		t.Error("the dashboard that requires signatures shows the unsigned cluster, or not a signed one")
	}
	if !shown(trust.Config{}, "intruder") {
		t.Error("a dashboard that does not require signatures does not show the unsigned cluster")
	}

	// A change to the trust store not signed by an admin is ignored, and
	// set aside saying why.
	mallory := newKey(t)
	sf.Produce(sf.SignedRecord(sf.Backbone.Names().Trust, records.TrustPrincipalKey("mallory"), records.TrustRecord{
		Envelope:  records.Envelope{ID: uuid.NewString(), Time: time.Now(), Principal: "alice"},
		Principal: &records.TrustPrincipal{Name: "mallory", Roles: []string{"sre", authz.AdminRole}, Keys: []records.TrustKey{{ID: mallory.ID, Public: mallory.Public()}}},
	}, sf.signers["alice"]))
	reason = ""
	if !sf.Eventually(0, 30*time.Second, func() bool {
		for _, r := range sf.ReadAll(sf.Backbone.Names().DeadLetters) {
			if d, err := records.DecodeDeadLetter(r.Value); err == nil && string(d.Key) == "principal/mallory" {
				reason = d.Reason
				return true
			}
		}
		return false
	}) {
		t.Fatal("the trust record signed by a non-admin was not set aside")
	}
	if want := "trust record principal/mallory is signed by alice (key " + sf.signers["alice"].ID + "), who does not have role admin"; reason != want {
		t.Errorf("set aside with %q, want %q", reason, want)
	}

	spec := upgrade("")
	spec.Clusters = []string{"intruder"}
	id, _ := sf.submit("alice", "alice", spec, time.Now())
	if w := sf.Await(id, 0, 30*time.Second, "the rejection", rejected); !strings.Contains(w.Reason, "unknown clusters: intruder") {
		t.Errorf("rejected with %q, want unknown clusters: intruder", w.Reason)
	}
}

// TestAReplayedControlIsRefusedAfterARestart: a pause alice signed, then
// a resume; the planner restarts; the pause's record produced again is set
// aside as a replay, and the rollout keeps running. The restarted planner
// knows the requests of the replay span from the log, not only those it
// read itself.
func TestAReplayedControlIsRefusedAfterARestart(t *testing.T) {
	t.Parallel()
	sf := startSecured(t, 10)
	spec := upgrade("kind=kafka,env=dev")
	spec.Phases = []rollout.Phase{{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}, Bake: time.Hour}}
	id, _ := sf.submit("alice", "alice", spec, time.Now())
	sf.Await(id, 0, 30*time.Second, "the rollout running", func(w *decide.Workflow) bool { return w.State == records.WorkflowRunning })

	pauseID := uuid.NewString()
	pause := sf.SignedRecord(sf.Backbone.Names().Requests, records.ControlKey(id, pauseID), records.Request{
		Envelope: records.Envelope{ID: pauseID, Time: time.Now(), Principal: "alice"},
		Control:  &records.ControlWorkflow{WorkflowID: id, Action: records.ActionPause}}, sf.signers["alice"])
	sf.Produce(pause)
	sf.Await(id, 0, 30*time.Second, "the pause", func(w *decide.Workflow) bool { return w.State == records.WorkflowPaused })
	sf.control("alice", id, records.ActionResume)
	sf.Await(id, 0, 30*time.Second, "the resume", func(w *decide.Workflow) bool { return w.State == records.WorkflowRunning })

	sf.StopService("planner")
	sf.StartService("planner")
	sf.Produce(&kgo.Record{Topic: pause.Topic, Key: pause.Key, Value: pause.Value})
	var reason string
	if !sf.Eventually(0, 30*time.Second, func() bool {
		for _, r := range sf.ReadAll(sf.Backbone.Names().DeadLetters) {
			if d, err := records.DecodeDeadLetter(r.Value); err == nil && string(d.Key) == string(pause.Key) {
				reason = d.Reason
				return true
			}
		}
		return false
	}) {
		w, _ := sf.Workflow(id)
		t.Fatalf("the replayed pause was not set aside after the planner's restart (the rollout is %s)", w.State)
	}
	if want := "request " + pauseID + " by alice replayed: its ID was first read at"; !strings.Contains(reason, want) {
		t.Errorf("replay set aside with %q, want %q", reason, want)
	}
	// The planner acted on nothing after the replay: one more control
	// is answered, and the rollout did not pause again in between.
	sf.control("alice", id, records.ActionPause)
	sf.Await(id, 0, 30*time.Second, "the second pause", func(w *decide.Workflow) bool { return w.State == records.WorkflowPaused })
	if !sf.Eventually(0, 30*time.Second, func() bool {
		pauses := 0
		for _, n := range sf.Notifications() {
			if n.WorkflowID == id && n.Kind == "workflow.paused" {
				pauses++
			}
		}
		if pauses > 2 {
			t.Fatalf("the rollout paused %d times, want 2 (alice's two pauses, not the replay)", pauses)
		}
		return pauses == 2
	}) {
		t.Fatal("the notifier did not tell both pauses")
	}
}
