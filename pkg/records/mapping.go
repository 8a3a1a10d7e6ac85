package records

import (
	"errors"

	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// This file maps each record type to and from goavro natives, by hand: the
// Avro field names are those of schemas/*.avsc. Encode and the Decode
// functions go without natives for the newest schema versions
// (avro_records.go); natives remain what records of older versions are
// decoded through (with their defaults filled in), what JSON requests are
// read and written as, what gives Encode its messages for a bad value, and
// the tests' oracle. A field added in a new schema version is added here
// in both directions too.

// The errors of Encode for a value the schemas cannot hold.
var (
	errTwoBodies = errors.New("request has two bodies: set Submit or Control")
	errNoBody    = errors.New("request has no body: set Submit or Control")
	errTwoRows   = errors.New("workflow record has more than one of Workflow, Target and Spec set")
	errNoRow     = errors.New("workflow record has none of Workflow, Target and Spec set")

	errTwoTrustBodies = errors.New("trust record has two bodies: set Principal or Role")
	errNoTrustBody    = errors.New("trust record has no body: set Principal or Role")
)

// Union member names.
const (
	memberSubmitRollout   = "flotilla.SubmitRollout"
	memberControlWorkflow = "flotilla.ControlWorkflow"
	memberWorkflow        = "flotilla.Workflow"
	memberTarget          = "flotilla.Target"
	memberWorkflowSpec    = "flotilla.WorkflowSpec"
	memberTrustPrincipal  = "flotilla.TrustPrincipal"
	memberTrustRole       = "flotilla.TrustRole"
)

// signatureNative adds a signed record's last two fields to its native.
func signatureNative(m map[string]any, s Signature) map[string]any {
	m["key_id"] = s.KeyID
	m["signature"] = bytesNative(s.Value)
	return m
}

func signatureFrom(x rec) Signature {
	return Signature{KeyID: x.str("key_id"), Value: x.bytes("signature")}
}

func envelopeNative(e Envelope) map[string]any {
	return map[string]any{
		"id":           e.ID,
		"time":         millis(e.Time),
		"principal":    e.Principal,
		"causation_id": e.CausationID,
	}
}

func envelopeFrom(x rec) Envelope {
	return Envelope{
		ID:          x.str("id"),
		Time:        x.time("time"),
		Principal:   x.str("principal"),
		CausationID: x.str("causation_id"),
	}
}

func clusterNative(c inventory.Cluster) map[string]any {
	return map[string]any{
		"id":       c.ID,
		"labels":   stringMapNative(c.Labels),
		"driver":   c.Driver,
		"address":  c.Address,
		"version":  c.Version,
		"settings": stringMapNative(c.Settings),
	}
}

func clusterFrom(x rec) inventory.Cluster {
	return inventory.Cluster{
		ID:       x.str("id"),
		Labels:   x.strMap("labels"),
		Driver:   x.str("driver"),
		Address:  x.str("address"),
		Version:  x.str("version"),
		Settings: x.strMap("settings"),
	}
}

func operationNative(o rollout.Operation) map[string]any {
	return map[string]any{
		"kind":    string(o.Kind),
		"version": o.Version,
		"config":  stringMapNative(o.Config),
		"reset":   stringsNative(o.Reset),

		"expect_version": o.ExpectVersion,
		"expect_config":  stringMapNative(o.ExpectConfig),
	}
}

func operationFrom(x rec) rollout.Operation {
	return rollout.Operation{
		Kind:    rollout.OperationKind(x.str("kind")),
		Version: x.str("version"),
		Config:  x.strMap("config"),
		Reset:   x.strs("reset"),

		ExpectVersion: x.str("expect_version"),
		ExpectConfig:  x.strMap("expect_config"),
	}
}

func thresholdNative(t rollout.Threshold) map[string]any {
	return map[string]any{"count": t.Count, "percent": t.Percent, "action": string(t.Action)}
}

func thresholdFrom(x rec) rollout.Threshold {
	return rollout.Threshold{Count: x.int("count"), Percent: x.int("percent"), Action: rollout.ThresholdAction(x.str("action"))}
}

func phasesNative(phases []rollout.Phase) []any {
	out := make([]any, len(phases))
	for i, p := range phases {
		out[i] = map[string]any{
			"name":     p.Name,
			"selector": p.Selector,
			"waves": map[string]any{
				"mode":  string(p.Waves.Mode),
				"value": p.Waves.Value,
			},
			"max_in_flight":       p.MaxInFlight,
			"bake_ms":             p.Bake.Milliseconds(),
			"approve":             string(p.Approve),
			"approval_timeout_ms": p.ApprovalTimeout.Milliseconds(),
			"failure_threshold":   thresholdNative(p.FailureThreshold),
		}
	}
	return out
}

func phasesFrom(xs []rec) []rollout.Phase {
	var phases []rollout.Phase
	for _, p := range xs {
		w := p.record("waves")
		phases = append(phases, rollout.Phase{
			Name:             p.str("name"),
			Selector:         p.str("selector"),
			Waves:            rollout.Waves{Mode: rollout.WaveMode(w.str("mode")), Value: w.int("value")},
			MaxInFlight:      p.int("max_in_flight"),
			Bake:             p.duration("bake_ms"),
			Approve:          rollout.Approval(p.str("approve")),
			ApprovalTimeout:  p.duration("approval_timeout_ms"),
			FailureThreshold: thresholdFrom(p.record("failure_threshold")),
		})
	}
	return phases
}

func specNative(s rollout.Spec) map[string]any {
	windows := make([]any, len(s.Windows))
	for i, w := range s.Windows {
		windows[i] = map[string]any{
			"selector": w.Selector,
			"allow":    stringsNative(w.Allow),
			"deny":     stringsNative(w.Deny),
		}
	}
	return map[string]any{
		"on_conflict":          string(s.OnConflict),
		"operation_timeout_ms": s.OperationTimeout.Milliseconds(),
		"retries":              s.Retries,
		"retry_backoff_ms":     s.RetryBackoff.Milliseconds(),
		"auto_resume_ms":       s.AutoResume.Milliseconds(),
		"unhealthy_targets":    string(s.UnhealthyTargets),
		"windows":              windows,
		"name":                 s.Name,
		"operation":            operationNative(s.Operation),
		"selector":             s.Selector,
		"clusters":             stringsNative(s.Clusters),
		"phases":               phasesNative(s.Phases),
		"failure_threshold":    thresholdNative(s.FailureThreshold),
		"policy":               s.Policy,
	}
}

func specFrom(x rec) rollout.Spec {
	s := rollout.Spec{
		Name:      x.str("name"),
		Operation: operationFrom(x.record("operation")),
		Selector:  x.str("selector"),
		Clusters:  x.strs("clusters"),
	}
	s.Phases = phasesFrom(x.recs("phases"))
	s.FailureThreshold = thresholdFrom(x.record("failure_threshold"))
	s.Policy = x.str("policy")
	s.OnConflict = rollout.Conflict(x.str("on_conflict"))
	s.OperationTimeout = x.duration("operation_timeout_ms")
	s.Retries = x.int("retries")
	s.RetryBackoff = x.duration("retry_backoff_ms")
	s.AutoResume = x.duration("auto_resume_ms")
	s.UnhealthyTargets = rollout.UnhealthyPolicy(x.str("unhealthy_targets"))
	for _, w := range x.recs("windows") {
		s.Windows = append(s.Windows, rollout.WindowRule{Selector: w.str("selector"), Allow: w.strs("allow"), Deny: w.strs("deny")})
	}
	return s
}

// inventoryClusterNative and inventoryClusterFrom are the cluster of
// cluster.v2, which adds the desired state to the command's.
func inventoryClusterNative(c inventory.Cluster) map[string]any {
	m := clusterNative(c)
	m["desired_version"] = c.Desired.Version
	m["desired_config"] = stringMapNative(c.Desired.Config)
	m["drift_ignore"] = stringsNative(c.DriftIgnore)
	return m
}

func inventoryClusterFrom(x rec) inventory.Cluster {
	c := clusterFrom(x)
	c.Desired.Version = x.str("desired_version")
	c.Desired.Config = x.strMap("desired_config")
	c.DriftIgnore = x.strs("drift_ignore")
	return c
}

func clusterRecordNative(c ClusterRecord) map[string]any {
	return signatureNative(map[string]any{
		"envelope": envelopeNative(c.Envelope),
		"cluster":  inventoryClusterNative(c.Cluster),
	}, c.Signature)
}

func clusterRecordFrom(v any) (ClusterRecord, error) {
	r := &nativeReader{}
	x := r.record(v, "")
	c := ClusterRecord{
		Envelope: envelopeFrom(x.record("envelope")),
		Cluster:  inventoryClusterFrom(x.record("cluster")),
	}
	c.Signature = signatureFrom(x)
	return c, r.err
}

func requestNative(q Request) (map[string]any, error) {
	var body map[string]any
	switch {
	case q.Submit != nil && q.Control != nil:
		return nil, errTwoBodies
	case q.Submit != nil:
		body = map[string]any{memberSubmitRollout: map[string]any{"spec": specNative(q.Submit.Spec)}}
	case q.Control != nil:
		body = map[string]any{memberControlWorkflow: map[string]any{
			"workflow_id": q.Control.WorkflowID,
			"action":      string(q.Control.Action),
			"reason":      q.Control.Reason,
			"phase":       q.Control.Phase,
		}}
	default:
		return nil, errNoBody
	}
	return signatureNative(map[string]any{"envelope": envelopeNative(q.Envelope), "body": body}, q.Signature), nil
}

func requestFrom(v any) (Request, error) {
	r := &nativeReader{}
	x := r.record(v, "")
	q := Request{Envelope: envelopeFrom(x.record("envelope"))}
	switch member, body := x.union("body"); member {
	case memberSubmitRollout:
		q.Submit = &SubmitRollout{Spec: specFrom(body.record("spec"))}
	case memberControlWorkflow:
		q.Control = &ControlWorkflow{
			WorkflowID: body.str("workflow_id"),
			Action:     ControlAction(body.str("action")),
			Reason:     body.str("reason"),
			Phase:      body.str("phase"),
		}
	default:
		r.fail("body", "unknown request kind %q", member)
	}
	q.Signature = signatureFrom(x)
	return q, r.err
}

func workflowRecordNative(w WorkflowRecord) (map[string]any, error) {
	var row map[string]any
	switch {
	case w.rows() > 1:
		return nil, errTwoRows
	case w.Workflow != nil:
		row = map[string]any{memberWorkflow: workflowNative(*w.Workflow)}
	case w.Target != nil:
		row = map[string]any{memberTarget: targetNative(*w.Target)}
	case w.Spec != nil:
		row = map[string]any{memberWorkflowSpec: map[string]any{"workflow_id": w.Spec.WorkflowID, "spec": specNative(w.Spec.Spec)}}
	default:
		return nil, errNoRow
	}
	return map[string]any{"envelope": envelopeNative(w.Envelope), "row": row}, nil
}

func workflowNative(w Workflow) map[string]any {
	phases := make([]any, len(w.Phases))
	for i, p := range w.Phases {
		phases[i] = map[string]any{
			"name":              p.Name,
			"wave_sizes":        intsNative(p.WaveSizes),
			"max_in_flight":     p.MaxInFlight,
			"bake_ms":           p.Bake.Milliseconds(),
			"failure_threshold": thresholdNative(p.FailureThreshold),
		}
	}
	approvals := make([]any, len(w.Approvals))
	for i, a := range w.Approvals {
		approvals[i] = map[string]any{"gate": a.Gate, "principal": a.Principal}
	}
	return map[string]any{
		"id":                    w.ID,
		"spec":                  specNative(w.Spec),
		"state":                 string(w.State),
		"reason":                w.Reason,
		"event":                 w.Event,
		"phases":                phases,
		"phase":                 w.Phase,
		"wave":                  w.Wave,
		"bake_until":            millis(w.BakeUntil),
		"wait_until":            millis(w.WaitUntil),
		"last_control":          w.LastControl,
		"failures_acknowledged": w.FailuresAcknowledged,
		"gate":                  w.Gate,
		"gate_expires":          millis(w.GateExpires),
		"approved":              stringsNative(w.Approved),
		"paused_by":             w.PausedBy,
		"resume_at":             millis(w.ResumeAt),
		"waiting":               w.Waiting,
		"targets":               w.Targets,
		"unplanned":             w.Unplanned,
		"created_at":            millis(w.CreatedAt),
		"updated_at":            millis(w.UpdatedAt),
		"seq":                   w.Seq,
		"rollback_of":           w.RollbackOf,
		"requester":             w.Requester,
		"approvals":             approvals,
	}
}

func targetNative(t Target) map[string]any {
	return map[string]any{
		"workflow_id":      t.WorkflowID,
		"cluster_id":       t.ClusterID,
		"phase":            t.Phase,
		"wave":             t.Wave,
		"state":            string(t.State),
		"command_id":       t.CommandID,
		"attempt":          t.Attempt,
		"reason":           t.Reason,
		"unhealthy":        t.Unhealthy,
		"previous_version": t.PreviousVersion,
		"version":          t.Version,
		"started_at":       millis(t.StartedAt),
		"not_before":       millis(t.NotBefore),
		"finished_at":      millis(t.FinishedAt),
		"operation":        operationNative(t.Operation),
		"previous_config":  stringMapNative(t.PreviousConfig),
		"previous_unset":   stringsNative(t.PreviousUnset),
		"order":            t.Order,
	}
}

func workflowRecordFrom(v any) (WorkflowRecord, error) {
	r := &nativeReader{}
	x := r.record(v, "")
	w := WorkflowRecord{Envelope: envelopeFrom(x.record("envelope"))}
	switch member, row := x.union("row"); member {
	case memberWorkflow:
		wf := &Workflow{
			ID:                   row.str("id"),
			Spec:                 specFrom(row.record("spec")),
			State:                WorkflowState(row.str("state")),
			Reason:               row.str("reason"),
			Event:                row.str("event"),
			Phase:                row.int("phase"),
			Wave:                 row.int("wave"),
			BakeUntil:            row.time("bake_until"),
			WaitUntil:            row.time("wait_until"),
			LastControl:          row.str("last_control"),
			FailuresAcknowledged: row.int("failures_acknowledged"),
			Gate:                 row.str("gate"),
			GateExpires:          row.time("gate_expires"),
			Approved:             row.strs("approved"),
			PausedBy:             row.str("paused_by"),
			ResumeAt:             row.time("resume_at"),
			Waiting:              row.str("waiting"),
			Targets:              row.int("targets"),
			Unplanned:            row.int("unplanned"),
			CreatedAt:            row.time("created_at"),
			UpdatedAt:            row.time("updated_at"),
			Seq:                  row.long("seq"),
			RollbackOf:           row.str("rollback_of"),
			Requester:            row.str("requester"),
		}
		for _, a := range row.recs("approvals") {
			wf.Approvals = append(wf.Approvals, GateApproval{Gate: a.str("gate"), Principal: a.str("principal")})
		}
		for _, p := range row.recs("phases") {
			wf.Phases = append(wf.Phases, PhasePlan{
				Name:             p.str("name"),
				WaveSizes:        p.ints("wave_sizes"),
				MaxInFlight:      p.int("max_in_flight"),
				Bake:             p.duration("bake_ms"),
				FailureThreshold: thresholdFrom(p.record("failure_threshold")),
			})
		}
		w.Workflow = wf
	case memberTarget:
		w.Target = &Target{
			WorkflowID:      row.str("workflow_id"),
			ClusterID:       row.str("cluster_id"),
			Phase:           row.int("phase"),
			Wave:            row.int("wave"),
			State:           TargetState(row.str("state")),
			CommandID:       row.str("command_id"),
			Attempt:         row.int("attempt"),
			Reason:          row.str("reason"),
			Unhealthy:       row.boolean("unhealthy"),
			PreviousVersion: row.str("previous_version"),
			Version:         row.str("version"),
			StartedAt:       row.time("started_at"),
			NotBefore:       row.time("not_before"),
			FinishedAt:      row.time("finished_at"),
			Operation:       operationFrom(row.record("operation")),
			PreviousConfig:  row.strMap("previous_config"),
			PreviousUnset:   row.strs("previous_unset"),
			Order:           row.int("order"),
		}
	case memberWorkflowSpec:
		w.Spec = &WorkflowSpec{WorkflowID: row.str("workflow_id"), Spec: specFrom(row.record("spec"))}
	default:
		r.fail("row", "unknown row kind %q", member)
	}
	return w, r.err
}

// rows counts the kinds of row set in w: a record holds exactly one.
func (w WorkflowRecord) rows() int {
	n := 0
	for _, set := range []bool{w.Workflow != nil, w.Target != nil, w.Spec != nil} {
		if set {
			n++
		}
	}
	return n
}

func commandNative(c Command) map[string]any {
	return map[string]any{
		"envelope":    envelopeNative(c.Envelope),
		"id":          c.ID,
		"workflow_id": c.WorkflowID,
		"cluster_id":  c.ClusterID,
		"attempt":     c.Attempt,
		"timeout_ms":  c.Timeout.Milliseconds(),
		"operation":   operationNative(c.Operation),
		"cluster":     clusterNative(c.Cluster),
	}
}

func commandFrom(v any) (Command, error) {
	r := &nativeReader{}
	x := r.record(v, "")
	c := Command{
		Envelope:   envelopeFrom(x.record("envelope")),
		ID:         x.str("id"),
		WorkflowID: x.str("workflow_id"),
		ClusterID:  x.str("cluster_id"),
		Attempt:    x.int("attempt"),
		Timeout:    x.duration("timeout_ms"),
		Operation:  operationFrom(x.record("operation")),
		Cluster:    clusterFrom(x.record("cluster")),
	}
	return c, r.err
}

func operationEventNative(o OperationEvent) map[string]any {
	return map[string]any{
		"envelope":         envelopeNative(o.Envelope),
		"command_id":       o.CommandID,
		"workflow_id":      o.WorkflowID,
		"cluster_id":       o.ClusterID,
		"attempt":          o.Attempt,
		"status":           string(o.Status),
		"reason":           o.Reason,
		"previous_version": o.PreviousVersion,
		"version":          o.Version,
		"output":           o.Output,
		"previous_config":  stringMapNative(o.PreviousConfig),
		"previous_unset":   stringsNative(o.PreviousUnset),
		"deadline":         millis(o.Deadline),
		"executor":         o.Executor,
		"fencing_token":    o.FencingToken,
	}
}

func operationEventFrom(v any) (OperationEvent, error) {
	r := &nativeReader{}
	x := r.record(v, "")
	o := OperationEvent{
		Envelope:        envelopeFrom(x.record("envelope")),
		CommandID:       x.str("command_id"),
		WorkflowID:      x.str("workflow_id"),
		ClusterID:       x.str("cluster_id"),
		Attempt:         x.int("attempt"),
		Status:          OperationStatus(x.str("status")),
		Reason:          x.str("reason"),
		PreviousVersion: x.str("previous_version"),
		Version:         x.str("version"),
		Output:          x.str("output"),
		PreviousConfig:  x.strMap("previous_config"),
		PreviousUnset:   x.strs("previous_unset"),
		Deadline:        x.time("deadline"),
		Executor:        x.str("executor"),
		FencingToken:    x.long("fencing_token"),
	}
	return o, r.err
}

func healthNative(h Health) map[string]any {
	return map[string]any{
		"envelope":         envelopeNative(h.Envelope),
		"cluster_id":       h.ClusterID,
		"status":           string(h.Status),
		"previous_status":  string(h.PreviousStatus),
		"reasons":          stringsNative(h.Reasons),
		"observed_version": h.ObservedVersion,
		"config_hash":      h.ConfigHash,
		"details":          stringMapNative(h.Details),
		"observed_at":      millis(h.ObservedAt),
		"heartbeat":        h.Heartbeat,
		"drift":            driftNative(h.Drift),
		"drift_changed":    h.DriftChanged,
	}
}

func driftNative(items []DriftItem) []any {
	out := make([]any, len(items))
	for i, d := range items {
		out[i] = map[string]any{"key": d.Key, "observed": d.Observed, "desired": d.Desired}
	}
	return out
}

func driftFrom(xs []rec) []DriftItem {
	if len(xs) == 0 {
		return nil
	}
	out := make([]DriftItem, len(xs))
	for i, x := range xs {
		out[i] = DriftItem{Key: x.str("key"), Observed: x.str("observed"), Desired: x.str("desired")}
	}
	return out
}

func healthFrom(v any) (Health, error) {
	r := &nativeReader{}
	x := r.record(v, "")
	h := Health{
		Envelope:        envelopeFrom(x.record("envelope")),
		ClusterID:       x.str("cluster_id"),
		Status:          HealthStatus(x.str("status")),
		PreviousStatus:  HealthStatus(x.str("previous_status")),
		Reasons:         x.strs("reasons"),
		ObservedVersion: x.str("observed_version"),
		ConfigHash:      x.str("config_hash"),
		Details:         x.strMap("details"),
		ObservedAt:      x.time("observed_at"),
		Heartbeat:       x.boolean("heartbeat"),
		Drift:           driftFrom(x.recs("drift")),
		DriftChanged:    x.boolean("drift_changed"),
	}
	return h, r.err
}

func notificationNative(n Notification) map[string]any {
	return map[string]any{
		"envelope":    envelopeNative(n.Envelope),
		"kind":        n.Kind,
		"severity":    string(n.Severity),
		"workflow_id": n.WorkflowID,
		"cluster_id":  n.ClusterID,
		"message":     n.Message,
		"fields":      stringMapNative(n.Fields),
	}
}

func notificationFrom(v any) (Notification, error) {
	r := &nativeReader{}
	x := r.record(v, "")
	n := Notification{
		Envelope:   envelopeFrom(x.record("envelope")),
		Kind:       x.str("kind"),
		Severity:   Severity(x.str("severity")),
		WorkflowID: x.str("workflow_id"),
		ClusterID:  x.str("cluster_id"),
		Message:    x.str("message"),
		Fields:     x.strMap("fields"),
	}
	return n, r.err
}

func policyRecordNative(p PolicyRecord) map[string]any {
	return signatureNative(map[string]any{
		"envelope": envelopeNative(p.Envelope),
		"policy": map[string]any{
			"name":        p.Policy.Name,
			"description": p.Policy.Description,
			"phases":      phasesNative(p.Policy.Phases),

			"drift_correction_enabled":      p.Policy.DriftCorrection.Enabled,
			"drift_correction_selector":     p.Policy.DriftCorrection.Selector,
			"drift_correction_max_per_hour": p.Policy.DriftCorrection.MaxPerHour,
		},
	}, p.Signature)
}

func policyRecordFrom(v any) (PolicyRecord, error) {
	r := &nativeReader{}
	x := r.record(v, "")
	p := x.record("policy")
	rec := PolicyRecord{
		Envelope: envelopeFrom(x.record("envelope")),
		Policy: rollout.Policy{
			Name:        p.str("name"),
			Description: p.str("description"),
			Phases:      phasesFrom(p.recs("phases")),
			DriftCorrection: rollout.DriftCorrection{
				Enabled:    p.boolean("drift_correction_enabled"),
				Selector:   p.str("drift_correction_selector"),
				MaxPerHour: p.int("drift_correction_max_per_hour"),
			},
		},
	}
	rec.Signature = signatureFrom(x)
	return rec, r.err
}

func trustRecordNative(t TrustRecord) (map[string]any, error) {
	var body map[string]any
	switch {
	case t.Principal != nil && t.Role != nil:
		return nil, errTwoTrustBodies
	case t.Principal != nil:
		keys := make([]any, 0, len(t.Principal.Keys))
		for _, k := range t.Principal.Keys {
			keys = append(keys, map[string]any{
				"id":         k.ID,
				"public_key": bytesNative(k.Public),
				"expires":    millis(k.Expires),
				"revoked":    millis(k.Revoked),
			})
		}
		body = map[string]any{memberTrustPrincipal: map[string]any{
			"name":  t.Principal.Name,
			"roles": stringsNative(t.Principal.Roles),
			"keys":  keys,
		}}
	case t.Role != nil:
		rules := make([]any, 0, len(t.Role.Rules))
		for _, x := range t.Role.Rules {
			rules = append(rules, map[string]any{
				"name":              x.Name,
				"actions":           stringsNative(x.Actions),
				"operations":        stringsNative(x.Operations),
				"selector":          x.Selector,
				"phases":            stringsNative(x.Phases),
				"approvals":         x.Approvals,
				"separate_approver": x.SeparateApprover,
			})
		}
		body = map[string]any{memberTrustRole: map[string]any{"name": t.Role.Name, "rules": rules}}
	default:
		return nil, errNoTrustBody
	}
	return signatureNative(map[string]any{"envelope": envelopeNative(t.Envelope), "body": body}, t.Signature), nil
}

func trustRecordFrom(v any) (TrustRecord, error) {
	r := &nativeReader{}
	x := r.record(v, "")
	t := TrustRecord{Envelope: envelopeFrom(x.record("envelope"))}
	switch member, body := x.union("body"); member {
	case memberTrustPrincipal:
		p := &TrustPrincipal{Name: body.str("name"), Roles: body.strs("roles")}
		for _, k := range body.recs("keys") {
			p.Keys = append(p.Keys, TrustKey{ID: k.str("id"), Public: k.bytes("public_key"), Expires: k.time("expires"), Revoked: k.time("revoked")})
		}
		t.Principal = p
	case memberTrustRole:
		role := &authz.Role{Name: body.str("name")}
		for _, x := range body.recs("rules") {
			role.Rules = append(role.Rules, authz.Rule{
				Name:             x.str("name"),
				Actions:          x.strs("actions"),
				Operations:       x.strs("operations"),
				Selector:         x.str("selector"),
				Phases:           x.strs("phases"),
				Approvals:        x.int("approvals"),
				SeparateApprover: x.boolean("separate_approver"),
			})
		}
		t.Role = role
	default:
		r.fail("body", "unknown trust record kind %q", member)
	}
	t.Signature = signatureFrom(x)
	return t, r.err
}

func claimRecordNative(c ClaimRecord) map[string]any {
	return map[string]any{
		"envelope":          envelopeNative(c.Envelope),
		"cluster_id":        c.ClusterID,
		"command_id":        c.CommandID,
		"workflow_id":       c.WorkflowID,
		"command_partition": int(c.CommandPartition),
		"queued_offset":     c.QueuedOffset,
		"holder":            c.Holder,
	}
}

func claimRecordFrom(v any) (ClaimRecord, error) {
	r := &nativeReader{}
	x := r.record(v, "")
	c := ClaimRecord{
		Envelope:         envelopeFrom(x.record("envelope")),
		ClusterID:        x.str("cluster_id"),
		CommandID:        x.str("command_id"),
		WorkflowID:       x.str("workflow_id"),
		CommandPartition: int32(x.int("command_partition")),
		QueuedOffset:     x.long("queued_offset"),
		Holder:           x.str("holder"),
	}
	return c, r.err
}

func leaseRecordNative(l LeaseRecord) map[string]any {
	return map[string]any{
		"envelope":    envelopeNative(l.Envelope),
		"partition":   int(l.Partition),
		"holder":      l.Holder,
		"renewed_at":  millis(l.RenewedAt),
		"duration_ms": l.Duration.Milliseconds(),
	}
}

func leaseRecordFrom(v any) (LeaseRecord, error) {
	r := &nativeReader{}
	x := r.record(v, "")
	l := LeaseRecord{
		Envelope:  envelopeFrom(x.record("envelope")),
		Partition: int32(x.int("partition")),
		Holder:    x.str("holder"),
		RenewedAt: x.time("renewed_at"),
		Duration:  x.duration("duration_ms"),
	}
	return l, r.err
}

func deadLetterNative(d DeadLetter) map[string]any {
	return map[string]any{
		"envelope":         envelopeNative(d.Envelope),
		"service":          d.Service,
		"source_topic":     d.SourceTopic,
		"source_partition": int(d.SourcePartition),
		"source_offset":    d.SourceOffset,
		"key":              bytesNative(d.Key),
		"null_key":         d.NullKey,
		"value":            bytesNative(d.Value),
		"tombstone":        d.Tombstone,
		"value_size":       d.ValueSize,
		"reason":           d.Reason,
	}
}

func bytesNative(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func deadLetterFrom(v any) (DeadLetter, error) {
	r := &nativeReader{}
	x := r.record(v, "")
	d := DeadLetter{
		Envelope:        envelopeFrom(x.record("envelope")),
		Service:         x.str("service"),
		SourceTopic:     x.str("source_topic"),
		SourcePartition: int32(x.int("source_partition")),
		SourceOffset:    x.long("source_offset"),
		Key:             x.bytes("key"),
		NullKey:         x.boolean("null_key"),
		Value:           x.bytes("value"),
		Tombstone:       x.boolean("tombstone"),
		ValueSize:       x.long("value_size"),
		Reason:          x.str("reason"),
	}
	return d, r.err
}

func checkpointNative(c Checkpoint) map[string]any {
	entries := make([]any, len(c.Entries))
	for i, e := range c.Entries {
		entries[i] = map[string]any{"topic": e.Topic, "key": e.Key, "seq": e.Seq, "hash": bytesNative(e.Hash)}
	}
	return map[string]any{
		"envelope":    envelopeNative(c.Envelope),
		"writer":      c.Writer,
		"workflow_id": c.WorkflowID,
		"bucket":      c.Bucket,
		"buckets":     c.Buckets,
		"seq":         c.Seq,
		"head":        bytesNative(c.Head),
		"entries":     entries,
		"key_id":      c.KeyID,
		"signature":   bytesNative(c.Signature),
	}
}

func checkpointFrom(v any) (Checkpoint, error) {
	r := &nativeReader{}
	x := r.record(v, "")
	c := Checkpoint{
		Envelope:   envelopeFrom(x.record("envelope")),
		Writer:     x.str("writer"),
		WorkflowID: x.str("workflow_id"),
		Bucket:     x.int("bucket"),
		Buckets:    x.int("buckets"),
		Seq:        x.long("seq"),
		Head:       x.bytes("head"),
		KeyID:      x.str("key_id"),
		Signature:  x.bytes("signature"),
	}
	for _, e := range x.recs("entries") {
		c.Entries = append(c.Entries, ChainEntry{Topic: e.str("topic"), Key: e.str("key"), Seq: e.long("seq"), Hash: e.bytes("hash")})
	}
	return c, r.err
}
