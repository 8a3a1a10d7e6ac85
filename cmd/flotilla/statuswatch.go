package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/term"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/logtable"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// Exit codes of `rollout status --watch` (see its help): how the rollout
// ended, for scripts. 1 is any other error of the command.
const (
	exitFailed      = 2
	exitCancelled   = 3
	exitRolledBack  = 4
	exitRejected    = 5
	exitInterrupted = 130 // as a shell reports a command ended by SIGINT
)

// exitError is an error that ends the CLI with an exit code of its own
// rather than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode is the code the CLI exits with after err (nil: 0).
func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	return 1
}

// watchRedraw is how often, at most, a watch shows the progress again:
// a few times a second, and only when rows came (or, on a terminal, when
// the frame changed: a countdown, a narrower window).
const watchRedraw = 250 * time.Millisecond

// watchStatus shows workflow id's progress until it ends, then returns
// an exitError for any end but success (nil for success).
//
// It reads the workflow's one partition of the workflows topic to its end
// under readCtx, then follows the partition from that end under ctx,
// applying each new row of the workflow (and of its rollback) to the same
// state: the cost grows with the rollout's rows, never with the rest of
// the topic, and nothing is read twice. Rows are applied as they come;
// the view is drawn at most every watchRedraw.
func watchStatus(readCtx, ctx context.Context, cfg backbone.Config, id string, view progressView) error {
	topic := cfg.Names().Workflows
	parts, err := loadPartitioning(readCtx, cfg, topic)
	if err != nil {
		return err
	}
	partitions := parts.of(topic, id)
	var ends map[int32]int64
	s, err := readWorkflowRows(readCtx, cfg, partitions, func(key []byte) bool { return workflowKey(key, id) },
		logtable.OnEnds(func(e map[int32]int64) { ends = e }))
	if err != nil {
		return err
	}
	w := s.Workflows[id]
	if w == nil || w.State == "" {
		return fmt.Errorf("no rollout %s (see: flotilla rollout list)", id)
	}
	if err := view.show(w.Progress()); err != nil {
		return err
	}
	if w.State.Terminal() {
		return watchEnded(w.Progress())
	}

	// The follower applies rows under mu; the drawer takes the progress
	// under mu when rows changed it and draws outside.
	var (
		mu      sync.Mutex
		changed bool // rows came since the last Progress
		reindex bool // a target was added or removed, or the plan changed
	)
	progress := func() (decide.Progress, bool) {
		mu.Lock()
		defer mu.Unlock()
		w := s.Workflows[id]
		if !changed || w == nil {
			return decide.Progress{}, false
		}
		if reindex {
			w.Reindex()
		}
		changed, reindex = false, false
		return w.Progress(), true
	}
	followCtx, stopFollowing := context.WithCancel(ctx)
	defer stopFollowing()
	stop := make(chan struct{})
	drawn := make(chan error, 1)
	go func() {
		tick := time.NewTicker(watchRedraw) // the pace of the screen, not a wait for a condition
		defer tick.Stop()
		for {
			select {
			case <-stop:
				drawn <- nil
				return
			case <-tick.C:
			}
			var err error
			if p, ok := progress(); ok {
				err = view.show(p)
			} else {
				err = view.refresh()
			}
			if err != nil { // the output is gone (a closed pipe): stop
				drawn <- err
				stopFollowing()
				return
			}
		}
	}()

	from := map[int32]kgo.Offset{}
	for _, p := range partitions {
		from[p] = kgo.NewOffset().At(ends[p])
	}
	followErr := logtable.Follow(followCtx, cfg.Opts(), topic, from, func(r *kgo.Record) bool {
		if !workflowKey(r.Key, id) {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		// Only a target added, moved or removed, or a plan that grew,
		// needs the waves indexed again; a target's new state does not.
		targets, unplanned, phases := -1, -1, -1
		var old *records.Target
		if w := s.Workflows[id]; w != nil {
			targets, unplanned, phases = len(w.Targets), w.Unplanned, len(w.Phases)
			if cluster, ok := strings.CutPrefix(string(r.Key), id+"/"); ok {
				old = w.Targets[cluster]
			}
		}
		rec := applyWorkflowRow(s, r)
		changed = true
		w := s.Workflows[id]
		moved := rec != nil && rec.Target != nil && rec.Target.WorkflowID == id &&
			(old == nil || old.Phase != rec.Target.Phase || old.Wave != rec.Target.Wave || old.Order != rec.Target.Order)
		if w == nil || moved || len(w.Targets) != targets || w.Unplanned != unplanned || len(w.Phases) != phases {
			reindex = true
		}
		// The planner writes a decision's target rows before its
		// header: a terminal header comes after the rows that ended.
		return w != nil && w.State.Terminal()
	})
	close(stop)
	if err := <-drawn; err != nil {
		return err
	}
	if followErr != nil {
		if ctx.Err() != nil {
			state := records.WorkflowState("gone")
			if w := s.Workflows[id]; w != nil {
				state = w.State
			}
			return &exitError{exitInterrupted, fmt.Errorf("stopped watching: rollout %s is %s", id, state)}
		}
		return fmt.Errorf("watch rollout %s: %w", id, followErr)
	}
	changed = true // what came since the last draw, and the terminal header
	p, ok := progress()
	if !ok {
		return fmt.Errorf("rollout %s: its rows were removed while watching", id)
	}
	if err := view.show(p); err != nil {
		return err
	}
	return watchEnded(p)
}

// watchEnded is the result of a watch of a rollout that ended in p: nil if
// it succeeded, else an exitError that names its state and reason.
func watchEnded(p decide.Progress) error {
	code := 0
	switch p.State {
	case records.WorkflowSucceeded:
		return nil
	case records.WorkflowFailed:
		code = exitFailed
	case records.WorkflowCancelled:
		code = exitCancelled
	case records.WorkflowRolledBack:
		code = exitRolledBack
	case records.WorkflowRejected:
		code = exitRejected
	default:
		code = 1
	}
	msg := fmt.Sprintf("rollout %s ended %s", p.ID, p.State)
	if p.Rollback != "" {
		msg += " (its rollback: " + p.Rollback + ")"
	}
	if p.Reason != "" {
		msg += ": " + p.Reason
	}
	return &exitError{code, errors.New(msg)}
}

// progressView shows a rollout's progress as it changes.
type progressView interface {
	// show shows p, if it differs from what is shown.
	show(p decide.Progress) error
	// refresh shows the last progress again, if its picture changed with
	// time (a countdown) or with the terminal's width.
	refresh() error
}

// newProgressView picks the view for out: JSON lines with asJSON, bars
// redrawn in place on a terminal, plain lines otherwise.
func newProgressView(out io.Writer, asJSON bool) progressView {
	if asJSON {
		return &jsonLinesView{out: out}
	}
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) && os.Getenv("TERM") != "dumb" {
		fd := int(f.Fd())
		return &terminalView{out: out, now: now, width: func() int {
			w, _, err := term.GetSize(fd)
			if err != nil || w <= 0 {
				return 80
			}
			return w
		}}
	}
	return &plainView{out: out, now: now}
}

