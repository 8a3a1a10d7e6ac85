// Package acl computes the least-privilege Kafka ACLs of a Flotilla
// namespace and applies them: each service's principal reads and writes
// only its own topics, consumer groups and transactional IDs, and users
// produce only requests (and inventory and policies when they hold that
// role) and read what the CLI reads. The plan is data (a list of
// bindings), so that it can be printed, reviewed, diffed against what a
// broker holds, and given to other tools.
package acl

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flotilla-fleet/flotilla/pkg/topics"
)

// Principals are who the plan grants rights to, each "User:<name>".
type Principals struct {
	Planner, Executor, Monitor, Notifier string
	// Operators submit and control rollouts and read everything the CLI
	// reads.
	Operators []string
	// FleetAdmins are operators who also write the inventory and the
	// deployment policies.
	FleetAdmins []string
	// TrustAdmins are operators who also write the trust store (its
	// records count only when signed by an admin's key: the ACL keeps
	// everyone else from even writing them).
	TrustAdmins []string
}

// DefaultPrincipals are the service principals Flotilla suggests.
func DefaultPrincipals() Principals {
	return Principals{
		Planner:  "User:flotilla-planner",
		Executor: "User:flotilla-executor",
		Monitor:  "User:flotilla-monitor",
		Notifier: "User:flotilla-notifier",
	}
}

// Principal returns "User:name" for a bare name, and a name that already
// has a type ("User:alice") as it is.
func Principal(name string) string {
	if strings.Contains(name, ":") {
		return name
	}
	return "User:" + name
}

// Binding is one ACL: principal may do operation on a resource.
type Binding struct {
	Principal string
	Resource  kmsg.ACLResourceType // topic, group, transactional ID, cluster
	Name      string
	Pattern   kmsg.ACLResourcePatternType // literal or prefixed
	Operation kmsg.ACLOperation
	// Why says what the right is for, for the plan's reader.
	Why string
}

// String is the binding as `flotilla acl plan` prints it.
func (b Binding) String() string {
	return fmt.Sprintf("%s ALLOW %s on %s %s %q", b.Principal, b.Operation, strings.ToLower(b.Pattern.String()), ResourceName(b.Resource), b.Name)
}

// ResourceName is a resource type as Flotilla prints it: topic, group,
// transactional-id, cluster.
func ResourceName(r kmsg.ACLResourceType) string {
	switch r {
	case kmsg.ACLResourceTypeTopic:
		return "topic"
	case kmsg.ACLResourceTypeGroup:
		return "group"
	case kmsg.ACLResourceTypeTransactionalId:
		return "transactional-id"
	case kmsg.ACLResourceTypeCluster:
		return "cluster"
	}
	return strings.ToLower(r.String())
}

