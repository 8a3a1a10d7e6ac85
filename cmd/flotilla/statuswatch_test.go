package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// syncBuffer is a buffer a command writes to while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runningWatch is `flotilla rollout status ID --watch` running in the
// background, writing to a buffer (not a terminal).
type runningWatch struct {
	out  *syncBuffer
	stop context.CancelFunc // as Ctrl-C does
	done chan struct{}
	err  error // once done is closed
}

// startWatch runs `rollout status id --watch` and args against a fleet
// until it returns by itself, or the test ends.
func startWatch(t *testing.T, f *fleettest.Fleet, id string, args ...string) *runningWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &runningWatch{out: &syncBuffer{}, stop: cancel, done: make(chan struct{})}
	cmd := rootCommand()
	cmd.SetOut(w.out)
	cmd.SetErr(w.out)
	cmd.SetArgs(append(append([]string{"rollout", "status", id, "--watch"}, args...),
		"--brokers", strings.Join(f.Backbone.Brokers, ","), "--namespace", f.Backbone.Namespace))
	go func() {
		defer close(w.done)
		w.err = cmd.ExecuteContext(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

func (w *runningWatch) ended() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// awaitEnd advances the fleet's fake clock by step until the watch has
// returned by itself.
func (w *runningWatch) awaitEnd(t *testing.T, f *fleettest.Fleet, step time.Duration, what string) {
	t.Helper()
	if !f.Eventually(step, 2*time.Minute, w.ended) {
		t.Fatalf("the watch did not return after %s; it printed:\n%s", what, w.out.String())
	}
}

// plainPhaseLine is a phase's plain line: time, name, counts.
var plainPhaseLine = regexp.MustCompile(`^\d\d:\d\d:\d\d  (\S+) +(\d+)/(\d+) succeeded`)

// TestStatusWatchFollowsARolloutToItsEnd watches a two-phase rollout,
// as plain lines and as JSON lines at once, while the fake clock runs it:
// both return when it ends, with exit code 0, and show each phase's
// count of succeeded clusters rising to all of them.
func TestStatusWatchFollowsARolloutToItsEnd(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 10})
	now = f.Clock.Now
	t.Cleanup(func() { now = time.Now })
	var ids []string
	for _, c := range f.Clusters {
		ids = append(ids, c.ID)
	}
	cloud := f.Clusters[0].Labels["cloud"]
	id := f.Submit(rollout.Spec{
		Name: "restart", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: ids,
		Phases: []rollout.Phase{
			{Name: "first", Selector: "cloud=" + cloud, Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}, Bake: time.Minute},
			{Name: "rest", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}, Bake: time.Minute},
		},
	})
	f.Await(id, 0, 30*time.Second, "the rollout accepted", func(w *decide.Workflow) bool { return w.State == records.WorkflowRunning })

	plain := startWatch(t, f, id)
	lines := startWatch(t, f, id, "-o", "json")
	// Both have read the log so far before time goes on.
	if !f.Eventually(0, 30*time.Second, func() bool { return plain.out.String() != "" && lines.out.String() != "" }) {
		t.Fatalf("the watches printed nothing: %q, %q", plain.out.String(), lines.out.String())
	}
	plain.awaitEnd(t, f, time.Second, "the rollout ended")
	lines.awaitEnd(t, f, time.Second, "the rollout ended")
	out := plain.out.String()
	t.Logf("the watch printed:\n%s", out)
	if plain.err != nil || exitCode(plain.err) != 0 {
		t.Fatalf("the watch of a rollout that succeeded returned %v (exit %d):\n%s", plain.err, exitCode(plain.err), out)
	}
	if strings.Contains(out, "\x1b") {
		t.Fatalf("plain lines hold escape codes:\n%q", out)
	}

	var last decide.Progress
	seen := 0
	for _, l := range strings.Split(strings.TrimSpace(lines.out.String()), "\n") {
		var p decide.Progress
		if err := json.Unmarshal([]byte(l), &p); err != nil {
			t.Fatalf("a JSON line: %v\n%s", err, l)
		}
		if p.ID != id || p.Succeeded < last.Succeeded {
			t.Fatalf("JSON line %d: %d succeeded after %d:\n%s", seen, p.Succeeded, last.Succeeded, lines.out.String())
		}
		last = p
		seen++
	}
	if lines.err != nil || last.State != records.WorkflowSucceeded || last.Succeeded != last.Targets || len(last.Phases) != 2 || seen < 3 {
		t.Fatalf("the JSON watch returned %v; its last of %d lines is %+v", lines.err, seen, last)
	}

	succeeded := map[string][]int{}
	for _, l := range strings.Split(out, "\n") {
		m := plainPhaseLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		total, _ := strconv.Atoi(m[3])
		counts := succeeded[m[1]]
		if len(counts) > 0 && n < counts[len(counts)-1] {
			t.Fatalf("phase %s went from %d to %d succeeded:\n%s", m[1], counts[len(counts)-1], n, out)
		}
		if total != last.Phases[map[string]int{"first": 0, "rest": 1}[m[1]]].Targets {
			t.Fatalf("phase %s has %d clusters in %q, want %+v", m[1], total, l, last.Phases)
		}
		succeeded[m[1]] = append(counts, n)
	}
	for _, ph := range last.Phases {
		counts := succeeded[ph.Name]
		if len(counts) < 3 || counts[0] != 0 || counts[len(counts)-1] != ph.Targets {
			t.Fatalf("phase %s: succeeded counts %v, want from 0 through its waves to all %d:\n%s", ph.Name, counts, ph.Targets, out)
		}
	}
	if !strings.Contains(out, `rollout "restart" succeeded; `+strconv.Itoa(last.Targets)+"/"+strconv.Itoa(last.Targets)+" succeeded\n") {
		t.Fatalf("no line says the rollout succeeded:\n%s", out)
	}
}

