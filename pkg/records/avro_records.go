package records

import (
	"fmt"

	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// This file writes and reads each record type straight to and from Avro
// binary (with avro_binary.go), for the newest version of its schema: the
// version Encode writes, and the one nearly every record read was written
// with. A record of an older version is read by goavro instead (see
// decodeAs), through mapping.go, which is also the tests' oracle.
//
// Each function lists its record's fields in schema order, one line per
// field, and the function of each record of a topic names the schema file
// it mirrors. A new schema version that adds a field is one line in the
// write function and one in the read function of the record it is in (and
// its mapping in mapping.go); a new member of a union (such as a new kind
// of row of WorkflowRecord) is one case in each. Then the new file's name
// goes in directFiles and the comment of the record's functions.

// directFiles names, for each record, the schema file this file mirrors:
// the newest version of each family. init refuses to start if another file
// is the newest, so that no record is ever written with one schema's
// fingerprint and another's fields.
var directFiles = map[string]string{
	nameClusterRecord:  "cluster.v3.avsc",
	nameRequest:        "request.v3.avsc",
	nameWorkflowRecord: "workflow.v4.avsc",
	nameCommand:        "command.v2.avsc",
	nameOperationEvent: "operation.v3.avsc",
	nameHealth:         "health.v2.avsc",
	nameNotification:   "notification.v1.avsc",
	namePolicyRecord:   "policy.v3.avsc",
	nameClaimRecord:    "claim.v2.avsc",
	nameLeaseRecord:    "lease.v1.avsc",
	nameDeadLetter:     "deadletter.v1.avsc",
	nameTrustRecord:    "trust.v1.avsc",
	nameCheckpoint:     "checkpoint.v1.avsc",
}

// checkDirect returns an error if the newest schema of a record is not the
// one this file mirrors.
func checkDirect(r *registry) error {
	for name, file := range directFiles {
		if w := r.writer[name]; w == nil || w.file != file {
			newest := "none"
			if w != nil {
				newest = w.file
			}
			return fmt.Errorf("the newest %s schema is %s, but avro_records.go mirrors %s: add what the new version adds to the record's write and read functions there, and name the file in directFiles", name, newest, file)
		}
	}
	return nil
}

// Records nested in several families. Each is the same in every family's
// newest schema; should one change in one family only, its functions here
// split in two.

// flotilla.Envelope, in every schema.
func writeEnvelope(w *writer, e *Envelope) {
	w.str(e.ID)
	w.time(e.Time)
	w.str(e.Principal)
	w.str(e.CausationID)
}

func readEnvelope(r *reader) (e Envelope) {
	e.ID = r.str("id")
	e.Time = r.time("time")
	e.Principal = r.word("principal")
	e.CausationID = r.str("causation_id")
	return e
}

// flotilla.Cluster, in the command schema (cluster.v1's shape: a command
// carries how to reach the cluster, not its desired state).
func writeCluster(w *writer, c *inventory.Cluster) {
	w.str(c.ID)
	w.strMap(c.Labels)
	w.str(c.Driver)
	w.str(c.Address)
	w.str(c.Version)
	w.strMap(c.Settings)
}

func readCluster(r *reader) (c inventory.Cluster) {
	c.ID = r.str("id")
	c.Labels = r.strMap("labels")
	c.Driver = r.word("driver")
	c.Address = r.str("address")
	c.Version = r.word("version")
	c.Settings = r.strMap("settings")
	return c
}

// flotilla.Operation, in the command, request and workflow schemas.
func writeOperation(w *writer, o *rollout.Operation) {
	w.str(string(o.Kind))
	w.str(o.Version)
	w.strMap(o.Config)
	w.strs(o.Reset)
	w.str(o.ExpectVersion)
	w.strMap(o.ExpectConfig)
}

func readOperation(r *reader) (o rollout.Operation) {
	o.Kind = rollout.OperationKind(r.word("kind"))
	o.Version = r.word("version")
	o.Config = r.strMap("config")
	o.Reset = r.strs("reset")
	o.ExpectVersion = r.str("expect_version")
	o.ExpectConfig = r.strMap("expect_config")
	return o
}

// flotilla.Threshold, in the policy, request and workflow schemas.
func writeThreshold(w *writer, t *rollout.Threshold) {
	w.int("count", t.Count)
	w.int("percent", t.Percent)
	w.str(string(t.Action))
}

func readThreshold(r *reader) (t rollout.Threshold) {
	t.Count = r.int("count")
	t.Percent = r.int("percent")
	t.Action = rollout.ThresholdAction(r.str("action"))
	return t
}

// flotilla.Phase (with flotilla.Waves), in the policy, request and
// workflow schemas.
func writePhase(w *writer, p *rollout.Phase) {
	w.str(p.Name)
	w.str(p.Selector)
	writeWaves(w, &p.Waves)
	w.int("max_in_flight", p.MaxInFlight)
	w.duration(p.Bake)
	w.str(string(p.Approve))
	w.duration(p.ApprovalTimeout)
	writeThreshold(w, &p.FailureThreshold)
}

func readPhase(r *reader) (p rollout.Phase) {
	p.Name = r.str("name")
	p.Selector = r.str("selector")
	p.Waves = record(r, "waves", readWaves)
	p.MaxInFlight = r.int("max_in_flight")
	p.Bake = r.duration("bake_ms")
	p.Approve = rollout.Approval(r.str("approve"))
	p.ApprovalTimeout = r.duration("approval_timeout_ms")
	p.FailureThreshold = record(r, "failure_threshold", readThreshold)
	return p
}

func writeWaves(w *writer, v *rollout.Waves) {
	w.str(string(v.Mode))
	w.int("value", v.Value)
}

func readWaves(r *reader) (v rollout.Waves) {
	v.Mode = rollout.WaveMode(r.str("mode"))
	v.Value = r.int("value")
	return v
}

var phaseSize = zeroSize(writePhase)

// flotilla.RolloutSpec (with flotilla.WindowRule), in the request and
// workflow schemas.
func writeSpec(w *writer, s *rollout.Spec) {
	w.str(s.Name)
	writeOperation(w, &s.Operation)
	w.str(s.Selector)
	w.strs(s.Clusters)
	writeArray(w, s.Phases, writePhase)
	writeThreshold(w, &s.FailureThreshold)
	w.str(s.Policy)
	w.str(string(s.OnConflict))
	w.duration(s.OperationTimeout)
	w.int("retries", s.Retries)
	w.duration(s.RetryBackoff)
	w.duration(s.AutoResume)
	w.str(string(s.UnhealthyTargets))
	writeArray(w, s.Windows, writeWindowRule)
}

func readSpec(r *reader) (s rollout.Spec) {
	s.Name = r.str("name")
	s.Operation = record(r, "operation", readOperation)
	s.Selector = r.str("selector")
	s.Clusters = r.strs("clusters")
	s.Phases = readArray(r, "phases", phaseSize, readPhase)
	s.FailureThreshold = record(r, "failure_threshold", readThreshold)
	s.Policy = r.str("policy")
	s.OnConflict = rollout.Conflict(r.str("on_conflict"))
	s.OperationTimeout = r.duration("operation_timeout_ms")
	s.Retries = r.int("retries")
	s.RetryBackoff = r.duration("retry_backoff_ms")
	s.AutoResume = r.duration("auto_resume_ms")
	s.UnhealthyTargets = rollout.UnhealthyPolicy(r.str("unhealthy_targets"))
	s.Windows = readArray(r, "windows", windowRuleSize, readWindowRule)
	return s
}

// flotilla.WindowRule.
func writeWindowRule(w *writer, x *rollout.WindowRule) {
	w.str(x.Selector)
	w.strs(x.Allow)
	w.strs(x.Deny)
}

func readWindowRule(r *reader) (x rollout.WindowRule) {
	x.Selector = r.str("selector")
	x.Allow = r.strs("allow")
	x.Deny = r.strs("deny")
	return x
}

var windowRuleSize = zeroSize(writeWindowRule)

// The records, one per topic.

// A signed record's last two fields: key_id, then signature (which stays
// last, so that the canonical bytes are the record up to it; see Sign).
func writeSignature(w *writer, s *Signature) {
	w.str(s.KeyID)
	w.bytes(s.Value)
}

func readSignature(r *reader) (s Signature) {
	s.KeyID = r.word("key_id")
	s.Value = r.bytes("signature")
	return s
}

// flotilla.ClusterRecord: cluster.v3.avsc. Its flotilla.Cluster has the
// desired state after the fields the command schema's has.
func writeClusterRecord(w *writer, c *ClusterRecord) {
	writeEnvelope(w, &c.Envelope)
	writeInventoryCluster(w, &c.Cluster)
	writeSignature(w, &c.Signature)
}

func readClusterRecord(r *reader) (c ClusterRecord) {
	c.Envelope = record(r, "envelope", readEnvelope)
	c.Cluster = record(r, "cluster", readInventoryCluster)
	c.Signature = readSignature(r)
	return c
}

func writeInventoryCluster(w *writer, c *inventory.Cluster) {
	writeCluster(w, c)
	w.str(c.Desired.Version)
	w.strMap(c.Desired.Config)
	w.strs(c.DriftIgnore)
}

func readInventoryCluster(r *reader) (c inventory.Cluster) {
	c = readCluster(r)
	c.Desired.Version = r.word("desired_version")
	c.Desired.Config = r.strMap("desired_config")
	c.DriftIgnore = r.strs("drift_ignore")
	return c
}

// flotilla.Request: request.v3.avsc. The body is a union of
// [SubmitRollout, ControlWorkflow].
func writeRequest(w *writer, q *Request) {
	writeEnvelope(w, &q.Envelope)
	switch {
	case q.Submit != nil && q.Control != nil:
		w.err = errTwoBodies
	case q.Submit != nil:
		w.union(0)
		writeSpec(w, &q.Submit.Spec) // flotilla.SubmitRollout.spec
	case q.Control != nil:
		w.union(1)
		writeControlWorkflow(w, q.Control)
	default:
		w.err = errNoBody
	}
	writeSignature(w, &q.Signature)
}

func readRequest(r *reader) (q Request) {
	q.Envelope = record(r, "envelope", readEnvelope)
	switch r.union("body", 2) {
	case 0:
		q.Submit = &SubmitRollout{Spec: record(r, "body."+memberSubmitRollout+".spec", readSpec)}
	case 1:
		c := record(r, "body."+memberControlWorkflow, readControlWorkflow)
		q.Control = &c
	}
	q.Signature = readSignature(r)
	return q
}

// flotilla.ControlWorkflow, a request's body.
func writeControlWorkflow(w *writer, c *ControlWorkflow) {
	w.str(c.WorkflowID)
	w.str(string(c.Action))
	w.str(c.Reason)
	w.str(c.Phase)
}

func readControlWorkflow(r *reader) (c ControlWorkflow) {
	c.WorkflowID = r.str("workflow_id")
	c.Action = ControlAction(r.str("action"))
	c.Reason = r.str("reason")
	c.Phase = r.str("phase")
	return c
}

// flotilla.WorkflowRecord: workflow.v4.avsc. The row is a union of
// [Workflow, Target, WorkflowSpec].
func writeWorkflowRecord(w *writer, x *WorkflowRecord) {
	writeEnvelope(w, &x.Envelope)
	switch {
	case x.rows() > 1:
		w.err = errTwoRows
	case x.Workflow != nil:
		w.union(0)
		writeWorkflow(w, x.Workflow)
	case x.Target != nil:
		w.union(1)
		writeTarget(w, x.Target)
	case x.Spec != nil:
		w.union(2)
		writeWorkflowSpec(w, x.Spec)
	default:
		w.err = errNoRow
	}
}

func readWorkflowRecord(r *reader) (x WorkflowRecord) {
	x.Envelope = record(r, "envelope", readEnvelope)
	switch r.union("row", 3) {
	case 0:
		wf := record(r, "row."+memberWorkflow, readWorkflow)
		x.Workflow = &wf
	case 1:
		t := record(r, "row."+memberTarget, readTarget)
		x.Target = &t
	case 2:
		sp := record(r, "row."+memberWorkflowSpec, readWorkflowSpec)
		x.Spec = &sp
	}
	return x
}

// flotilla.WorkflowSpec, a workflow's spec row.
func writeWorkflowSpec(w *writer, x *WorkflowSpec) {
	w.str(x.WorkflowID)
	writeSpec(w, &x.Spec)
}

func readWorkflowSpec(r *reader) (x WorkflowSpec) {
	x.WorkflowID = r.str("workflow_id")
	x.Spec = record(r, "spec", readSpec)
	return x
}

// flotilla.Workflow, a workflow's own row.
func writeWorkflow(w *writer, x *Workflow) {
	w.str(x.ID)
	writeSpec(w, &x.Spec)
	w.str(string(x.State))
	w.str(x.Reason)
	w.str(x.Event)
	writeArray(w, x.Phases, writePhasePlan)
	w.int("phase", x.Phase)
	w.int("wave", x.Wave)
	w.time(x.BakeUntil)
	w.time(x.WaitUntil)
	w.str(x.Waiting)
	w.str(x.LastControl)
	w.int("failures_acknowledged", x.FailuresAcknowledged)
	w.str(x.Gate)
	w.str(x.PausedBy)
	w.time(x.ResumeAt)
	w.time(x.GateExpires)
	w.strs(x.Approved)
	w.int("targets", x.Targets)
	w.int("unplanned", x.Unplanned)
	w.time(x.CreatedAt)
	w.time(x.UpdatedAt)
	w.long(x.Seq)
	w.str(x.RollbackOf)
	w.str(x.Requester)
	writeArray(w, x.Approvals, writeGateApproval)
}

func writeGateApproval(w *writer, x *GateApproval) {
	w.str(x.Gate)
	w.str(x.Principal)
}

func readGateApproval(r *reader) (x GateApproval) {
	x.Gate = r.str("gate")
	x.Principal = r.str("principal")
	return x
}

var gateApprovalSize = zeroSize(writeGateApproval)

func readWorkflow(r *reader) (x Workflow) {
	x.ID = r.str("id")
	x.Spec = record(r, "spec", readSpec)
	x.State = WorkflowState(r.word("state"))
	x.Reason = r.str("reason")
	x.Event = r.word("event")
	x.Phases = readArray(r, "phases", phasePlanSize, readPhasePlan)
	x.Phase = r.int("phase")
	x.Wave = r.int("wave")
	x.BakeUntil = r.time("bake_until")
	x.WaitUntil = r.time("wait_until")
	x.Waiting = r.str("waiting")
	x.LastControl = r.str("last_control")
	x.FailuresAcknowledged = r.int("failures_acknowledged")
	x.Gate = r.str("gate")
	x.PausedBy = r.str("paused_by")
	x.ResumeAt = r.time("resume_at")
	x.GateExpires = r.time("gate_expires")
	x.Approved = r.strs("approved")
	x.Targets = r.int("targets")
	x.Unplanned = r.int("unplanned")
	x.CreatedAt = r.time("created_at")
	x.UpdatedAt = r.time("updated_at")
	x.Seq = r.long("seq")
	x.RollbackOf = r.str("rollback_of")
	x.Requester = r.str("requester")
	x.Approvals = readArray(r, "approvals", gateApprovalSize, readGateApproval)
	return x
}

// flotilla.PhasePlan, in a workflow's own row.
func writePhasePlan(w *writer, p *PhasePlan) {
	w.str(p.Name)
	w.ints("wave_sizes", p.WaveSizes)
	w.int("max_in_flight", p.MaxInFlight)
	w.duration(p.Bake)
	writeThreshold(w, &p.FailureThreshold)
}

func readPhasePlan(r *reader) (p PhasePlan) {
	p.Name = r.str("name")
	p.WaveSizes = r.ints("wave_sizes")
	p.MaxInFlight = r.int("max_in_flight")
	p.Bake = r.duration("bake_ms")
	p.FailureThreshold = record(r, "failure_threshold", readThreshold)
	return p
}

var phasePlanSize = zeroSize(writePhasePlan)

// flotilla.Target, a target's row.
func writeTarget(w *writer, t *Target) {
	w.str(t.WorkflowID)
	w.str(t.ClusterID)
	w.int("phase", t.Phase)
	w.int("wave", t.Wave)
	w.str(string(t.State))
	w.str(t.CommandID)
	w.int("attempt", t.Attempt)
	w.str(t.Reason)
	w.boolean(t.Unhealthy)
	w.str(t.PreviousVersion)
	w.str(t.Version)
	w.time(t.NotBefore)
	w.time(t.StartedAt)
	w.time(t.FinishedAt)
	writeOperation(w, &t.Operation)
	w.strMap(t.PreviousConfig)
	w.strs(t.PreviousUnset)
	w.int("order", t.Order)
}

func readTarget(r *reader) (t Target) {
	t.WorkflowID = r.str("workflow_id")
	t.ClusterID = r.str("cluster_id")
	t.Phase = r.int("phase")
	t.Wave = r.int("wave")
	t.State = TargetState(r.word("state"))
	t.CommandID = r.str("command_id")
	t.Attempt = r.int("attempt")
	t.Reason = r.str("reason")
	t.Unhealthy = r.boolean("unhealthy")
	t.PreviousVersion = r.str("previous_version")
	t.Version = r.word("version")
	t.NotBefore = r.time("not_before")
	t.StartedAt = r.time("started_at")
	t.FinishedAt = r.time("finished_at")
	t.Operation = record(r, "operation", readOperation)
	t.PreviousConfig = r.strMap("previous_config")
	t.PreviousUnset = r.strs("previous_unset")
	t.Order = r.int("order")
	return t
}

// flotilla.Command: command.v2.avsc.
func writeCommand(w *writer, c *Command) {
	writeEnvelope(w, &c.Envelope)
	w.str(c.ID)
	w.str(c.WorkflowID)
	w.str(c.ClusterID)
	w.int("attempt", c.Attempt)
	w.duration(c.Timeout)
	writeOperation(w, &c.Operation)
	writeCluster(w, &c.Cluster)
}

func readCommand(r *reader) (c Command) {
	c.Envelope = record(r, "envelope", readEnvelope)
	c.ID = r.str("id")
	c.WorkflowID = r.str("workflow_id")
	c.ClusterID = r.str("cluster_id")
	c.Attempt = r.int("attempt")
	c.Timeout = r.duration("timeout_ms")
	c.Operation = record(r, "operation", readOperation)
	c.Cluster = record(r, "cluster", readCluster)
	return c
}

// flotilla.OperationEvent: operation.v3.avsc.
func writeOperationEvent(w *writer, o *OperationEvent) {
	writeEnvelope(w, &o.Envelope)
	w.str(o.CommandID)
	w.str(o.WorkflowID)
	w.str(o.ClusterID)
	w.int("attempt", o.Attempt)
	w.str(string(o.Status))
	w.str(o.Reason)
	w.str(o.PreviousVersion)
	w.str(o.Version)
	w.str(o.Output)
	w.strMap(o.PreviousConfig)
	w.strs(o.PreviousUnset)
	w.time(o.Deadline)
	w.str(o.Executor)
	w.long(o.FencingToken)
}

func readOperationEvent(r *reader) (o OperationEvent) {
	o.Envelope = record(r, "envelope", readEnvelope)
	o.CommandID = r.str("command_id")
	o.WorkflowID = r.str("workflow_id")
	o.ClusterID = r.str("cluster_id")
	o.Attempt = r.int("attempt")
	o.Status = OperationStatus(r.word("status"))
	o.Reason = r.str("reason")
	o.PreviousVersion = r.str("previous_version")
	o.Version = r.word("version")
	o.Output = r.str("output")
	o.PreviousConfig = r.strMap("previous_config")
	o.PreviousUnset = r.strs("previous_unset")
	o.Deadline = r.time("deadline")
	o.Executor = r.str("executor")
	o.FencingToken = r.long("fencing_token")
	return o
}

// flotilla.Health: health.v2.avsc.
func writeHealth(w *writer, h *Health) {
	writeEnvelope(w, &h.Envelope)
	w.str(h.ClusterID)
	w.str(string(h.Status))
	w.str(string(h.PreviousStatus))
	w.strs(h.Reasons)
	w.str(h.ObservedVersion)
	w.time(h.ObservedAt)
	w.boolean(h.Heartbeat)
	w.str(h.ConfigHash)
	w.strMap(h.Details)
	writeArray(w, h.Drift, writeDriftItem)
	w.boolean(h.DriftChanged)
}

func writeDriftItem(w *writer, d *DriftItem) {
	w.str(d.Key)
	w.str(d.Observed)
	w.str(d.Desired)
}

func readDriftItem(r *reader) (d DriftItem) {
	d.Key = r.str("key")
	d.Observed = r.str("observed")
	d.Desired = r.str("desired")
	return d
}

var driftItemSize = zeroSize(writeDriftItem)

func readHealth(r *reader) (h Health) {
	h.Envelope = record(r, "envelope", readEnvelope)
	h.ClusterID = r.str("cluster_id")
	h.Status = HealthStatus(r.word("status"))
	h.PreviousStatus = HealthStatus(r.word("previous_status"))
	h.Reasons = r.strs("reasons")
	h.ObservedVersion = r.str("observed_version")
	h.ObservedAt = r.time("observed_at")
	h.Heartbeat = r.boolean("heartbeat")
	h.ConfigHash = r.str("config_hash")
	h.Details = r.strMap("details")
	h.Drift = readArray(r, "drift", driftItemSize, readDriftItem)
	h.DriftChanged = r.boolean("drift_changed")
	return h
}

// flotilla.Notification: notification.v1.avsc.
func writeNotification(w *writer, n *Notification) {
	writeEnvelope(w, &n.Envelope)
	w.str(n.Kind)
	w.str(string(n.Severity))
	w.str(n.WorkflowID)
	w.str(n.ClusterID)
	w.str(n.Message)
	w.strMap(n.Fields)
}

func readNotification(r *reader) (n Notification) {
	n.Envelope = record(r, "envelope", readEnvelope)
	n.Kind = r.str("kind")
	n.Severity = Severity(r.str("severity"))
	n.WorkflowID = r.str("workflow_id")
	n.ClusterID = r.str("cluster_id")
	n.Message = r.str("message")
	n.Fields = r.strMap("fields")
	return n
}

// flotilla.PolicyRecord: policy.v3.avsc.
func writePolicyRecord(w *writer, p *PolicyRecord) {
	writeEnvelope(w, &p.Envelope)
	writePolicy(w, &p.Policy)
	writeSignature(w, &p.Signature)
}

func readPolicyRecord(r *reader) (p PolicyRecord) {
	p.Envelope = record(r, "envelope", readEnvelope)
	p.Policy = record(r, "policy", readPolicy)
	p.Signature = readSignature(r)
	return p
}

// flotilla.TrustRecord: trust.v1.avsc. The body is a union of
// [TrustPrincipal, TrustRole].
func writeTrustRecord(w *writer, t *TrustRecord) {
	writeEnvelope(w, &t.Envelope)
	switch {
	case t.Principal != nil && t.Role != nil:
		w.err = errTwoTrustBodies
	case t.Principal != nil:
		w.union(0)
		w.str(t.Principal.Name)
		w.strs(t.Principal.Roles)
		writeArray(w, t.Principal.Keys, writeTrustKey)
	case t.Role != nil:
		w.union(1)
		w.str(t.Role.Name)
		writeArray(w, t.Role.Rules, writeRoleRule)
	default:
		w.err = errNoTrustBody
	}
	writeSignature(w, &t.Signature)
}

func readTrustRecord(r *reader) (t TrustRecord) {
	t.Envelope = record(r, "envelope", readEnvelope)
	switch r.union("body", 2) {
	case 0:
		t.Principal = record(r, "body."+memberTrustPrincipal, func(r *reader) *TrustPrincipal {
			var p TrustPrincipal
			p.Name = r.str("name")
			p.Roles = r.strs("roles")
			p.Keys = readArray(r, "keys", trustKeySize, readTrustKey)
			return &p
		})
	case 1:
		t.Role = record(r, "body."+memberTrustRole, func(r *reader) *authz.Role {
			var x authz.Role
			x.Name = r.str("name")
			x.Rules = readArray(r, "rules", roleRuleSize, readRoleRule)
			return &x
		})
	}
	t.Signature = readSignature(r)
	return t
}

// flotilla.TrustKey.
func writeTrustKey(w *writer, k *TrustKey) {
	w.str(k.ID)
	w.bytes(k.Public)
	w.time(k.Expires)
	w.time(k.Revoked)
}

func readTrustKey(r *reader) (k TrustKey) {
	k.ID = r.str("id")
	k.Public = r.bytes("public_key")
	k.Expires = r.time("expires")
	k.Revoked = r.time("revoked")
	return k
}

var trustKeySize = zeroSize(writeTrustKey)

// flotilla.RoleRule.
func writeRoleRule(w *writer, x *authz.Rule) {
	w.str(x.Name)
	w.strs(x.Actions)
	w.strs(x.Operations)
	w.str(x.Selector)
	w.strs(x.Phases)
	w.int("approvals", x.Approvals)
	w.boolean(x.SeparateApprover)
}

func readRoleRule(r *reader) (x authz.Rule) {
	x.Name = r.str("name")
	x.Actions = r.strs("actions")
	x.Operations = r.strs("operations")
	x.Selector = r.str("selector")
	x.Phases = r.strs("phases")
	x.Approvals = r.int("approvals")
	x.SeparateApprover = r.boolean("separate_approver")
	return x
}

var roleRuleSize = zeroSize(writeRoleRule)

// flotilla.DeploymentPolicy.
func writePolicy(w *writer, p *rollout.Policy) {
	w.str(p.Name)
	w.str(p.Description)
	writeArray(w, p.Phases, writePhase)
	w.boolean(p.DriftCorrection.Enabled)
	w.str(p.DriftCorrection.Selector)
	w.int("drift_correction_max_per_hour", p.DriftCorrection.MaxPerHour)
}

func readPolicy(r *reader) (p rollout.Policy) {
	p.Name = r.str("name")
	p.Description = r.str("description")
	p.Phases = readArray(r, "phases", phaseSize, readPhase)
	p.DriftCorrection.Enabled = r.boolean("drift_correction_enabled")
	p.DriftCorrection.Selector = r.str("drift_correction_selector")
	p.DriftCorrection.MaxPerHour = r.int("drift_correction_max_per_hour")
	return p
}

// flotilla.ClaimRecord: claim.v2.avsc.
func writeClaimRecord(w *writer, c *ClaimRecord) {
	writeEnvelope(w, &c.Envelope)
	w.str(c.ClusterID)
	w.str(c.CommandID)
	w.str(c.WorkflowID)
	w.int("command_partition", int(c.CommandPartition))
	w.long(c.QueuedOffset)
	w.str(c.Holder)
}

func readClaimRecord(r *reader) (c ClaimRecord) {
	c.Envelope = record(r, "envelope", readEnvelope)
	c.ClusterID = r.str("cluster_id")
	c.CommandID = r.str("command_id")
	c.WorkflowID = r.str("workflow_id")
	c.CommandPartition = int32(r.int("command_partition"))
	c.QueuedOffset = r.long("queued_offset")
	c.Holder = r.str("holder")
	return c
}

// flotilla.LeaseRecord: lease.v1.avsc.
func writeLeaseRecord(w *writer, l *LeaseRecord) {
	writeEnvelope(w, &l.Envelope)
	w.int("partition", int(l.Partition))
	w.str(l.Holder)
	w.time(l.RenewedAt)
	w.duration(l.Duration)
}

func readLeaseRecord(r *reader) (l LeaseRecord) {
	l.Envelope = record(r, "envelope", readEnvelope)
	l.Partition = int32(r.int("partition"))
	l.Holder = r.str("holder")
	l.RenewedAt = r.time("renewed_at")
	l.Duration = r.duration("duration_ms")
	return l
}

// flotilla.DeadLetter: deadletter.v1.avsc.
func writeDeadLetter(w *writer, d *DeadLetter) {
	writeEnvelope(w, &d.Envelope)
	w.str(d.Service)
	w.str(d.SourceTopic)
	w.int("source_partition", int(d.SourcePartition))
	w.long(d.SourceOffset)
	w.bytes(d.Key)
	w.boolean(d.NullKey)
	w.bytes(d.Value)
	w.boolean(d.Tombstone)
	w.long(d.ValueSize)
	w.str(d.Reason)
}

func readDeadLetter(r *reader) (d DeadLetter) {
	d.Envelope = record(r, "envelope", readEnvelope)
	d.Service = r.str("service")
	d.SourceTopic = r.str("source_topic")
	d.SourcePartition = int32(r.int("source_partition"))
	d.SourceOffset = r.long("source_offset")
	d.Key = r.bytes("key")
	d.NullKey = r.boolean("null_key")
	d.Value = r.bytes("value")
	d.Tombstone = r.boolean("tombstone")
	d.ValueSize = r.long("value_size")
	d.Reason = r.str("reason")
	return d
}

// flotilla.Checkpoint: checkpoint.v1.avsc.
func writeCheckpoint(w *writer, c *Checkpoint) {
	writeEnvelope(w, &c.Envelope)
	w.str(c.Writer)
	w.str(c.WorkflowID)
	w.int("bucket", c.Bucket)
	w.int("buckets", c.Buckets)
	w.long(c.Seq)
	w.bytes(c.Head)
	writeArray(w, c.Entries, func(w *writer, e *ChainEntry) {
		w.str(e.Topic)
		w.str(e.Key)
		w.long(e.Seq)
		w.bytes(e.Hash)
	})
	w.str(c.KeyID)
	w.bytes(c.Signature)
}

func readCheckpoint(r *reader) (c Checkpoint) {
	c.Envelope = record(r, "envelope", readEnvelope)
	c.Writer = r.word("writer")
	c.WorkflowID = r.str("workflow_id")
	c.Bucket = r.int("bucket")
	c.Buckets = r.int("buckets")
	c.Seq = r.long("seq")
	c.Head = r.bytes("head")
	// An entry takes at least four bytes: two empty strings, a long, empty bytes.
	c.Entries = readArray(r, "entries", 4, func(r *reader) ChainEntry {
		return ChainEntry{Topic: r.word("topic"), Key: r.str("key"), Seq: r.long("seq"), Hash: r.bytes("hash")}
	})
	c.KeyID = r.word("key_id")
	c.Signature = r.bytes("signature")
	return c
}