// Plan returns the bindings of a namespace, sorted.
func Plan(n topics.Names, p Principals) ([]Binding, error) {
	for role, who := range map[string]string{"planner": p.Planner, "executor": p.Executor, "monitor": p.Monitor, "notifier": p.Notifier} {
		if who == "" {
			return nil, fmt.Errorf("no principal for the %s", role)
		}
	}
	var out []Binding
	add := func(who string, res kmsg.ACLResourceType, pattern kmsg.ACLResourcePatternType, why string, op kmsg.ACLOperation, names ...string) {
		for _, name := range names {
			out = append(out, Binding{Principal: who, Resource: res, Name: name, Pattern: pattern, Operation: op, Why: why})
		}
	}
	lit, pre := kmsg.ACLResourcePatternTypeLiteral, kmsg.ACLResourcePatternTypePrefixed
	topic, group, txn := kmsg.ACLResourceTypeTopic, kmsg.ACLResourceTypeGroup, kmsg.ACLResourceTypeTransactionalId
	read, write, describe := kmsg.ACLOperationRead, kmsg.ACLOperationWrite, kmsg.ACLOperationDescribe
	ns := n.Namespace + "."

	service := func(who, name string, reads, writes []string, transactional bool, groups ...string) {
		add(who, topic, pre, "find the namespace's topics and check their shape at start", describe, ns)
		add(who, topic, pre, "find the namespace's topics and check their shape at start", kmsg.ACLOperationDescribeConfigs, ns)
		add(who, group, lit, "record the topics' IDs in their register (a group no client joins)", read, n.Group("topics"))
		add(who, topic, lit, "read what the "+name+" acts on", read, reads...)
		add(who, topic, lit, "write what the "+name+" owns", write, writes...)
		for _, g := range groups {
			pattern := lit
			if strings.HasSuffix(g, ".") {
				pattern = pre
			}
			add(who, group, pattern, "its consumer group", read, g)
		}
		if transactional {
			add(who, txn, pre, "its transactional producers", write, n.Group(name)+"-")
			add(who, txn, pre, "its transactional producers", describe, n.Group(name)+"-")
		}
	}
	service(p.Planner, "planner",
		[]string{n.Requests, n.Inventory, n.Policies, n.Trust, n.Operations, n.Health, n.Workflows, n.Commands, n.Checkpoints},
		[]string{n.Workflows, n.Commands, n.History, n.Checkpoints, n.DeadLetters}, true, n.Group("planner"))
	service(p.Executor, "executor",
		[]string{n.Commands, n.Operations, n.Claims, n.Leases, n.Checkpoints},
		[]string{n.Operations, n.Claims, n.Leases, n.Checkpoints, n.DeadLetters}, true, n.Group("executor"))
	service(p.Monitor, "monitor",
		[]string{n.Inventory, n.Trust, n.Health, n.Operations, n.History},
		[]string{n.Health, n.DeadLetters}, false, n.Group("monitor"))
	service(p.Notifier, "notifier",
		[]string{n.Workflows, n.Operations, n.Health, n.DeadLetters, n.Notifications, n.Inventory, n.Trust, n.Requests, n.History},
		[]string{n.Notifications}, true, n.Group("notifier"), n.Group("notifier.sink."))

	// What the CLI reads: every topic but the executor's internals.
	cliReads := []string{n.Requests, n.Workflows, n.Commands, n.Operations, n.Inventory, n.Health, n.History, n.Policies, n.Trust, n.Notifications, n.DeadLetters, n.Checkpoints}
	user := func(who string, writes ...string) {
		add(who, topic, pre, "list the namespace's topics", describe, ns)
		add(who, topic, lit, "what the CLI reads (status, audit, watch, history)", read, cliReads...)
		add(who, topic, lit, "what the user may write", write, writes...)
	}
	for _, who := range p.Operators {
		user(who, n.Requests)
	}
	for _, who := range p.FleetAdmins {
		user(who, n.Requests, n.Inventory, n.Policies)
	}
	for _, who := range p.TrustAdmins {
		user(who, n.Requests, n.Trust)
	}
	slices.SortFunc(out, compare)
	return slices.CompactFunc(out, func(a, b Binding) bool { return compare(a, b) == 0 }), nil
}

func compare(a, b Binding) int {
	return cmp.Or(cmp.Compare(a.Principal, b.Principal), cmp.Compare(a.Resource, b.Resource), cmp.Compare(a.Name, b.Name),
		cmp.Compare(a.Pattern, b.Pattern), cmp.Compare(a.Operation, b.Operation))
}

// Result says what Apply did.
type Result struct {
	Created, Present []Binding
	// Removed are the bindings of the plan's principals that the plan does
	// not hold, deleted with prune.
	Removed []Binding
}

