package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/auditchain"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// auditEntry is one line of the audit timeline.
type auditEntry struct {
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"` // request, decision, command, operation, health, inventory
	Principal string    `json:"principal"`
	ID        string    `json:"id"`
	CausedBy  string    `json:"causedBy,omitempty"`
	Workflow  string    `json:"workflow,omitempty"`
	Cluster   string    `json:"cluster,omitempty"`
	What      string    `json:"what"`
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
}

func auditCommand() *cobra.Command {
	var f clientFlags
	var workflow, cluster, since, until string
	var principals []string
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Replay the log as one timeline: who asked what, what was decided, what ran, health changes",
		Long: `audit reads Flotilla's topics from the start and prints one timeline, in time
order: requests and who made them, the planner's decisions and commands, the
executor's operations, the inventory's changes and the monitor's health changes (heartbeats left out).
Every entry carries the ID of the record that caused it. Compacted topics keep
the newest record of each key; the notifications topic keeps every change for
its retention time.

With --workflow, audit reads only the workflow's partition of the topics
keyed by workflow (requests, workflows, commands, operations) and the health
of its clusters; with --cluster, only the cluster's partition of inventory and
health, and of the topics keyed by workflow, where a cluster's history is
spread over every partition, it decodes only the records keyed
WORKFLOW/CLUSTER.

--principal keeps the entries written by one principal (repeat it for
several): a user's requests, or a service's records. --since and --until
keep the entries of a time range, each an RFC 3339 time
(2026-12-01T09:00:00Z) or a duration before now (2h, 30m).`,
		Args: cobra.NoArgs,
		RunE: f.runE(func(ctx context.Context, cfg backbone.Config, cmd *cobra.Command, _ []string) error {
			now := time.Now()
			from, err := parseWhen("--since", since, now)
			if err != nil {
				return err
			}
			to, err := parseWhen("--until", until, now)
			if err != nil {
				return err
			}
			if !from.IsZero() && !to.IsZero() && to.Before(from) {
				return fmt.Errorf("--until %s is before --since %s", to.Format(time.RFC3339), from.Format(time.RFC3339))
			}
			entries, err := readAudit(ctx, cfg, workflow, cluster)
			if err != nil {
				return err
			}
			if len(entries) == 0 && (workflow != "" || cluster != "") {
				return fmt.Errorf("the log has nothing about %s", describeFilter(workflow, cluster))
			}
			entries = filterWhoWhen(entries, principals, from, to)
			if f.Output == "json" {
				return printJSON(cmd.OutOrStdout(), entries)
			}
			printAudit(cmd.OutOrStdout(), entries)
			return nil
		}),
	}
	f.bind(cmd)
	cmd.AddCommand(auditVerifyCommand())
	cmd.Flags().StringVar(&workflow, "workflow", "", "only what concerns this workflow (with its clusters' health changes meanwhile)")
	cmd.Flags().StringVar(&cluster, "cluster", "", "only what concerns this cluster")
	cmd.Flags().StringArrayVar(&principals, "principal", nil, "only the entries written by this principal (repeatable)")
	cmd.Flags().StringVar(&since, "since", "", "only the entries at or after this time: RFC 3339, or a duration before now (2h)")
	cmd.Flags().StringVar(&until, "until", "", "only the entries before this time: RFC 3339, or a duration before now")
	return cmd
}

// parseWhen reads the value of a time flag: an RFC 3339 time, or a
// duration before now; "" is no bound (the zero time).
func parseWhen(flag, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%s %q: want an RFC 3339 time (2026-12-01T09:00:00Z) or a duration before now (2h)", flag, v)
}

// filterWhoWhen keeps the entries written by one of principals (all if
// none) at or after from and before to (either zero: no bound).
func filterWhoWhen(entries []auditEntry, principals []string, from, to time.Time) []auditEntry {
	if len(principals) == 0 && from.IsZero() && to.IsZero() {
		return entries
	}
	var out []auditEntry
	for _, e := range entries {
		if (len(principals) == 0 || slices.Contains(principals, e.Principal)) &&
			(from.IsZero() || !e.Time.Before(from)) && (to.IsZero() || e.Time.Before(to)) {
			out = append(out, e)
		}
	}
	return out
}