// jsonLinesView writes one Progress object per line, each time it changed.
type jsonLinesView struct {
	out  io.Writer
	last []byte
}

func (v *jsonLinesView) show(p decide.Progress) error {
	line, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if bytes.Equal(line, v.last) {
		return nil
	}
	v.last = line
	_, err = v.out.Write(append(line, '\n'))
	return err
}

func (v *jsonLinesView) refresh() error { return nil }

// plainView writes a line, stamped with the time, for each change of the
// rollout's state (its header) and of each phase: what a log or a pipe can
// hold, with no escape codes.
type plainView struct {
	out        io.Writer
	now        func() time.Time
	lastHeader string
	lastPhases map[string]string
}

func (v *plainView) show(p decide.Progress) error {
	var lines []string
	if h := headerLine(p, time.Time{}); h != v.lastHeader {
		v.lastHeader = h
		lines = append(lines, h)
	}
	if v.lastPhases == nil {
		v.lastPhases = map[string]string{}
	}
	if !p.Compacted {
		width := phaseNameWidth(p)
		for _, ph := range p.Phases {
			line := padRight(ph.Name, width) + "  " + watchPhaseSummary(p, ph)
			if v.lastPhases[ph.Name] != line {
				v.lastPhases[ph.Name] = line
				lines = append(lines, line)
			}
		}
	}
	stamp := v.now().Local().Format(time.TimeOnly)
	var buf bytes.Buffer
	for _, l := range lines {
		fmt.Fprintf(&buf, "%s  %s\n", stamp, l)
	}
	_, err := v.out.Write(buf.Bytes())
	return err
}

