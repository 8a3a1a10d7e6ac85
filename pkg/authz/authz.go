package authz

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/flotilla-fleet/flotilla/pkg/selector"
)

// ErrDenied is wrapped by every refusal of Check.
var ErrDenied = errors.New("not authorised")

// Cluster is a cluster a request acts on, with its inventory labels
// (nil for one the inventory no longer has: only rules without a
// selector, or whose selector matches no labels, cover it).
type Cluster struct {
	ID     string
	Labels map[string]string
}

// Request is what Check decides on: who does what to which clusters.
type Request struct {
	Principal string
	Action    string
	// Operation is the kind of the workflow's operation (upgrade,
	// restart, config...), for the actions on workflows.
	Operation string
	// Workflow names the workflow a control acts on, for the message.
	Workflow string
	// Phase is the phase whose gate an approve opens.
	Phase string
	// Clusters are the clusters it acts on: every target of the plan or
	// workflow, the cluster of an inventory record; none for a policy.
	Clusters []Cluster
}

// Policy is the roles of a trust store, ready to check requests.
type Policy struct {
	roles      map[string][]*rule // by role name
	principals map[string][]string
	all        []*rule // every rule, by role name then order
}

type rule struct {
	Rule
	role string
	sel  selector.Selector
}

// NewPolicy returns the policy of roles, with the role names of each
// principal. A rule whose selector does not parse covers no cluster
// (CheckRole refuses such a role before it is stored).
func NewPolicy(roles []Role, principals map[string][]string) *Policy {
	p := &Policy{roles: map[string][]*rule{}, principals: principals}
	sorted := slices.Clone(roles)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, r := range sorted {
		for _, x := range r.Rules {
			sel, err := selector.Parse(x.Selector)
			if err != nil {
				continue
			}
			c := &rule{Rule: x, role: r.Name, sel: sel}
			p.roles[r.Name] = append(p.roles[r.Name], c)
			p.all = append(p.all, c)
		}
	}
	return p
}

var knownActions = []string{ActionSubmit, ActionApprove, ActionPause, ActionResume, ActionRetry, ActionCancel, ActionRollback, ActionInventory, ActionPolicy, ActionAll}

// CheckRole reports what is wrong with a role: a rule without a name or
// actions, an unknown action, a selector that does not parse.
func CheckRole(r Role) error {
	if r.Name == "" {
		return errors.New("role has no name")
	}
	seen := map[string]bool{}
	for i, x := range r.Rules {
		switch {
		case x.Name == "":
			return fmt.Errorf("role %s: rule %d has no name", r.Name, i+1)
		case seen[x.Name]:
			return fmt.Errorf("role %s: two rules named %q", r.Name, x.Name)
		case len(x.Actions) == 0:
			return fmt.Errorf("role %s: rule %q allows no action", r.Name, x.Name)
		case x.Approvals < 0:
			return fmt.Errorf("role %s: rule %q: approvals %d is negative", r.Name, x.Name, x.Approvals)
		}
		seen[x.Name] = true
		for _, a := range x.Actions {
			if !slices.Contains(knownActions, a) {
				return fmt.Errorf("role %s: rule %q: unknown action %q (want one of %s)", r.Name, x.Name, a, strings.Join(knownActions, ", "))
			}
		}
		if _, err := selector.Parse(x.Selector); err != nil {
			return fmt.Errorf("role %s: rule %q: %w", r.Name, x.Name, err)
		}
	}
	return nil
}

// allows reports whether rule x allows action r on cluster c (nil: a
// request on no cluster, such as a policy).
func (x *rule) allows(r Request, c *Cluster) bool {
	if !slices.Contains(x.Actions, r.Action) && !slices.Contains(x.Actions, ActionAll) {
		return false
	}
	workflowAction := r.Action != ActionInventory && r.Action != ActionPolicy
	if workflowAction && len(x.Operations) > 0 && !slices.Contains(x.Operations, r.Operation) {
		return false
	}
	if r.Action == ActionApprove && len(x.Phases) > 0 && !slices.Contains(x.Phases, r.Phase) {
		return false
	}
	if c == nil {
		return x.Selector == "" // a policy is about every cluster
	}
	return x.sel.Matches(c.Labels)
}

