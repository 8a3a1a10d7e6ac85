// Package records holds the values Flotilla's services write to and read
// from their topics, and their Avro codec (see codec.go).
package records

import (
	"strconv"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/authz"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// Envelope is carried by every record: the audit trail is built from it.
type Envelope struct {
	ID          string    `json:"id"`                    // unique ID of this record (a UUID)
	Time        time.Time `json:"time"`                  // when it was written
	Principal   string    `json:"principal"`             // who caused it: a user ("alice"), or a service ("planner")
	CausationID string    `json:"causationId,omitempty"` // Envelope.ID of the record that caused this one; "" for a user's own request
}

// ClusterRecord is the value of fleet.inventory, keyed by cluster ID.
// A tombstone (nil value) decommissions the cluster.
type ClusterRecord struct {
	Envelope  Envelope
	Cluster   inventory.Cluster
	Signature Signature
}

// Signature is a record's signature by its principal: which key signed it
// and the Ed25519 signature of its canonical bytes (see Sign). The zero
// value is an unsigned record.
type Signature struct {
	KeyID string
	Value []byte
}

// Request is the value of fleet.requests, keyed by its Envelope.ID, which the
// client chooses (a UUID): retries of the same request collapse into one.
// Exactly one body field is set.
type Request struct {
	Envelope  Envelope
	Submit    *SubmitRollout
	Control   *ControlWorkflow
	Signature Signature
}

// ControlWorkflow asks the planner to act on a workflow. Its record key is
// ControlKey(WorkflowID, request ID), so that it lands on the partition of
// the workflow, whose planner alone can act on it.
type ControlWorkflow struct {
	WorkflowID string
	Action     ControlAction
	Reason     string
	// Phase names the phase whose gate an approve request opens; empty
	// approves the gate the workflow waits at.
	Phase string
}

// ControlAction names what a control request does.
type ControlAction string

const (
	// ActionPause stops a running workflow from starting anything new;
	// operations in flight finish.
	ActionPause ControlAction = "pause"
	// ActionResume lets a paused workflow go on. Failures that paused it
	// are acknowledged: the threshold counts only failures after them.
	ActionResume ControlAction = "resume"
	// ActionRetry puts a workflow's failed clusters back in line, with the
	// same plan, and runs the workflow from the earliest wave that has one.
	ActionRetry ControlAction = "retry"
	// ActionApprove opens the approval gate a workflow waits at.
	ActionApprove ControlAction = "approve"
	// ActionCancel ends a workflow: nothing new starts, operations in
	// flight finish, and its state is cancelled.
	ActionCancel ControlAction = "cancel"
	// ActionRollback ends a workflow and undoes it: once its operations in
	// flight finish, the clusters it changed get the inverse operation,
	// newest first, under the workflow's pacing, in a rollback workflow
	// of their own (RollbackID).
	ActionRollback ControlAction = "rollback"
)

// RollbackID is the ID of the workflow that rolls back workflow id. It
// starts with id and a '/', so that its records land on id's partition.
func RollbackID(id string) string { return id + "/rollback" }

// ClaimRecord is the value of fleet.claims, keyed ClaimKey(ClusterID,
// CommandID): an executor's claim on a cluster for one command. The
// earliest live claim on a cluster in log order holds the cluster; a
// tombstone (nil value) releases a claim.
type ClaimRecord struct {
	Envelope   Envelope
	ClusterID  string
	CommandID  string
	WorkflowID string
	// CommandPartition is the partition of the commands topic the command
	// is on: its executor releases a claim left behind by a crash.
	CommandPartition int32
	// QueuedOffset is the offset of the claim's first record, its place in
	// line, repeated by the records that follow it (the grant); -1 means
	// the record's own offset. Ordering by it, rather than by the offset
	// of a key's latest record, keeps every reader in agreement whether it
	// followed the log or rebuilt it after compaction.
	QueuedOffset int64
	// Holder is the executor instance the claim was granted to when it
	// reached the front of the line; empty while it waits. The grant's own
	// offset is the fencing token of the operation it lets act.
	Holder string
}

// LeaseRecord is the value of fleet.leases, keyed LeaseKey(Partition): the
// lease of the executor that owns a partition of fleet.commands. It renews
// it while it acts; a new owner waits for it to lapse before resuming what
// the old owner had in flight.
type LeaseRecord struct {
	Envelope  Envelope
	Partition int32
	Holder    string
	// RenewedAt is when the holder sent this renewal, on its own clock:
	// its lease ends Duration later, and it stops acting by then.
	RenewedAt time.Time
	Duration  time.Duration
}

// DeadLetter is the value of fleet.deadletters, keyed DeadLetterKey: a
// record a service could not use, set aside with the reason.
type DeadLetter struct {
	Envelope        Envelope
	Service         string
	SourceTopic     string
	SourcePartition int32
	SourceOffset    int64
	Key             []byte
	NullKey         bool
	// Value is the record's value, its first MaxDeadLetterValue bytes;
	// ValueSize the size of the whole.
	Value     []byte
	Tombstone bool
	ValueSize int64
	Reason    string
}

// MaxDeadLetterValue is how much of a bad record's value a dead letter
// keeps: enough to see what it was, not enough to be too big itself.
const MaxDeadLetterValue = 64 << 10

// DeadLetterKey is the record key of the dead letter of a record: where
// it was, "topic/partition/offset".
func DeadLetterKey(topic string, partition int32, offset int64) string {
	return topic + "/" + strconv.Itoa(int(partition)) + "/" + strconv.FormatInt(offset, 10)
}

// LeaseKey is the record key of the lease on a partition of fleet.commands.
func LeaseKey(partition int32) string { return "commands-" + strconv.Itoa(int(partition)) }

// ClaimKey is the record key of a claim: the cluster ID, a '/', and the
// command ID, so that every claim on a cluster lands on one partition.
func ClaimKey(clusterID, commandID string) string { return clusterID + "/" + commandID }

// PolicyRecord is the value of fleet.policies, keyed by the policy's
// name: a named deployment policy. A tombstone (nil value) removes it.
type PolicyRecord struct {
	Envelope  Envelope
	Policy    rollout.Policy
	Signature Signature
}

// TrustRecord is the value of fleet.trust, keyed TrustPrincipalKey(name)
// or TrustRoleKey(name): one principal with its keys and roles, or one
// role with its rules. Exactly one of Principal and Role is set. It is
// signed by an admin key (package trust says which count).
type TrustRecord struct {
	Envelope  Envelope
	Principal *TrustPrincipal
	Role      *authz.Role
	Signature Signature
}

// TrustPrincipal is a person or program that signs records, its keys and
// the names of its roles.
type TrustPrincipal struct {
	Name  string
	Roles []string
	Keys  []TrustKey
}

// TrustKey is one public key of a principal. A record appended at or after
// Expires or Revoked (when set) is refused; a revoked key stays listed so
// that it is refused as revoked, not as unknown.
type TrustKey struct {
	ID      string // keys.ID of Public
	Public  []byte // the raw Ed25519 public key
	Expires time.Time
	Revoked time.Time
}

// TrustPrincipalKey and TrustRoleKey are the record keys of fleet.trust.
func TrustPrincipalKey(name string) string { return "principal/" + name }
func TrustRoleKey(name string) string      { return "role/" + name }

// ControlKey is the record key of a control request: the workflow ID, a
// '/', and the request ID.
func ControlKey(workflowID, requestID string) string { return workflowID + "/" + requestID }

// SubmitRollout asks for a new rollout. Its workflow ID is the request ID.
type SubmitRollout struct {
	Spec rollout.Spec
}

// WorkflowState is the life-cycle state of a workflow.
type WorkflowState string

const (
	WorkflowPending   WorkflowState = "pending"
	WorkflowRunning   WorkflowState = "running"
	WorkflowPaused    WorkflowState = "paused"
	WorkflowSucceeded WorkflowState = "succeeded"
	WorkflowFailed    WorkflowState = "failed"
	WorkflowCancelled WorkflowState = "cancelled"
	// WorkflowRollingBack marks a workflow being undone: its rollback
	// workflow (RollbackID) runs, or waits for its operations in flight.
	WorkflowRollingBack WorkflowState = "rolling-back"
	// WorkflowRolledBack marks a workflow whose rollback finished; Reason
	// says how it went.
	WorkflowRolledBack WorkflowState = "rolled-back"
	// WorkflowRejected marks a request that was never accepted: it could not
	// be decoded or failed validation. Reason says why.
	WorkflowRejected WorkflowState = "rejected"
)

// Terminal reports whether nothing more will happen to a workflow in this state.
func (s WorkflowState) Terminal() bool {
	switch s {
	case WorkflowSucceeded, WorkflowFailed, WorkflowCancelled, WorkflowRejected, WorkflowRolledBack:
		return true
	}
	return false
}

// WorkflowRecord is the value of fleet.workflows. A workflow's own row is
// keyed by the workflow ID and has Workflow set; its spec row, written once
// when it is created, is keyed "workflowID/@spec" (topics.SpecKey) and has
// Spec set; each of its targets has a row keyed "workflowID/clusterID" with
// Target set. Together the rows are the planner's whole state: it rebuilds
// from them and nothing else.
type WorkflowRecord struct {
	Envelope Envelope
	Workflow *Workflow
	Target   *Target
	Spec     *WorkflowSpec
}

// SpecSummary is what a header row keeps of a spec: its name and
// operation, enough to say what a workflow does.
func SpecSummary(s rollout.Spec) rollout.Spec {
	return rollout.Spec{Name: s.Name, Operation: s.Operation}
}

// WorkflowSpec is a workflow's whole spec, in a row of its own so that the
// header row, written on every decision, carries only its name and
// operation (see Workflow.Spec).
type WorkflowSpec struct {
	WorkflowID string
	Spec       rollout.Spec
}

// PhasePlan is the shape of one planned phase: its name, the size of each of
// its waves, and the pacing it asked for. Which cluster is in which wave is
// held by the Target rows.
type PhasePlan struct {
	Name        string
	WaveSizes   []int
	MaxInFlight int
	Bake        time.Duration
	// FailureThreshold is the phase's own limit; zero if it has none.
	FailureThreshold rollout.Threshold
}

// Workflow is the planner's state of one rollout.
type Workflow struct {
	ID string // = the ID of the request that submitted it
	// Spec is the workflow's spec. In a row the planner writes it holds
	// only the name and operation (SpecSummary): the whole spec is in the
	// workflow's spec row. Rows written before workflow.v3 hold it whole.
	Spec rollout.Spec
	// State is where the workflow is in its life cycle; Reason says why it
	// is paused, failed or rejected.
	State  WorkflowState
	Reason string
	// Event names the decision that wrote this row: "submitted", "rejected",
	// "phase-started", "wave-started", "wave-completed", "paused", "succeeded",
	// "failed", or "progress" (targets changed, no transition). The notifier
	// turns it into a notification.
	Event  string
	Phases []PhasePlan
	// Phase and Wave index the current wave (0-based).
	Phase int
	Wave  int
	// BakeUntil is when the current wave, all of whose operations finished,
	// has baked long enough; zero while the wave is still running.
	BakeUntil time.Time
	// LastControl is the ID of the last control request applied, so that
	// its requester can see it took effect.
	LastControl string
	// FailuresAcknowledged are failures a person resumed the workflow past:
	// the failure threshold counts only those beyond them.
	FailuresAcknowledged int
	// Gate is the approval gate the workflow waits at ("before:canary",
	// "after:canary"), GateExpires when it stops waiting and pauses the
	// workflow (zero: never), Approved the gates opened so far.
	Gate        string
	GateExpires time.Time
	Approved    []string
	// PausedBy says what paused the workflow: "threshold", "person" or
	// "gate" (an approval not given in time). ResumeAt is when a workflow
	// paused by unhealthy clusters that all recovered resumes by itself.
	PausedBy string
	ResumeAt time.Time
	// WaitUntil is when a target of the current wave held outside its
	// maintenance window may start; Waiting says what waits and why.
	WaitUntil time.Time
	Waiting   string
	Targets   int // number of target clusters
	// Unplanned is how many targets of the plan have no row yet: a large
	// rollout is planned over several transactions (a chunk of target
	// rows each), and starts once it is 0.
	Unplanned int
	CreatedAt time.Time
	UpdatedAt time.Time
	// Seq grows by one with every row the planner writes for this workflow,
	// so readers can tell a newer row from a stale one.
	Seq int64
	// RollbackOf is, for a rollback workflow, the ID of the workflow it
	// rolls back.
	RollbackOf string
	// Requester is who submitted the rollout (its request's principal):
	// separation of duties may keep it from approving the rollout's gates.
	Requester string
	// Approvals are the approvals the planner accepted, in order: those of
	// the current gate so far, and those that opened each gate in
	// Approved (rows written before they were kept hold only the current
	// gate's, when it needs more than one).
	Approvals []GateApproval
}

// GateApproval is an approval of a gate by a principal.
type GateApproval struct {
	Gate      string
	Principal string
}

// TargetState is where one target cluster is in its workflow.
type TargetState string

const (
	TargetPending   TargetState = "pending"
	TargetRunning   TargetState = "running" // a command was sent
	TargetSucceeded TargetState = "succeeded"
	TargetFailed    TargetState = "failed" // its operation failed, or it turned unhealthy after it
	// TargetSkipped marks a target left alone: it was unhealthy when its
	// turn came and the rollout skips such targets.
	TargetSkipped TargetState = "skipped"
)

// Terminal reports whether the target has its outcome (succeeded, failed
// or skipped), for now: a retry puts a failed one back in line.
func (s TargetState) Terminal() bool {
	return s == TargetSucceeded || s == TargetFailed || s == TargetSkipped
}

// Target is the planner's state of one cluster within a workflow.
type Target struct {
	WorkflowID string
	ClusterID  string
	Phase      int
	Wave       int
	State      TargetState
	CommandID  string // the command sent for it, if any
	Attempt    int
	Reason     string // why it failed
	// Unhealthy is set when the cluster turned unhealthy after its operation.
	Unhealthy       bool
	PreviousVersion string
	Version         string
	// NotBefore holds a target waiting to retry until then.
	NotBefore  time.Time
	StartedAt  time.Time
	FinishedAt time.Time
	// Operation is this target's own operation, when it differs from the
	// workflow's: a rollback's inverse. Its Kind is empty otherwise.
	Operation rollout.Operation
	// PreviousConfig and PreviousUnset are, for a config operation, what
	// its keys were before it: the value of each key that had one, and the
	// keys that had none. A rollback sets the first and resets the second.
	PreviousConfig map[string]string
	PreviousUnset  []string
	// Order is the target's position in its wave: lower starts first, and
	// equal orders go by cluster ID. A rollback starts the newest change first.
	Order int
}

// Command is the value of fleet.commands, keyed "workflowID/clusterID": the
// planner's instruction to the executor to apply an operation to one cluster.
type Command struct {
	Envelope   Envelope
	ID         string // unique and stable: the same decision always yields the same ID
	WorkflowID string
	ClusterID  string
	Attempt    int
	// Timeout bounds this attempt (0: the executor's own limit).
	Timeout   time.Duration
	Operation rollout.Operation
	// Cluster is the inventory entry at the time of the decision, so that the
	// executor needs no inventory of its own to reach the cluster.
	Cluster inventory.Cluster
}

// OperationStatus is the outcome so far of one command.
type OperationStatus string

const (
	OperationStarted   OperationStatus = "started"
	OperationSucceeded OperationStatus = "succeeded"
	OperationFailed    OperationStatus = "failed"
)

// Terminal reports whether the operation has finished.
func (s OperationStatus) Terminal() bool { return s == OperationSucceeded || s == OperationFailed }

// OperationEvent is the value of fleet.operations, keyed "workflowID/clusterID":
// the executor's record of what it did for a command.
type OperationEvent struct {
	Envelope        Envelope
	CommandID       string
	WorkflowID      string
	ClusterID       string
	Attempt         int
	Status          OperationStatus
	Reason          string // why it failed
	PreviousVersion string // the cluster's version before the operation
	Version         string // the cluster's version after it
	Output          string // the tail of what the driver printed
	// PreviousConfig and PreviousUnset are, for a config operation, the
	// values its keys had before it and the keys that had none, as read
	// before acting (see Target).
	PreviousConfig map[string]string
	PreviousUnset  []string
	// Deadline is when the attempt times out, set when it starts, so that
	// an attempt resumed after a restart does not get a whole timeout again.
	Deadline time.Time
	// Executor is the executor instance that wrote the event, and
	// FencingToken the token its attempt acted under (the offset of its
	// claim's grant; 0 when none was written).
	Executor     string
	FencingToken int64
}

// HealthStatus is a cluster's health as the monitor sees it.
type HealthStatus string

const (
	HealthUnknown   HealthStatus = "unknown"
	HealthHealthy   HealthStatus = "healthy"
	HealthDegraded  HealthStatus = "degraded"
	HealthUnhealthy HealthStatus = "unhealthy"
)

// Health is the value of fleet.health, keyed by cluster ID.
type Health struct {
	Envelope        Envelope
	ClusterID       string
	Status          HealthStatus
	PreviousStatus  HealthStatus // the status of the previous signal; "unknown" for the first
	Reasons         []string
	ObservedVersion string
	ObservedAt      time.Time
	// Heartbeat is set on a periodic signal that reports no change.
	Heartbeat bool
	// ConfigHash is a hash of the configs Flotilla manages on the cluster,
	// as observed ("" when the probe reads no configs): a change shows a
	// config operation landed, or drift.
	ConfigHash string
	// Details are what the probe measured, for people (brokers online,
	// controller, offline partitions, ...).
	Details map[string]string
	// Drift is how the cluster differs from its desired state (the
	// inventory's, else what the last successful rollout left), on the
	// declared keys outside its ignore list, sorted by key; empty while an
	// operation is in flight on it. Each item is also one of Reasons.
	Drift []DriftItem
	// DriftChanged is set when Drift differs from the previous signal's.
	DriftChanged bool
}

// DriftItem is one way a cluster differs from its desired state.
type DriftItem struct {
	Key      string // inventory.DriftVersionKey, or a config key
	Observed string // what the probe saw; "" for a config key with no value
	Desired  string
}

// String says it in one line: "version 3.8.0, desired 3.9.1",
// "config log.retention.ms=100, desired 200".
func (d DriftItem) String() string {
	if d.Key == inventory.DriftVersionKey {
		return "version " + orNone(d.Observed) + ", desired " + d.Desired
	}
	if d.Observed == "" {
		return "config " + d.Key + " unset, desired " + d.Desired
	}
	return "config " + d.Key + "=" + d.Observed + ", desired " + d.Desired
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// Severity of a notification.
type Severity string

const (
	SeverityInfo    Severity = "info"
	SeverityWarning Severity = "warning"
	SeverityError   Severity = "error"
)

// Notification is the value of fleet.notifications, keyed by workflow ID (or
// cluster ID for health changes). Its Envelope.ID is derived from the record
// that caused it, so a notification is never told twice under two IDs.
type Notification struct {
	Envelope   Envelope          `json:"envelope"`
	Kind       string            `json:"kind"` // e.g. "workflow.paused", "operation.failed", "health.changed", "workflow.rejected"
	Severity   Severity          `json:"severity"`
	WorkflowID string            `json:"workflowId,omitempty"`
	ClusterID  string            `json:"clusterId,omitempty"`
	Message    string            `json:"message"`          // one line for people
	Fields     map[string]string `json:"fields,omitempty"` // the same, structured
}

// Checkpoint is the value of fleet.checkpoints, keyed
// topics.CheckpointKey(WorkflowID, Writer, Bucket): a writer's signed
// statement of where its hash chain over a workflow's records stood
// (package auditchain): the head, and the latest record of every live key
// of one bucket of the chain's keys.
type Checkpoint struct {
	Envelope   Envelope
	Writer     string // "planner" or "executor"
	WorkflowID string
	Bucket     int
	Buckets    int
	Seq        int64
	Head       []byte
	Entries    []ChainEntry
	KeyID      string // the signing key's ID; "" unsigned
	Signature  []byte
}

// ChainEntry is the latest record of one key of a chain, as of a
// checkpoint. Topic is the topic's role: "workflows", "commands" or
// "operations".
type ChainEntry struct {
	Topic string
	Key   string
	Seq   int64
	Hash  []byte
}