func (v *plainView) refresh() error { return nil }

// terminalView redraws the progress in place: a header line and a bar per
// phase, each cut to the terminal's width so that none wraps (a wrapped
// line would throw the cursor-up count off).
type terminalView struct {
	out   io.Writer
	now   func() time.Time
	width func() int
	last  *decide.Progress
	frame string // what is on screen
	lines int    // its line count
}

func (v *terminalView) show(p decide.Progress) error {
	v.last = &p
	return v.refresh()
}

func (v *terminalView) refresh() error {
	if v.last == nil {
		return nil
	}
	lines := progressFrame(*v.last, v.now(), v.width())
	frame := strings.Join(lines, "\n")
	if frame == v.frame {
		return nil
	}
	var buf bytes.Buffer
	if v.lines > 0 {
		fmt.Fprintf(&buf, "\x1b[%dA", v.lines) // back to the frame's first line
	}
	for _, l := range lines {
		buf.WriteString("\r\x1b[2K") // clear the line
		buf.WriteString(l)
		buf.WriteByte('\n')
	}
	if len(lines) < v.lines {
		buf.WriteString("\x1b[J") // clear what is left of a longer frame
	}
	v.frame, v.lines = frame, len(lines)
	_, err := v.out.Write(buf.Bytes())
	return err
}

// Bar widths, in cells, of a terminal's progress bars: as wide as the
// terminal leaves room for, within these.
const (
	minBar = 10
	maxBar = 40
)

// progressFrame is the picture of p on a terminal width cells wide at
// now: a header line, then one line per phase,
//
//	name  [████████░░░░░░]  12/40 succeeded, 1 failed, 3 running  wave 2/5 running
//
// the bars as wide as the widest summary leaves room for (minBar to
// maxBar) and every line cut to width.
func progressFrame(p decide.Progress, now time.Time, width int) []string {
	lines := []string{headerLine(p, now)}
	if !p.Compacted {
		nameW := phaseNameWidth(p)
		summaries := make([]string, len(p.Phases))
		sumW := 0
		for i, ph := range p.Phases {
			summaries[i] = watchPhaseSummary(p, ph)
			sumW = max(sumW, utf8.RuneCountInString(summaries[i]))
		}
		barW := min(max(width-nameW-len("  []  ")-sumW, minBar), maxBar)
		for i, ph := range p.Phases {
			lines = append(lines, padRight(ph.Name, nameW)+"  ["+bar(ph.Counts, barW)+"]  "+summaries[i])
		}
	}
	for i, l := range lines {
		lines[i] = truncate(l, width)
	}
	return lines
}

// bar draws c in width cells: █ succeeded (or skipped), ▒ failed, ░ the
// rest. The ended share (succeeded, skipped or failed) is rounded down, so
// a bar is full only when every target has ended; of it, the failed share
// is rounded, but a failure takes at least one cell.
func bar(c decide.Counts, width int) string {
	if c.Targets == 0 {
		return strings.Repeat("░", width)
	}
	n := c.Succeeded + c.Skipped + c.Failed
	ended, failed := n*width/c.Targets, 0
	if c.Failed > 0 {
		ended = max(ended, 1)
		if n < c.Targets {
			ended = min(ended, width-1)
		}
		failed = min(max((2*c.Failed*width+c.Targets)/(2*c.Targets), 1), ended)
	}
	return strings.Repeat("█", ended-failed) + strings.Repeat("▒", failed) + strings.Repeat("░", width-ended)
}