// Apply creates the plan's bindings that the broker lacks and, with prune,
// deletes the other ALLOW bindings of the plan's principals, so that what
// the broker holds for them is the plan. adm must be an ACL administrator
// (ALTER on the cluster).
func Apply(ctx context.Context, adm *kadm.Client, plan []Binding, prune bool) (Result, error) {
	held, err := Describe(ctx, adm, principalsOf(plan))
	if err != nil {
		return Result{}, err
	}
	var res Result
	for _, b := range plan {
		if slices.ContainsFunc(held, func(h Binding) bool { return compare(h, b) == 0 }) {
			res.Present = append(res.Present, b)
			continue
		}
		results, err := adm.CreateACLs(ctx, builder(b))
		if err == nil {
			for _, r := range results {
				err = errors.Join(err, r.Err)
			}
		}
		if err != nil {
			return res, fmt.Errorf("create ACL %s: %w", b, err)
		}
		res.Created = append(res.Created, b)
	}
	if !prune {
		return res, nil
	}
	for _, h := range held {
		if slices.ContainsFunc(plan, func(b Binding) bool { return compare(h, b) == 0 }) {
			continue
		}
		results, err := adm.DeleteACLs(ctx, builder(h))
		if err == nil {
			for _, r := range results {
				err = errors.Join(err, r.Err)
			}
		}
		if err != nil {
			return res, fmt.Errorf("delete ACL %s: %w", h, err)
		}
		res.Removed = append(res.Removed, h)
	}
	return res, nil
}

// Describe returns the ALLOW bindings the broker holds for principals.
func Describe(ctx context.Context, adm *kadm.Client, principals []string) ([]Binding, error) {
	b := kadm.NewACLs().Allow(principals...).AllowHosts().AnyResource().
		ResourcePatternType(kadm.ACLPatternAny).Operations(kadm.OpAny)
	results, err := adm.DescribeACLs(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("describe ACLs: %w", err)
	}
	var out []Binding
	for _, r := range results {
		if r.Err != nil {
			return nil, fmt.Errorf("describe ACLs: %w", r.Err)
		}
		for _, d := range r.Described {
			if d.Permission != kmsg.ACLPermissionTypeAllow {
				continue
			}
			out = append(out, Binding{Principal: d.Principal, Resource: d.Type, Name: d.Name, Pattern: d.Pattern, Operation: d.Operation})
		}
	}
	slices.SortFunc(out, compare)
	return slices.CompactFunc(out, func(a, b Binding) bool { return compare(a, b) == 0 }), nil
}

func principalsOf(plan []Binding) []string {
	var out []string
	for _, b := range plan {
		if !slices.Contains(out, b.Principal) {
			out = append(out, b.Principal)
		}
	}
	return out
}

// builder is the kadm request of one binding.
func builder(b Binding) *kadm.ACLBuilder {
	out := kadm.NewACLs().Allow(b.Principal).AllowHosts("*").Operations(b.Operation).ResourcePatternType(b.Pattern)
	switch b.Resource {
	case kmsg.ACLResourceTypeTopic:
		out.Topics(b.Name)
	case kmsg.ACLResourceTypeGroup:
		out.Groups(b.Name)
	case kmsg.ACLResourceTypeTransactionalId:
		out.TransactionalIDs(b.Name)
	case kmsg.ACLResourceTypeCluster:
		out.Clusters()
	}
	return out
}

// CreateSCRAMUsers creates (or sets the password of) SCRAM users, for
// `flotilla dev --secure` and tests; a real installation manages its
// users with its own tooling. mechanism is SCRAM-SHA-256 or SCRAM-SHA-512.
func CreateSCRAMUsers(ctx context.Context, adm *kadm.Client, mechanism string, passwords map[string]string) error {
	m := kadm.ScramSha512
	if mechanism == "SCRAM-SHA-256" {
		m = kadm.ScramSha256
	}
	var upserts []kadm.UpsertSCRAM
	for _, user := range slices.Sorted(maps.Keys(passwords)) {
		upserts = append(upserts, kadm.UpsertSCRAM{User: user, Mechanism: m, Iterations: 4096, Password: passwords[user]})
	}
	res, err := adm.AlterUserSCRAMs(ctx, nil, upserts)
	if err != nil {
		return fmt.Errorf("create SCRAM users: %w", err)
	}
	for _, r := range res.Sorted() {
		if r.Err != nil {
			return fmt.Errorf("create SCRAM user %s: %w (%s)", r.User, r.Err, r.ErrMessage)
		}
	}
	return nil
}
