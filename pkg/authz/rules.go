// Package authz decides who may do what to which clusters: the roles of
// the trust store (package trust) and their rules, checked against a
// request. It is pure: no I/O, no clock, so that it is table-tested and
// the planner's decisions stay deterministic.
package authz

// Actions a rule may allow. A rule allowing ActionAll allows every one.
const (
	ActionSubmit    = "submit"
	ActionApprove   = "approve"
	ActionPause     = "pause"
	ActionResume    = "resume"
	ActionRetry     = "retry"
	ActionCancel    = "cancel"
	ActionRollback  = "rollback"
	ActionInventory = "inventory" // write a cluster's inventory record
	ActionPolicy    = "policy"    // write a deployment policy
	ActionAll       = "*"
)

// AdminRole is the role whose principals may change the trust store. It
// may also have rules, like any other role.
const AdminRole = "admin"

// Role is a named set of rules: what its principals may do.
type Role struct {
	Name  string
	Rules []Rule
}

// Rule allows actions on the clusters its selector matches. Every field
// but Name and Actions narrows it; empty means any.
type Rule struct {
	// Name is quoted in refusals ("rule \"prod-sre-only\" allows only
	// role sre").
	Name string
	// Actions are the actions it allows (ActionSubmit, ...; ActionAll).
	Actions []string
	// Operations are the operation kinds a submit may have; empty: any.
	Operations []string
	// Selector is a label selector (package selector) of the clusters it
	// covers; empty: every cluster.
	Selector string
	// Phases are the phases whose gates an approve may open; empty: any.
	Phases []string
	// Approvals is how many distinct principals must approve a gate of a
	// workflow with a target this rule covers (0 and 1: one). It binds
	// every approver, whatever their own rules.
	Approvals int
	// SeparateApprover forbids who submitted a rollout with a target this
	// rule covers to approve its gates.
	SeparateApprover bool
}