// TestStatusWatchExitCodes: a watch of a rollout that a bad version rolls
// back, and of one cancelled while it is watched, returns non-zero with
// the exit code of how it ended, and the state in the error.
func TestStatusWatchExitCodes(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 20, BadVersions: []string{"3.9.2"}})
	now = f.Clock.Now
	t.Cleanup(func() { now = time.Now })

	bad := f.Submit(rollout.Spec{
		Name: "bad", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.2"}, Selector: "kind=kafka",
		Phases: []rollout.Phase{
			{Name: "canary", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 3}, MaxInFlight: 1, Bake: 5 * time.Minute,
				FailureThreshold: rollout.Threshold{Count: 1, Action: rollout.ThresholdRollback}},
		},
		FailureThreshold: rollout.Threshold{Count: 5},
	})
	f.Await(bad, 0, 30*time.Second, "the rollout accepted", func(w *decide.Workflow) bool { return w.State != "" })
	w := startWatch(t, f, bad)
	w.awaitEnd(t, f, time.Second, "the rollback")
	out := w.out.String()
	t.Logf("the watch printed:\n%s", out)
	if exitCode(w.err) != exitRolledBack || !strings.Contains(w.err.Error(), "ended rolled-back (its rollback: "+records.RollbackID(bad)+")") {
		t.Fatalf("the watch of a rolled-back rollout returned %v (exit %d):\n%s", w.err, exitCode(w.err), out)
	}
	if !strings.Contains(out, "rolling-back") || !strings.Contains(out, "rollback "+records.RollbackID(bad)) {
		t.Fatalf("the watch did not say the rollout was rolling back, and by which rollback:\n%s", out)
	}

	slow := f.Submit(rollout.Spec{
		Name: "slow", Operation: rollout.Operation{Kind: rollout.Restart}, Clusters: []string{f.Clusters[0].ID, f.Clusters[1].ID, f.Clusters[2].ID, f.Clusters[3].ID},
		Phases: []rollout.Phase{{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}, Bake: time.Hour}},
	})
	f.Await(slow, time.Second, 30*time.Second, "a first cluster restarted", func(w *decide.Workflow) bool { return w.Progress().Succeeded > 0 })
	w = startWatch(t, f, slow)
	if !f.Eventually(0, 30*time.Second, func() bool { return strings.Contains(w.out.String(), "wave 1/2 baking") }) {
		t.Fatalf("the watch does not show the bake:\n%s", w.out.String())
	}
	// Ctrl-C ends a watch, with the exit code of an interrupted command.
	interrupted := startWatch(t, f, slow)
	if !f.Eventually(0, 30*time.Second, func() bool { return strings.Contains(interrupted.out.String(), "baking") }) {
		t.Fatalf("the second watch does not show the bake:\n%s", interrupted.out.String())
	}
	interrupted.stop()
	<-interrupted.done
	if exitCode(interrupted.err) != exitInterrupted || interrupted.err.Error() != "stopped watching: rollout "+slow+" is running" {
		t.Fatalf("a watch stopped by Ctrl-C returned %v (exit %d)", interrupted.err, exitCode(interrupted.err))
	}
	if out, err := run(t, f, "rollout", "cancel", slow, "--reason", "enough"); err != nil {
		t.Fatalf("cancel: %v\n%s", err, out)
	}
	w.awaitEnd(t, f, time.Second, "the cancel")
	if exitCode(w.err) != exitCancelled || !strings.Contains(w.err.Error(), "rollout "+slow+" ended cancelled: cancelled by") {
		t.Fatalf("the watch of a cancelled rollout returned %v (exit %d):\n%s", w.err, exitCode(w.err), w.out.String())
	}

	// Watching a rollout that has ended returns at once, with its code.
	w = startWatch(t, f, slow)
	if !f.Eventually(0, 30*time.Second, w.ended) || exitCode(w.err) != exitCancelled {
		t.Fatalf("the watch of an ended rollout: %v\n%s", w.err, w.out.String())
	}
	if _, err := run(t, f, "rollout", "status", "no-such-rollout", "--watch"); exitCode(err) != 1 || !strings.Contains(err.Error(), "no rollout no-such-rollout") {
		t.Fatalf("watch of no rollout: %v", err)
	}
}