// Check reports whether the principal may do what r asks: every cluster
// must be allowed by some rule of one of its roles (a request on no
// cluster, a policy, by some rule without a selector that allows the
// action). A refusal wraps
// ErrDenied and names the first cluster refused (by ID) and the rules
// that would allow it ("rule \"prod-sre-only\" allows only role sre").
func (p *Policy) Check(r Request) error {
	roles := p.principals[r.Principal]
	mine := func(c *Cluster) bool {
		for _, role := range roles {
			for _, x := range p.roles[role] {
				if x.allows(r, c) {
					return true
				}
			}
		}
		return false
	}
	if len(r.Clusters) == 0 {
		if mine(nil) {
			return nil
		}
		return p.denied(r, nil)
	}
	clusters := slices.Clone(r.Clusters)
	sort.Slice(clusters, func(i, j int) bool { return clusters[i].ID < clusters[j].ID })
	for i := range clusters {
		if !mine(&clusters[i]) {
			return p.denied(r, &clusters[i])
		}
	}
	return nil
}

// denied is the refusal of r on c.
func (p *Policy) denied(r Request, c *Cluster) error {
	roles := p.principals[r.Principal]
	who := r.Principal + " (no roles)"
	if len(roles) > 0 {
		who = r.Principal + " (roles " + strings.Join(roles, ", ") + ")"
	}
	// The rules of other roles that would allow it say who may: one that
	// names these clusters by a selector first, being the more telling.
	var by *rule
	for _, x := range p.all {
		if x.allows(r, c) && (by == nil || by.Selector == "" && x.Selector != "") {
			by = x
		}
	}
	var others []string
	for _, x := range p.all {
		if by != nil && x.Name == by.Name && x.allows(r, c) && !slices.Contains(others, x.role) {
			others = append(others, x.role)
		}
	}
	where := ""
	switch {
	case c == nil:
	case by != nil && by.Selector != "":
		where = " clusters matching " + by.Selector
	default:
		where = " cluster " + c.ID + labels(c.Labels)
	}
	what := ""
	switch r.Action {
	case ActionSubmit:
		what = "submit " + r.Operation + " to" + where
	case ActionApprove:
		gate := "a gate"
		if r.Phase != "" {
			gate = "the gate of phase " + r.Phase
		}
		what = "approve " + gate + " of workflow " + r.Workflow + " on" + where
	case ActionInventory:
		what = "write the inventory record of" + where
	case ActionPolicy:
		what = "write deployment policies"
	default:
		what = r.Action + " workflow " + r.Workflow + " on" + where
	}
	why := "no rule of any role allows it"
	if by != nil {
		plural := "role "
		if len(others) > 1 {
			plural = "roles "
		}
		why = fmt.Sprintf("rule %q allows only %s%s", by.Name, plural, strings.Join(others, ", "))
	}
	return fmt.Errorf("%w: %s may not %s: %s", ErrDenied, who, what, why)
}

func labels(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return " (" + strings.Join(keys, ",") + ")"
}

// Gate is what approving a gate of a workflow on clusters takes: the
// distinct approvals needed, whether its requester may approve, and the
// rules that say so (for the messages). It is the strictest of the rules
// of every role that allow approve on one of the clusters: they bind
// every approver, whatever their own rules.
type Gate struct {
	Approvals int
	Separate  bool
	Rules     []string
}

// GateOf returns what a gate of a workflow on clusters needs.
func (p *Policy) GateOf(clusters []Cluster, operation, phase string) Gate {
	g := Gate{Approvals: 1}
	r := Request{Action: ActionApprove, Operation: operation, Phase: phase}
	for _, x := range p.all {
		if x.Approvals <= 1 && !x.SeparateApprover {
			continue
		}
		for i := range clusters {
			if x.allows(r, &clusters[i]) {
				g.Approvals = max(g.Approvals, x.Approvals)
				g.Separate = g.Separate || x.SeparateApprover
				if !slices.Contains(g.Rules, x.Name) {
					g.Rules = append(g.Rules, x.Name)
				}
				break
			}
		}
	}
	return g
}