// readAudit replays the topics into entries sorted by time, those about
// workflow and/or cluster if given (see filterAudit), reading only what
// can hold them (see auditScope).
func readAudit(ctx context.Context, cfg backbone.Config, workflow, cluster string) ([]auditEntry, error) {
	names := cfg.Names()
	scope, parts, err := auditScope(ctx, cfg, workflow, cluster)
	if err != nil {
		return nil, err
	}
	var entries []auditEntry
	add := func(r *kgo.Record, env records.Envelope, kind, workflow, cluster, what string) {
		entries = append(entries, auditEntry{
			Time: env.Time, Kind: kind, Principal: env.Principal, ID: env.ID, CausedBy: env.CausationID,
			Workflow: workflow, Cluster: cluster, What: what, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
		})
	}
	undecodable := func(r *kgo.Record, kind string, err error) {
		entries = append(entries, auditEntry{Time: r.Timestamp, Kind: kind, Principal: "?", What: fmt.Sprintf("undecodable record (key %q): %v", r.Key, err),
			Topic: r.Topic, Partition: r.Partition, Offset: r.Offset})
	}
	// A request whose record the requests topic lost (a tombstone erased
	// it) is shown from the copy the planner keeps in the workflow's row.
	seenRequests := map[string]bool{}
	fromCopy := func(r *kgo.Record, workflow, what string) {
		c, ok := auditchain.RequestCopyOf(r)
		if !ok || seenRequests[c.Key] {
			return
		}
		seenRequests[c.Key] = true
		entries = append(entries, auditEntry{Time: c.Time, Kind: "request", Principal: c.Principal, ID: c.ID, Workflow: workflow,
			What: what + " (from the workflow's copy: the request's record is gone from " + names.Requests + ")", Topic: r.Topic, Partition: r.Partition, Offset: r.Offset})
	}
	readers := []struct {
		topic string
		read  func(r *kgo.Record)
	}{
		{names.Inventory, func(r *kgo.Record) {
			if r.Value == nil {
				entries = append(entries, auditEntry{Time: r.Timestamp, Kind: "inventory", Principal: "?", Cluster: string(r.Key),
					What: "cluster removed from the inventory", Topic: r.Topic, Partition: r.Partition, Offset: r.Offset})
				return
			}
			rec, err := records.DecodeClusterRecord(r.Value)
			if err != nil {
				undecodable(r, "inventory", err)
				return
			}
			c := rec.Cluster
			add(r, rec.Envelope, "inventory", "", c.ID, fmt.Sprintf("registered cluster %s: driver %s, version %s, labels %s", c.ID, c.Driver, c.Version, formatLabels(c.Labels)))
		}},
		{names.Policies, func(r *kgo.Record) {
			if r.Value == nil {
				entries = append(entries, auditEntry{Time: r.Timestamp, Kind: "policy", Principal: "?",
					What: fmt.Sprintf("deployment policy %s removed", r.Key), Topic: r.Topic, Partition: r.Partition, Offset: r.Offset})
				return
			}
			rec, err := records.DecodePolicyRecord(r.Value)
			if err != nil {
				undecodable(r, "policy", err)
				return
			}
			var phases []string
			for _, ph := range rec.Policy.Phases {
				phases = append(phases, ph.Name)
			}
			add(r, rec.Envelope, "policy", "", "", fmt.Sprintf("applied deployment policy %s: phases %s", rec.Policy.Name, strings.Join(phases, ", ")))
		}},
		{names.Requests, func(r *kgo.Record) {
			seenRequests[string(r.Key)] = true
			req, err := records.DecodeRequest(r.Value)
			if err != nil {
				undecodable(r, "request", err)
				entries[len(entries)-1].Workflow = string(r.Key)
				return
			}
			if c := req.Control; c != nil {
				what := fmt.Sprintf("asked to %s workflow %s", c.Action, c.WorkflowID)
				if c.Reason != "" {
					what += ": " + c.Reason
				}
				add(r, req.Envelope, "request", c.WorkflowID, "", what)
			}
			if req.Submit != nil {
				s := req.Submit.Spec
				add(r, req.Envelope, "request", req.Envelope.ID, "", fmt.Sprintf("asked for rollout %q: %s, selector %q, clusters %v, %d phases",
					s.Name, s.Operation, s.Selector, s.Clusters, len(s.Phases)))
			}
		}},
		{names.Workflows, func(r *kgo.Record) {
			rec, err := records.DecodeWorkflowRecord(r.Value)
			if err != nil {
				undecodable(r, "decision", err)
				return
			}
			switch {
			case rec.Spec != nil:
				s := rec.Spec.Spec
				fromCopy(r, rec.Spec.WorkflowID, fmt.Sprintf("asked for rollout %q: %s, selector %q, clusters %v, %d phases", s.Name, s.Operation, s.Selector, s.Clusters, len(s.Phases)))
			case rec.Workflow != nil:
				fromCopy(r, rec.Workflow.ID, "asked to act on workflow "+rec.Workflow.ID)
			}
			if w := rec.Workflow; w != nil && w.Event != "progress" {
				what := fmt.Sprintf("%s: workflow %s", w.Event, w.State)
				if w.Phase < len(w.Phases) && !w.State.Terminal() {
					what += fmt.Sprintf(", phase %q wave %d", w.Phases[w.Phase].Name, w.Wave+1)
				}
				if w.Reason != "" {
					what += ": " + w.Reason
				}
				add(r, rec.Envelope, "decision", w.ID, "", what)
			}
			if t := rec.Target; t != nil && t.Unhealthy {
				add(r, rec.Envelope, "decision", t.WorkflowID, t.ClusterID, "counted cluster as failed: "+t.Reason)
			}
		}},
		{names.Commands, func(r *kgo.Record) {
			c, err := records.DecodeCommand(r.Value)
			if err != nil {
				undecodable(r, "command", err)
				return
			}
			add(r, c.Envelope, "command", c.WorkflowID, c.ClusterID, fmt.Sprintf("sent command %s: %s (attempt %d)",
				c.ID, c.Operation, c.Attempt))
		}},
		{names.Operations, func(r *kgo.Record) {
			ev, err := records.DecodeOperationEvent(r.Value)
			if err != nil {
				undecodable(r, "operation", err)
				return
			}
			what := fmt.Sprintf("operation %s (command %s, attempt %d)", ev.Status, ev.CommandID, ev.Attempt)
			if ev.Status == records.OperationSucceeded && ev.Version != "" {
				what += fmt.Sprintf(": version %s → %s", ev.PreviousVersion, ev.Version)
			}
			if ev.Reason != "" {
				what += ": " + ev.Reason
			}
			add(r, ev.Envelope, "operation", ev.WorkflowID, ev.ClusterID, what)
		}},
		{names.Health, func(r *kgo.Record) {
			h, err := records.DecodeHealth(r.Value)
			if err != nil {
				undecodable(r, "health", err)
				return
			}
			if h.Heartbeat {
				return
			}
			what := fmt.Sprintf("health %s → %s", h.PreviousStatus, h.Status)
			if h.Status == h.PreviousStatus {
				what = fmt.Sprintf("health %s", h.Status)
			}
			if h.ObservedVersion != "" {
				what += ", runs " + h.ObservedVersion
			}
			if len(h.Reasons) > 0 {
				what += ": " + strings.Join(h.Reasons, "; ")
			}
			add(r, h.Envelope, "health", "", h.ClusterID, what)
		}},
	}
	for _, rd := range readers {
		if rd.topic == names.Health && workflow != "" {
			// Its clusters' health, meanwhile: they are known now.
			clusters, _, _ := workflowWindow(entries, workflow)
			if cluster != "" {
				clusters = map[string]bool{cluster: clusters[cluster]}
			}
			scope[names.Health] = clustersRead(parts, names.Health, clusters)
		}
		read, ok := scope[rd.topic]
		if !ok || (read.partitions != nil && len(read.partitions) == 0) {
			continue
		}
		first := len(entries)
		err := logtable.ReadToEnd(ctx, cfg.Opts(), rd.topic, read.partitions, func(r *kgo.Record) {
			if r.Value == nil && rd.topic == names.Requests {
				// Never legitimate: it erases who asked for what (flotilla
				// audit verify reports it; the workflow keeps a copy).
				entries = append(entries, auditEntry{Time: r.Timestamp, Kind: "request", Principal: "?", Workflow: strings.SplitN(string(r.Key), "/", 2)[0],
					What: fmt.Sprintf("request %s erased by a tombstone", r.Key), Topic: r.Topic, Partition: r.Partition, Offset: r.Offset})
				return
			}
			if r.Value == nil && rd.topic != names.Inventory && rd.topic != names.Policies {
				return
			}
			if read.keep != nil && !read.keep(r.Key) {
				return
			}
			rd.read(r)
		})
		if err != nil {
			return nil, err
		}
		// Partitions are fetched interleaved as it happens: put them in
		// order, so that entries of one time keep an order of their own
		// (see sortCausally), whichever partitions were read.
		slices.SortStableFunc(entries[first:], func(a, b auditEntry) int {
			return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
		})
	}
	sortCausally(entries)
	return filterAudit(entries, workflow, cluster), nil
}