func TestStatusWatchEndedExitCodes(t *testing.T) {
	for state, code := range map[records.WorkflowState]int{
		records.WorkflowSucceeded: 0, records.WorkflowFailed: exitFailed, records.WorkflowCancelled: exitCancelled,
		records.WorkflowRolledBack: exitRolledBack, records.WorkflowRejected: exitRejected,
	} {
		err := watchEnded(decide.Progress{ID: "w1", State: state, Reason: "why"})
		if exitCode(err) != code || (err != nil && err.Error() != "rollout w1 ended "+string(state)+": why") {
			t.Errorf("%s: %v, exit %d, want %d", state, err, exitCode(err), code)
		}
	}
}

// watchProgress is a running rollout of two phases: 12 of the first's 40
// clusters succeeded, 1 failed and 3 run in its wave 2 of 5; the second's
// 10 wait.
func watchProgress(at time.Time) decide.Progress {
	bake := at.Add(8 * time.Second)
	waves := func(states ...string) []decide.WaveProgress {
		var ws []decide.WaveProgress
		for i, s := range states {
			ws = append(ws, decide.WaveProgress{Wave: i + 1, State: s})
		}
		return ws
	}
	return decide.Progress{
		ID: "w1", Name: "up", State: records.WorkflowRunning, BakeUntil: &bake,
		Counts: decide.Counts{Targets: 50, Succeeded: 12, Failed: 1, Running: 3, Pending: 34},
		Phases: []decide.PhaseProgress{
			{Name: "internal", State: "running", Counts: decide.Counts{Targets: 40, Succeeded: 12, Failed: 1, Running: 3, Pending: 24},
				Waves: waves("done", "running", "pending", "pending", "pending")},
			{Name: "rest", State: "pending", Counts: decide.Counts{Targets: 10, Pending: 10}, Waves: waves("pending", "pending")},
		},
	}
}

