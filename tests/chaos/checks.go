//go:build unix

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
	"github.com/flotilla-fleet/flotilla/pkg/topics"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// Check is the result of one check of the history.
type Check struct {
	Name string
	// Violations lists what breaks the property (the first maxListed;
	// Count has them all). No violation: the check passed.
	Violations []string
	Count      int
	// Notes are figures and things worth knowing that break nothing.
	Notes []string
}

// Passed reports whether the check found nothing wrong.
func (c Check) Passed() bool { return c.Count == 0 }

const maxListed = 25

func (c *Check) violation(format string, args ...any) {
	c.Count++
	if len(c.Violations) < maxListed {
		c.Violations = append(c.Violations, fmt.Sprintf(format, args...))
	}
}

func (c *Check) note(format string, args ...any) {
	c.Notes = append(c.Notes, fmt.Sprintf(format, args...))
}

// target is a (rollout, cluster) pair.
type target struct{ workflow, cluster string }

// cmdInfo says which target and attempt a command is.
type cmdInfo struct {
	target
	rollout int // index in the run
	attempt int
}

// facts indexes the history for the checks.
type facts struct {
	r        *runner
	h        *history
	rollouts []RolloutResult
	cmds     map[string]cmdInfo
	final    map[target]records.Target       // the last row of each target
	headers  map[string]records.Workflow     // the last header row of each workflow
	byClust  map[string][]simfleet.ApplyCall // calls by cluster, in log order
	original map[string]string               // cluster → version before the run
}

func (r *runner) facts(h *history) *facts {
	f := &facts{r: r, h: h, cmds: map[string]cmdInfo{}, final: map[target]records.Target{}, headers: map[string]records.Workflow{},
		byClust: map[string][]simfleet.ApplyCall{}, original: map[string]string{}}
	r.mu.Lock()
	f.rollouts = slices.Clone(r.report.Rollouts)
	r.mu.Unlock()
	for i, ro := range f.rollouts {
		for _, c := range h.clusters {
			for a := 1; a <= r.o.Retries+1; a++ {
				f.cmds[decide.CommandID(ro.ID, c.ID, a)] = cmdInfo{target{ro.ID, c.ID}, i, a}
			}
		}
	}
	for _, row := range h.rows {
		if t := row.rec.Target; t != nil {
			f.final[target{t.WorkflowID, t.ClusterID}] = *t
		}
		if w := row.rec.Workflow; w != nil {
			f.headers[w.ID] = *w
		}
	}
	for _, c := range h.calls {
		f.byClust[c.Begin.Cluster] = append(f.byClust[c.Begin.Cluster], c)
	}
	for _, c := range h.clusters {
		f.original[c.ID] = c.Version
	}
	return f
}

// check runs every check of the history and records them in the report.
func (r *runner) check(ctx context.Context, h *history) {
	f := r.facts(h)
	r.report.Calls = callFigures(h.calls)
	checks := []Check{
		f.exactlyOnce(),
		f.noOverlap(),
		f.noSuperseded(),
		f.finalVersions(),
		f.asUndisturbed(),
		f.notifications(),
		f.sinkDeliveries(),
		f.audit(ctx),
		f.auditChain(ctx),
		f.fencing(),
		f.liveness(),
	}
	if h.callErr != nil {
		checks[0].note("call log: %v", h.callErr)
	}
	r.report.Checks = checks
}