// auditRead is what audit reads of one topic: partitions (nil: every one),
// and of them the records whose key keep accepts (nil: every record).
type auditRead struct {
	partitions []int32
	keep       func(key []byte) bool
}

// auditScope returns what audit reads of each topic (a topic not in it is
// not read) to find every entry filterAudit keeps of workflow and
// cluster: without them, everything. A workflow's requests, rows, commands
// and operations are on its partition of each topic keyed by workflow
// (topics.Partitioner); its clusters' health is on theirs, known once the
// rest is read (readAudit). A cluster's inventory and health are on its
// partition of those topics, but its rows, commands and operations are on
// the partition of each workflow that targeted it: every partition is read
// and only the records keyed WORKFLOW/CLUSTER are decoded. Inventory and
// policies have nothing about a workflow, and requests nothing about a
// cluster.
func auditScope(ctx context.Context, cfg backbone.Config, workflow, cluster string) (map[string]auditRead, partitioning, error) {
	names := cfg.Names()
	all := []string{names.Inventory, names.Policies, names.Requests, names.Workflows, names.Commands, names.Operations, names.Health}
	scope := map[string]auditRead{}
	if workflow == "" && cluster == "" {
		for _, topic := range all {
			scope[topic] = auditRead{}
		}
		return scope, nil, nil
	}
	parts, err := loadPartitioning(ctx, cfg, all...)
	if err != nil {
		return nil, nil, err
	}
	byWorkflow := []string{names.Workflows, names.Commands, names.Operations}
	if workflow != "" {
		for _, topic := range append(byWorkflow, names.Requests) {
			scope[topic] = auditRead{partitions: parts.of(topic, workflow), keep: func(key []byte) bool { return workflowKey(key, workflow) }}
		}
		return scope, parts, nil // and the health of its clusters
	}
	for _, topic := range byWorkflow {
		scope[topic] = auditRead{keep: func(key []byte) bool { return clusterKey(key, cluster) }}
	}
	for _, topic := range []string{names.Inventory, names.Health} {
		scope[topic] = clustersRead(parts, topic, map[string]bool{cluster: true})
	}
	return scope, parts, nil
}