// headerLine says where the rollout stands: its name, state and counts,
// what it waits for, its rollback, and last (the part a narrow terminal
// cuts) its reason. With a zero now, waits are told by their end only (a
// plain line must not change by itself); otherwise with the time left.
func headerLine(p decide.Progress, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rollout %q %s", p.Name, p.State)
	if p.Compacted {
		fmt.Fprintf(&b, "; %d clusters, their rows removed after the retention", p.Targets)
	} else {
		fmt.Fprintf(&b, "; %d/%d succeeded", p.Succeeded, p.Targets)
		if p.Failed > 0 {
			fmt.Fprintf(&b, ", %d failed", p.Failed)
		}
	}
	if p.Unplanned > 0 {
		fmt.Fprintf(&b, "; planning: %d of %d targets written", p.Targets, p.Targets+p.Unplanned)
	}
	if p.Gate != "" {
		fmt.Fprintf(&b, "; gate %s: waiting for approval (flotilla rollout approve %s)", p.Gate, p.ID)
	}
	if p.BakeUntil != nil && p.State == records.WorkflowRunning {
		b.WriteString("; baking until " + until(*p.BakeUntil, now))
	}
	if p.Waiting != "" && p.State == records.WorkflowRunning {
		b.WriteString("; waiting: " + p.Waiting)
	}
	if p.ResumeAt != nil && p.State == records.WorkflowPaused {
		b.WriteString("; resumes by itself at " + until(*p.ResumeAt, now))
	}
	switch {
	case p.Rollback != "" && p.State == records.WorkflowRollingBack:
		fmt.Fprintf(&b, "; rollback %s (flotilla rollout status %s --watch)", p.Rollback, p.Rollback)
	case p.Rollback != "":
		b.WriteString("; rollback " + p.Rollback)
	}
	if p.Reason != "" {
		b.WriteString("; " + strings.ReplaceAll(p.Reason, "\n", " "))
	}
	return b.String()
}

// until tells a time to come, with what is left of it after now unless
// now is zero.
func until(t, now time.Time) string {
	s := t.Local().Format(time.TimeOnly)
	if !now.IsZero() {
		s += fmt.Sprintf(" (%s)", max(t.Sub(now), 0).Round(time.Second))
	}
	return s
}

// watchPhaseSummary is a phase's counts, then its current wave while the
// rollout runs in it, or else its state:
// "12/40 succeeded, 1 failed, 3 running  wave 2/5 running".
func watchPhaseSummary(p decide.Progress, ph decide.PhaseProgress) string {
	s := fmt.Sprintf("%d/%d succeeded", ph.Succeeded, ph.Targets)
	if ph.Failed > 0 {
		s += fmt.Sprintf(", %d failed", ph.Failed)
	}
	if ph.Skipped > 0 {
		s += fmt.Sprintf(", %d skipped", ph.Skipped)
	}
	if ph.Running > 0 {
		s += fmt.Sprintf(", %d running", ph.Running)
	}
	return s + "  " + phaseStep(p, ph)
}

// phaseStep is a phase's current wave and its state ("wave 2/5 baking")
// while the rollout is in it, or else the phase's state.
func phaseStep(p decide.Progress, ph decide.PhaseProgress) string {
	if p.State.Terminal() {
		return ph.State
	}
	for _, w := range ph.Waves {
		switch w.State {
		case "running", "baking", "paused", "stopped":
			return fmt.Sprintf("wave %d/%d %s", w.Wave, len(ph.Waves), w.State)
		}
	}
	return ph.State
}

func phaseNameWidth(p decide.Progress) int {
	n := 0
	for _, ph := range p.Phases {
		n = max(n, utf8.RuneCountInString(ph.Name))
	}
	return n
}

func padRight(s string, width int) string {
	return s + strings.Repeat(" ", max(width-utf8.RuneCountInString(s), 0))
}

// truncate cuts s to width cells (runes), ending in … when it cut.
func truncate(s string, width int) string {
	if width <= 0 || utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:width-1]) + "…"
}