// exactlyOnce: every target's operation took effect exactly once per
// rollout: one "changed" end among the Apply calls of its commands if
// the rollout reports it succeeded (and it is its last attempt's), none
// if it failed.
func (f *facts) exactlyOnce() Check {
	c := Check{Name: "each cluster changed exactly once per rollout (call log)"}
	changed := map[target][]simfleet.ApplyCall{}
	unended := map[target]int{}
	for _, call := range f.h.calls {
		info, ok := f.cmds[call.Begin.Command]
		if !ok {
			continue
		}
		switch {
		case !call.Ended:
			unended[info.target]++
		case call.End.Outcome == simfleet.OutcomeChanged:
			changed[info.target] = append(changed[info.target], call)
		}
	}
	doubles, checked := 0, 0
	for _, ro := range f.rollouts {
		for _, cl := range f.h.clusters {
			tg := target{ro.ID, cl.ID}
			t, ok := f.final[tg]
			if !ok {
				continue // not submitted, or not planned yet
			}
			want := 0
			switch t.State {
			case records.TargetSucceeded:
				want = 1
			case records.TargetFailed, records.TargetSkipped, records.TargetPending:
			default:
				// Still running (a stalled rollout): at most once.
				if n := len(changed[tg]); n > 1 {
					c.violation("%s, rollout %s (target %s): changed %d times: %s", cl.ID, ro.Name, t.State, n, describeCalls(f.r, changed[tg]))
				}
				continue
			}
			checked++
			got := changed[tg]
			if len(got) > want {
				doubles += len(got) - want
			}
			extra := ""
			if n := unended[tg]; n > 0 {
				extra = fmt.Sprintf(" (%d calls never ended)", n)
			}
			switch {
			case len(got) != want:
				c.violation("%s, rollout %s: changed %d times, want %d (target %s, attempt %d)%s: %s",
					cl.ID, ro.Name, len(got), want, t.State, t.Attempt, extra, describeCalls(f.r, got))
			case want == 1 && got[0].Begin.Command != t.CommandID:
				c.violation("%s, rollout %s: changed by command %s, but the rollout's last attempt is %s (attempt %d)",
					cl.ID, ro.Name, got[0].Begin.Command, t.CommandID, t.Attempt)
			}
		}
	}
	c.note("%d targets checked; %d double applies", checked, doubles)
	f.r.report.DoubleApplies = doubles
	return c
}

func describeCalls(r *runner, calls []simfleet.ApplyCall) string {
	var parts []string
	for _, c := range calls {
		parts = append(parts, describeCall(r, c))
	}
	return strings.Join(parts, "; ")
}

// interval is when a call was inside Apply: until its end, or until its
// process died (or the run ended).
func (f *facts) interval(c simfleet.ApplyCall) (time.Time, time.Time) {
	if c.Ended {
		return c.Begin.Time, c.End.Time
	}
	if d := f.r.deathOf(c.Begin.PID); !d.IsZero() {
		return c.Begin.Time, d
	}
	return c.Begin.Time, f.r.report.Ended
}