// clustersRead reads the records of the clusters marked true in a topic
// keyed by cluster ID.
func clustersRead(parts partitioning, topic string, clusters map[string]bool) auditRead {
	var ids []string
	for id, ok := range clusters {
		if ok {
			ids = append(ids, id)
		}
	}
	partitions := parts.of(topic, ids...)
	if partitions == nil {
		partitions = []int32{}
	}
	return auditRead{partitions: partitions, keep: func(key []byte) bool { return clusters[string(key)] }}
}

func describeFilter(workflow, cluster string) string {
	switch {
	case workflow == "":
		return "cluster " + cluster + " (see: flotilla cluster list)"
	case cluster == "":
		return "workflow " + workflow + " (see: flotilla rollout list)"
	}
	return "cluster " + cluster + " in workflow " + workflow
}

// sortCausally orders entries by time, but never an effect before its
// cause: clocks of different machines disagree, and the causation IDs do
// not. An entry is placed at the later of its own time and its cause's,
// and after its cause when the times are equal.
func sortCausally(entries []auditEntry) {
	byID := make(map[string]int, len(entries))
	for i, e := range entries {
		if e.ID != "" {
			byID[e.ID] = i
		}
	}
	type place struct {
		at    time.Time
		depth int
		done  bool
	}
	places := make([]place, len(entries))
	var locate func(i, hops int) place
	locate = func(i, hops int) place {
		if places[i].done {
			return places[i]
		}
		p := place{at: entries[i].Time, done: true}
		if c, ok := byID[entries[i].CausedBy]; ok && c != i && hops < 64 {
			cause := locate(c, hops+1)
			if cause.at.After(p.at) {
				p.at = cause.at
			}
			p.depth = cause.depth + 1
		}
		places[i] = p
		return p
	}
	order := make([]int, len(entries))
	for i := range entries {
		locate(i, 0)
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		pa, pb := places[order[a]], places[order[b]]
		if !pa.at.Equal(pb.at) {
			return pa.at.Before(pb.at)
		}
		return pa.depth < pb.depth
	})
	sorted := make([]auditEntry, len(entries))
	for i, j := range order {
		sorted[i] = entries[j]
	}
	copy(entries, sorted)
}