func TestStatusWatchTerminalFrame(t *testing.T) {
	at := time.Date(2026, 11, 22, 12, 0, 2, 0, time.UTC)
	p := watchProgress(at)
	summary := "12/40 succeeded, 1 failed, 3 running  wave 2/5 running"
	header := `rollout "up" running; 12/50 succeeded, 1 failed; baking until ` + at.Add(8*time.Second).Local().Format(time.TimeOnly) + " (8s)"

	// Wide enough: the bars take what the widest summary leaves, 100 -
	// 8 (name) - 6 - 54 = 32 cells; 12/40 of them is 9 full cells, and
	// the failure one more: each line is exactly 100 wide.
	lines := progressFrame(p, at, 100)
	want := []string{
		header,
		"internal  [" + strings.Repeat("█", 9) + "▒" + strings.Repeat("░", 22) + "]  " + summary,
		"rest      [" + strings.Repeat("░", 32) + "]  0/10 succeeded  pending",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("frame at width 100:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	// Wider: bars of at most 40 cells.
	if l := progressFrame(p, at, 300)[2]; !strings.Contains(l, "["+strings.Repeat("░", maxBar)+"]") {
		t.Fatalf("frame at width 300: %q, want a bar of %d cells", l, maxBar)
	}
	// Narrow: bars of at least 10 cells, every line cut to the width.
	for _, l := range progressFrame(p, at, 60) {
		if n := utf8.RuneCountInString(l); n > 60 {
			t.Fatalf("a line of %d cells at width 60: %q", n, l)
		}
	}
	if l := progressFrame(p, at, 60)[1]; l != "internal  [██▒"+strings.Repeat("░", 7)+"]  12/40 succeeded, 1 failed, 3 runnin…" {
		t.Fatalf("frame line at width 60: %q", l)
	}
	// All done: a full bar.
	done := decide.Counts{Targets: 7, Succeeded: 6, Skipped: 1}
	if b := bar(done, 13); b != strings.Repeat("█", 13) {
		t.Fatalf("bar of %+v: %q", done, b)
	}
	if b := bar(decide.Counts{Targets: 3, Succeeded: 2}, 10); b != "██████░░░░" {
		t.Fatalf("bar of 2/3: %q", b)
	}
	// A failure takes at least a cell; the failed share is rounded.
	for _, c := range []struct {
		counts decide.Counts
		want   string
	}{
		{decide.Counts{Targets: 100, Failed: 1}, "▒░░░░░░░░░"},
		{decide.Counts{Targets: 19, Succeeded: 18, Failed: 1}, "█████████▒"},
		{decide.Counts{Targets: 4, Succeeded: 1, Failed: 3}, "██▒▒▒▒▒▒▒▒"},
	} {
		if b := bar(c.counts, 10); b != c.want {
			t.Errorf("bar of %+v: %q, want %q", c.counts, b, c.want)
		}
	}

	// The view draws the frame, then redraws it in place: up as many
	// lines as it drew, each line cleared; nothing when nothing changed.
	var out bytes.Buffer
	width := 100
	v := &terminalView{out: &out, now: func() time.Time { return at }, width: func() int { return width }}
	if err := v.show(p); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "\r\x1b[2K"+strings.Join(want, "\n\r\x1b[2K")+"\n" {
		t.Fatalf("first draw %q", got)
	}
	out.Reset()
	v.show(watchProgress(at))
	v.refresh()
	if out.Len() != 0 {
		t.Fatalf("a redraw of the same progress wrote %q", out.String())
	}
	p.Phases[0].Succeeded, p.Succeeded = 13, 13
	v.show(p)
	got := out.String()
	if !strings.HasPrefix(got, "\x1b[3A\r\x1b[2K") || strings.Count(got, "\r\x1b[2K") != 3 || strings.Contains(got, "\x1b[J") ||
		!strings.Contains(got, "13/40 succeeded") {
		t.Fatalf("redraw %q", got)
	}
	out.Reset()
	width = 70 // the window narrowed
	v.refresh()
	for i, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		l = strings.TrimPrefix(l, "\x1b[3A")
		if !strings.HasPrefix(l, "\r\x1b[2K") || utf8.RuneCountInString(strings.TrimPrefix(l, "\r\x1b[2K")) > 70 {
			t.Fatalf("line %d after narrowing: %q", i, l)
		}
	}
	out.Reset()
	p.Phases = p.Phases[:1] // a shorter frame clears what is left below
	v.show(p)
	if got := out.String(); !strings.HasPrefix(got, "\x1b[3A") || !strings.HasSuffix(got, "\n\x1b[J") || strings.Count(got, "\r\x1b[2K") != 2 {
		t.Fatalf("shorter redraw %q", got)
	}
	// The countdown moves on by itself.
	out.Reset()
	width = 100
	at = at.Add(3 * time.Second)
	v.refresh()
	if got := out.String(); !strings.Contains(got, "(5s)") {
		t.Fatalf("refresh 3s later %q, want 5s left of the bake", got)
	}
}

func TestStatusWatchPlainLines(t *testing.T) {
	at := time.Date(2026, 11, 22, 12, 0, 2, 0, time.UTC)
	var out bytes.Buffer
	v := &plainView{out: &out, now: func() time.Time { return at }}
	p := watchProgress(at)
	v.show(p)
	stamp := at.Local().Format(time.TimeOnly) + "  "
	want := stamp + `rollout "up" running; 12/50 succeeded, 1 failed; baking until ` + at.Add(8*time.Second).Local().Format(time.TimeOnly) + "\n" +
		stamp + "internal  12/40 succeeded, 1 failed, 3 running  wave 2/5 running\n" +
		stamp + "rest      0/10 succeeded  pending\n"
	if out.String() != want {
		t.Fatalf("first lines:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	v.show(p)
	if out.Len() != 0 {
		t.Fatalf("nothing changed, but it printed %q", out.String())
	}
	p.Phases[1].Running, p.Phases[1].Pending = 1, 9
	v.show(p)
	if out.String() != stamp+"rest      0/10 succeeded, 1 running  pending\n" {
		t.Fatalf("one phase changed: %q", out.String())
	}
}

// TestStatusWatchReadsEachRowOnce: a watch fetches only its workflow's
// partition of the workflows topic, whatever the others hold, and every
// offset of it once: it reads to the end, then follows from there, never
// again from the start. A target that comes while it follows is counted.
func TestStatusWatchReadsEachRowOnce(t *testing.T) {
	const partitions = 4
	cfg := newBackbone(t, partitions)
	history(t, cfg, 2000, 50)
	id := uuid.NewString()
	cl, err := cfg.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	write := func(rows ...records.WorkflowRecord) {
		t.Helper()
		var recs []*kgo.Record
		for _, row := range rows {
			recs = append(recs, workflowRecord(t, cfg, row))
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	write(workflowRows(id, records.WorkflowRunning, 20)...) // 19 targets of 20
	topic := cfg.Names().Workflows
	p := partitionOf(topic, id, partitions)
	counted := countFetches(t)

	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		cmd := rootCommand()
		cmd.SetOut(out)
		cmd.SetErr(out)
		cmd.SetArgs([]string{"rollout", "status", id, "--watch", "-o", "json", "--brokers", strings.Join(cfg.Brokers, ","), "--namespace", cfg.Names().Namespace})
		done <- cmd.ExecuteContext(ctx)
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not happen in 30s; the watch printed:\n%s", what, out.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The first line comes once the read has ended: what comes next is
	// past its end.
	waitFor("the first line", func() bool { return strings.Contains(out.String(), "\n") })
	env := records.Envelope{ID: uuid.NewString(), Time: time.Date(2026, 1, 2, 3, 5, 0, 0, time.UTC), Principal: "planner"}
	write(records.WorkflowRecord{Envelope: env, Target: &records.Target{WorkflowID: id, ClusterID: "c-20", State: records.TargetRunning}})
	waitFor("the new target", func() bool { return strings.Contains(out.String(), `"running":1`) })
	write(records.WorkflowRecord{Envelope: env, Target: &records.Target{WorkflowID: id, ClusterID: "c-20", State: records.TargetSucceeded}},
		workflowRows(id, records.WorkflowSucceeded, 1)[0])
	var err2 error
	select {
	case err2 = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the watch did not end with the rollout; it printed:\n%s", out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var last decide.Progress
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || err2 != nil {
		t.Fatalf("watch: %v, last line %v:\n%s", err2, err, out.String())
	}
	if last.State != records.WorkflowSucceeded || last.Targets != 20 || last.Succeeded != 20 || len(lines) < 3 || len(lines) > 4 {
		// The last two rows may be drawn apart, or together.
		t.Fatalf("the watch printed %d lines, the last %+v; want 3 or 4, ending with 20 of 20 succeeded:\n%s", len(lines), last, out.String())
	}
	counted.assertOnly(t, "rollout status --watch", topic, []int32{p}, nil)
	offsets := counted.partitions(topic)[p]
	seen := map[int64]bool{}
	for _, o := range offsets {
		if seen[o] {
			t.Fatalf("offset %d of partition %d fetched twice (offsets fetched: %v)", o, p, offsets)
		}
		seen[o] = true
	}
}