// noOverlap: no cluster ever had two Apply calls at once that both
// changed it (or one changed it while the other never ended: it may have
// too). Other overlaps (a zombie's call, frozen, while the new owner acts)
// are counted in the notes.
func (f *facts) noOverlap() Check {
	c := Check{Name: "no two Apply calls changing a cluster at once (call log)"}
	pairs := map[string]int{}
	for _, id := range slices.Sorted(maps.Keys(f.byClust)) {
		calls := f.byClust[id]
		for i, a := range calls {
			_, aEnd := f.interval(a)
			for _, b := range calls[i+1:] {
				bBegin, _ := f.interval(b)
				if !bBegin.Before(aEnd) {
					continue
				}
				oa, ob := outcome(a), outcome(b)
				changes := func(o string) bool { return o == simfleet.OutcomeChanged }
				if (changes(oa) && (changes(ob) || ob == "unended")) || (changes(ob) && oa == "unended") {
					c.violation("%s: %s overlaps %s", id, describeCall(f.r, a), describeCall(f.r, b))
					continue
				}
				pair := []string{oa, ob}
				slices.Sort(pair)
				pairs[strings.Join(pair, "+")]++
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(pairs)) {
		c.note("overlapping calls that did not both change the cluster: %d × %s", pairs[k], k)
	}
	return c
}

func outcome(c simfleet.ApplyCall) string {
	if !c.Ended {
		return "unended"
	}
	return c.End.Outcome
}

// noSuperseded: no Apply call of an attempt began after a later attempt
// at the same cluster had begun (a later attempt of the same rollout, or
// any attempt of a later rollout). A call the cluster refused at once on
// its fencing token is noted, not counted: it did not run.
func (f *facts) noSuperseded() Check {
	c := Check{Name: "no superseded attempt ran after a later one (call log)"}
	refused := 0
	for _, id := range slices.Sorted(maps.Keys(f.byClust)) {
		var latest *simfleet.ApplyCall
		var latestInfo cmdInfo
		for _, call := range f.byClust[id] {
			info, ok := f.cmds[call.Begin.Command]
			if !ok {
				continue
			}
			if latest != nil && (info.rollout < latestInfo.rollout || info.rollout == latestInfo.rollout && info.attempt < latestInfo.attempt) {
				if outcome(call) == simfleet.OutcomeFenced {
					refused++
					continue
				}
				c.violation("%s: %s (rollout %d) began after %s (rollout %d)", id, describeCall(f.r, call), info.rollout+1,
					describeCall(f.r, *latest), latestInfo.rollout+1)
				continue
			}
			l := call
			latest, latestInfo = &l, info
		}
	}
	if refused > 0 {
		c.note("%d calls of superseded attempts were made and refused by the cluster (fencing token or lease)", refused)
	}
	return c
}

// finalVersions: every cluster ends on the version of the last rollout
// that reports it succeeded (its own version if none did), and every
// target a rollout reports succeeded reports that rollout's version.
func (f *facts) finalVersions() Check {
	c := Check{Name: "every cluster ends on its last successful rollout's version (sim state)"}
	for _, cl := range f.h.clusters {
		want := f.original[cl.ID]
		for _, ro := range f.rollouts {
			t, ok := f.final[target{ro.ID, cl.ID}]
			if !ok {
				continue
			}
			if t.State == records.TargetSucceeded {
				want = ro.Version
				if t.Version != ro.Version {
					c.violation("%s: rollout %s reports it succeeded with version %q, not %s", cl.ID, ro.Name, t.Version, ro.Version)
				}
			}
		}
		st, ok := f.h.sims[cl.ID]
		got := cl.Version
		if ok {
			got = st.Version
		}
		if got != want {
			c.violation("%s runs %s, want %s", cl.ID, got, want)
		}
	}
	return c
}

// asUndisturbed: every rollout ends as an undisturbed run of the seed
// would: the sim fails a command by its ID alone, so each target's fate is
// known in advance: it succeeds at its first attempt the sim does not
// fail, or fails after Retries+1 attempts.
func (f *facts) asUndisturbed() Check {
	c := Check{Name: "each rollout ends as an undisturbed run of the seed would"}
	for _, ro := range f.rollouts {
		if ro.Stalled || ro.Finished.IsZero() {
			c.violation("rollout %s did not finish (%s %s)", ro.Name, ro.State, ro.Reason)
			continue
		}
		failed := 0
		for _, cl := range f.h.clusters {
			wantState, wantAttempt := records.TargetFailed, f.r.o.Retries+1
			for a := 1; a <= f.r.o.Retries+1; a++ {
				if !simfleet.WouldFail(f.r.o.FailureRate, decide.CommandID(ro.ID, cl.ID, a)) {
					wantState, wantAttempt = records.TargetSucceeded, a
					break
				}
			}
			if wantState == records.TargetFailed {
				failed++
			}
			t, ok := f.final[target{ro.ID, cl.ID}]
			switch {
			case !ok:
				c.violation("rollout %s: %s is not a target", ro.Name, cl.ID)
			case t.State != wantState || t.Attempt != wantAttempt:
				c.violation("rollout %s: %s %s after %d attempts, want %s after %d (%s)", ro.Name, cl.ID, t.State, t.Attempt, wantState, wantAttempt, t.Reason)
			}
		}
		want := records.WorkflowSucceeded
		if failed > 0 {
			want = records.WorkflowFailed
		}
		if ro.State != want {
			c.violation("rollout %s ended %s (%s), want %s (%d clusters fail every attempt)", ro.Name, ro.State, ro.Reason, want, failed)
		}
		c.note("rollout %s: %s, %d of %d clusters fail every attempt, as predicted", ro.Name, ro.State, failed, len(f.h.clusters))
	}
	return c
}

// notifications: none lost, none duplicated (by ID), and no operation
// announced twice under different IDs.
func (f *facts) notifications() Check {
	c := Check{Name: "no notification lost or duplicated"}
	expected := f.h.expectedNotifications()
	count := map[string]int{}
	byOp := map[string]int{}
	for _, n := range f.h.notes {
		count[n.n.Envelope.ID]++
		if strings.HasPrefix(n.n.Kind, "operation.") {
			byOp[n.n.Fields["command"]+" "+n.n.Kind]++
		}
	}
	for _, id := range slices.Sorted(maps.Keys(expected)) {
		if count[id] == 0 {
			c.violation("lost: %s", expected[id])
		}
	}
	dups, unexplained := 0, 0
	for _, n := range f.h.notes {
		id := n.n.Envelope.ID
		if count[id] > 1 {
			dups++
			if dups <= maxListed {
				c.violation("duplicated %d times: %s %s %s (notifications %s)", count[id], n.n.Kind, n.n.WorkflowID, n.n.ClusterID, n.at)
			} else {
				c.Count++
			}
			count[id] = -count[id] // listed once
		}
		if _, ok := expected[id]; !ok {
			unexplained++
		}
	}
	for _, k := range slices.Sorted(maps.Keys(byOp)) {
		if byOp[k] > 1 {
			c.violation("operation announced %d times under different IDs: command %s", byOp[k], k)
		}
	}
	c.note("%d notifications, %d expected from the source records", len(f.h.notes), len(expected))
	if unexplained > 0 {
		c.note("%d notifications have no source record in the log (set-aside or undecodable records, or sources compacted away)", unexplained)
	}
	return c
}

// auditEntry is a line of `flotilla audit -o json`.
type auditEntry struct {
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"`
	ID       string    `json:"id"`
	CausedBy string    `json:"causedBy"`
	Workflow string    `json:"workflow"`
	Cluster  string    `json:"cluster"`
	What     string    `json:"what"`
}

// audit: each rollout's audit timeline (flotilla audit --workflow ID -o
// json) holds its request, every command, every operation event and every
// decision of the log, and is ordered: in time, and no entry before its
// cause.
func (f *facts) audit(ctx context.Context) Check {
	c := Check{Name: "each rollout's audit timeline complete and ordered"}
	for _, ro := range f.rollouts {
		actx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		cmd := exec.CommandContext(actx, f.r.bin, "audit", "--brokers", strings.Join(f.r.cfg.Brokers, ","), "--namespace", f.r.ns,
			"--workflow", ro.ID, "-o", "json", "--timeout", "2m")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		cancel()
		if err != nil {
			c.violation("rollout %s: flotilla audit: %v: %s", ro.Name, err, strings.TrimSpace(stderr.String()))
			continue
		}
		var entries []auditEntry
		if err := json.Unmarshal(out, &entries); err != nil {
			c.violation("rollout %s: flotilla audit output: %v", ro.Name, err)
			continue
		}
		pos := map[string]int{}
		for i, e := range entries {
			if e.ID != "" {
				pos[e.ID] = i
			}
		}
		want := map[string]string{ro.ID: "the request"}
		for _, cmd := range f.h.commands {
			if cmd.WorkflowID == ro.ID {
				want[cmd.Envelope.ID] = "command " + cmd.ID + " to " + cmd.ClusterID
			}
		}
		for _, op := range f.h.ops {
			if op.ev.WorkflowID == ro.ID {
				want[op.ev.Envelope.ID] = fmt.Sprintf("operation %s on %s (%s)", op.ev.Status, op.ev.ClusterID, op.at)
			}
		}
		for _, row := range f.h.rows {
			if w := row.rec.Workflow; w != nil && w.ID == ro.ID && w.Event != "progress" {
				want[row.rec.Envelope.ID] = fmt.Sprintf("decision %s (%s)", w.Event, row.at)
			}
		}
		missing := 0
		for _, id := range slices.Sorted(maps.Keys(want)) {
			if _, ok := pos[id]; !ok {
				missing++
				c.violation("rollout %s: the audit lacks %s", ro.Name, want[id])
			}
		}
		misordered := 0
		for i, e := range entries {
			if j, ok := pos[e.CausedBy]; ok && j > i {
				misordered++
				c.violation("rollout %s: audit entry %d (%s %s) comes before its cause, entry %d", ro.Name, i, e.Kind, e.What, j)
			}
			if i > 0 && e.Time.Before(entries[i-1].Time) {
				misordered++
				c.violation("rollout %s: audit entry %d (%s at %s) is earlier than the one before it (%s)", ro.Name, i, e.What, e.Time.Format(time.RFC3339Nano), entries[i-1].Time.Format(time.RFC3339Nano))
			}
		}
		c.note("rollout %s: %d audit entries, %d expected found, %d missing, %d out of order", ro.Name, len(entries), len(want)-missing, missing, misordered)
	}
	return c
}

// auditChain: flotilla audit verify finds nothing wrong with the hash
// chains and checkpoints the planners and executors wrote through the
// kills, zombies and hand-offs: a zombie's writes never became visible,
// so they never forked a chain, and every copy that took a partition
// over went on from the chain heads in the log.
func (f *facts) auditChain(ctx context.Context) Check {
	c := Check{Name: "the audit trail's hash chains verify (flotilla audit verify)"}
	actx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(actx, f.r.bin, "audit", "verify", "--brokers", strings.Join(f.r.cfg.Brokers, ","), "--namespace", f.r.ns, "--timeout", "2m")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil {
		for _, l := range lines {
			c.violation("%s", l)
		}
		c.violation("flotilla audit verify: %v: %s", err, strings.TrimSpace(stderr.String()))
		return c
	}
	c.note("%s", lines[len(lines)-1])
	return c
}

// fencing: nothing a replaced executor (or planner) wrote became visible:
//   - per target, fencing tokens never decrease in log order;
//   - per partition of operations, a producer's epochs never decrease,
//     and each epoch's events name one executor;
//   - no operation event names an executor other than the holder of its
//     partition's lease at the event's time;
//   - each command's started and outcome events are recorded once;
//   - per workflow, the planner's rows never repeat (row IDs, from the
//     workflow's sequence number, are unique, and header sequence numbers
//     grow), and no command is written by two planners.
func (f *facts) fencing() Check {
	c := Check{Name: "nothing a replaced (zombie) writer wrote became visible"}
	lastToken := map[string]opRec{}
	type pe struct {
		partition int32
		producer  int64
	}
	lastEpoch := map[pe]int16{}
	epochOwner := map[string]string{}
	once := map[string]opRec{}
	for _, op := range f.h.ops {
		key := topics.TargetKey(op.ev.WorkflowID, op.ev.ClusterID)
		if prev, ok := lastToken[key]; ok && op.ev.FencingToken < prev.ev.FencingToken {
			c.violation("%s: token %d (%s %s by %s, %s) after token %d (%s by %s, %s)", key, op.ev.FencingToken, op.ev.Status,
				shortID(op.ev.CommandID), op.ev.Executor, op.at, prev.ev.FencingToken, prev.ev.Status, prev.ev.Executor, prev.at)
		}
		lastToken[key] = op
		k := pe{op.partition, op.producerID}
		if e, ok := lastEpoch[k]; ok && op.epoch < e {
			c.violation("operations %s: producer %d epoch %d after epoch %d (%s by %s)", op.at, op.producerID, op.epoch, e, op.ev.Status, op.ev.Executor)
		}
		lastEpoch[k] = max(lastEpoch[k], op.epoch)
		ek := fmt.Sprintf("%d/%d/%d", op.partition, op.producerID, op.epoch)
		if o, ok := epochOwner[ek]; ok && o != op.ev.Executor {
			c.violation("operations partition %d: producer %d epoch %d wrote events of %s and %s", op.partition, op.producerID, op.epoch, o, op.ev.Executor)
		}
		epochOwner[ek] = op.ev.Executor
		ok := op.ev.CommandID + " " + string(op.ev.Status)
		if prev, dup := once[ok]; dup {
			c.violation("%s %s recorded twice: by %s (%s, token %d) and by %s (%s, token %d)", op.ev.Status, op.ev.CommandID,
				prev.ev.Executor, prev.at, prev.ev.FencingToken, op.ev.Executor, op.at, op.ev.FencingToken)
		}
		once[ok] = op
	}
	// The lease holder of each partition of commands, in log order.
	leases := map[int32][]records.LeaseRecord{}
	for _, l := range f.h.leases {
		leases[l.lease.Partition] = append(leases[l.lease.Partition], l.lease)
	}
	handoffs := 0
	for p, ls := range leases {
		for i := 1; i < len(ls); i++ {
			if ls[i].Holder != ls[i-1].Holder {
				handoffs++
			}
		}
		_ = p
	}
	late := 0
	for _, op := range f.h.ops {
		ls := leases[op.partition]
		t := op.ev.Envelope.Time
		i, _ := slices.BinarySearchFunc(ls, t, func(l records.LeaseRecord, t time.Time) int { return l.RenewedAt.Compare(t) })
		if i == 0 {
			continue // before any lease
		}
		if holder := ls[i-1].Holder; holder != op.ev.Executor {
			late++
			c.violation("operations %s: %s of %s on %s by %s at %s, when %s held the lease of partition %d (since %s)", op.at, op.ev.Status,
				shortID(op.ev.CommandID), op.ev.ClusterID, op.ev.Executor, t.Format("15:04:05.000"), holder, op.partition, ls[i-1].RenewedAt.Format("15:04:05.000"))
		}
	}
	c.note("%d operation events, %d lease records, %d lease hand-offs between executors", len(f.h.ops), len(f.h.leases), handoffs)
	// The planner's rows.
	seen := map[string]rowRec{}
	lastSeq := map[string]int64{}
	for _, row := range f.h.rows {
		id := row.rec.Envelope.ID
		if prev, dup := seen[id]; dup {
			c.violation("workflow row %s written twice: %s (%s) and %s (%s)", id, describeRow(prev.rec), prev.writer(), describeRow(row.rec), row.writer())
		}
		seen[id] = row
		if w := row.rec.Workflow; w != nil {
			if s, ok := lastSeq[w.ID]; ok && w.Seq <= s {
				c.violation("workflow %s: header row %d (%s, %s) after row %d", w.ID, w.Seq, w.Event, row.at, s)
			}
			lastSeq[w.ID] = max(lastSeq[w.ID], w.Seq)
		}
	}
	// The planner's commands: one decision, one writer. A command
	// written by two producers was decided by two planners.
	wrote := map[string]cmdRec{}
	for _, cr := range f.h.cmdRecs {
		if prev, ok := wrote[cr.c.ID]; ok && prev.producerID != cr.producerID {
			c.violation("command %s (%s attempt %d) written by two planners: %s and %s", cr.c.ID, cr.c.ClusterID, cr.c.Attempt, prev.writer(), cr.writer())
			continue
		}
		wrote[cr.c.ID] = cr
	}
	for _, z := range f.r.report.Zombies {
		var after []string
		for _, call := range f.h.calls {
			if call.Begin.PID == z.PID && (!call.Ended || call.End.Time.After(z.Resumed)) {
				after = append(after, describeCall(f.r, call))
			}
		}
		// What it wrote after it was resumed, until it exited, under its
		// name (its next incarnation starts a second after it exited):
		// legitimate only if it held the partition's lease again, which
		// the lease check above checks.
		visible := 0
		for _, op := range f.h.ops {
			if t := op.ev.Envelope.Time; op.ev.Executor == z.Instance && t.After(z.Resumed) && !t.After(z.Until) {
				visible++
			}
		}
		c.note("zombie %s (pid %d, frozen %s): inside %d Apply calls when frozen; calls ending after it resumed: %s; exited by itself: %v %s; operation events it wrote after it resumed: %d",
			z.Instance, z.PID, z.Resumed.Sub(z.Stopped).Round(time.Second), len(z.OpenCalls), orNone(after), z.Exited, z.ExitReason, visible)
	}
	return c
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, "; ")
}

// liveness: every rollout finished within Options.RolloutTimeout; the
// longest time without any operation event is noted.
func (f *facts) liveness() Check {
	c := Check{Name: "every rollout finished (no stall)"}
	for _, ro := range f.rollouts {
		if ro.Stalled {
			c.violation("rollout %s not finished after %s: %s %s, targets %v", ro.Name, f.r.o.RolloutTimeout, ro.State, ro.Reason, ro.Targets)
		}
	}
	var times []time.Time
	for _, op := range f.h.ops {
		times = append(times, op.ev.Envelope.Time)
	}
	slices.SortFunc(times, time.Time.Compare)
	var gap time.Duration
	var gapAt time.Time
	for i := 1; i < len(times); i++ {
		if d := times[i].Sub(times[i-1]); d > gap {
			gap, gapAt = d, times[i-1]
		}
	}
	c.note("longest time without an operation event: %s (from %s)", gap.Round(time.Millisecond), gapAt.Format("15:04:05"))
	f.r.report.LongestPause = gap
	return c
}

// CallFigures counts the Apply calls of the call log by outcome.
type CallFigures struct {
	Total    int
	Outcomes map[string]int
}

func callFigures(calls []simfleet.ApplyCall) CallFigures {
	out := CallFigures{Total: len(calls), Outcomes: map[string]int{}}
	for _, c := range calls {
		out.Outcomes[outcome(c)]++
	}
	return out
}