// filterAudit keeps the entries about a workflow and/or a cluster. For a
// workflow it keeps the health changes of its clusters while it ran.
func filterAudit(entries []auditEntry, workflow, cluster string) []auditEntry {
	if workflow == "" && cluster == "" {
		return entries
	}
	clusters, first, last := workflowWindow(entries, workflow)
	var out []auditEntry
	for _, e := range entries {
		keep := true
		if workflow != "" {
			inWindow := !e.Time.Before(first) && !e.Time.After(last)
			keep = e.Workflow == workflow || (e.Kind == "health" && clusters[e.Cluster] && inWindow)
		}
		if cluster != "" {
			keep = keep && e.Cluster == cluster
		}
		if keep {
			out = append(out, e)
		}
	}
	return out
}

// workflowWindow returns the clusters a workflow's entries name and the
// time of its first and last entries, requests aside: a request's own
// time is the client's, which may be anything, so the window opens with
// the planner's first decision.
func workflowWindow(entries []auditEntry, workflow string) (clusters map[string]bool, first, last time.Time) {
	clusters = map[string]bool{}
	for _, e := range entries {
		if workflow != "" && e.Workflow == workflow && e.Kind != "request" {
			if e.Cluster != "" {
				clusters[e.Cluster] = true
			}
			if first.IsZero() {
				first = e.Time
			}
			last = e.Time
		}
	}
	return clusters, first, last
}

func printAudit(out io.Writer, entries []auditEntry) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tWHO\tKIND\tWORKFLOW\tCLUSTER\tWHAT")
	for _, e := range entries {
		wf := e.Workflow
		if len(wf) > 8 {
			wf = wf[:8]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Principal, e.Kind, wf, e.Cluster, e.What)
	}
	tw.Flush()
	if len(entries) == 0 {
		fmt.Fprintln(os.Stderr, "no entries")
	}
}
