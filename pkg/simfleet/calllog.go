package simfleet

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// The outcomes of an Apply call, as its "end" line in a call log records
// them ([Call.Outcome]).
const (
	// OutcomeChanged: the call changed the cluster (Fleet.Applies counts
	// it).
	OutcomeChanged = "changed"
	// OutcomeConfirmed: the cluster already was in the desired state (an
	// upgrade to the version it runs); nothing changed.
	OutcomeConfirmed = "confirmed"
	// OutcomeAlreadyApplied: the command had been applied before (a
	// redelivery, a resume); nothing changed.
	OutcomeAlreadyApplied = "already-applied"
	// OutcomeFailed: the call failed without changing the cluster (a
	// simulated failure, a malformed request, a state file that could not
	// be read or written).
	OutcomeFailed = "failed"
	// OutcomeFenced: the call was refused or stopped before changing the
	// cluster, because of its fencing token or because Request.Fence said
	// the executor no longer holds the cluster.
	OutcomeFenced = "fenced"
	// OutcomeInterrupted: the call's context ended (cancelled, or its
	// deadline passed) before it changed the cluster.
	OutcomeInterrupted = "interrupted"
)

// The events of a call log line ([Call.Event]).
const (
	CallBegin = "begin"
	CallEnd   = "end"
)

// maxCallLine bounds one line of a call log. A write(2) of at most
// PIPE_BUF (4 KiB) bytes to a file opened with O_APPEND lands whole, after
// every line written before it, whichever process writes: lines of
// several processes interleave but never mix.
const maxCallLine = 4000

// Call is one line of a call log ([Options.CallLog]): the "begin" of an
// Apply call, written before it looks at the cluster, or its "end", written
// when it returns. A begin and its end share Proc and Seq. A begin without
// an end is a call whose process died (or was frozen) inside it.
type Call struct {
	Event string    `json:"event"` // CallBegin or CallEnd
	Time  time.Time `json:"time"`  // wall clock of the writing process
	// Proc names the writing process (its pid and a random suffix, so
	// that a reused pid is not taken for the same process); PID and Host
	// are those of the process.
	Proc string `json:"proc"`
	PID  int    `json:"pid"`
	Host string `json:"host,omitempty"`
	// Seq numbers the Apply calls of one process, from 1.
	Seq       int64  `json:"seq"`
	Cluster   string `json:"cluster"`
	Command   string `json:"command"`
	Attempt   int    `json:"attempt,omitempty"`
	Token     int64  `json:"token,omitempty"`     // the request's fencing token
	Operation string `json:"operation,omitempty"` // "upgrade to 3.9.1", "config set a, b", "restart"

	// Set on an end line only.
	Began   time.Time `json:"began,omitzero"`    // the Time of the begin line
	Outcome string    `json:"outcome,omitempty"` // one of the Outcome constants
	// Before is the version the cluster ran when the call read it ("" if
	// it did not get that far); After the version it ran when the call
	// returned.
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
	// SeenToken is the highest fencing token the cluster had seen when
	// the call read it.
	SeenToken int64  `json:"seenToken,omitempty"`
	Error     string `json:"error,omitempty"`
}

// callLog appends Call lines to a file shared by several processes.
type callLog struct {
	f    *os.File
	proc string
	pid  int
	host string
	seq  atomic.Int64
}

// openCallLog opens (creating it if need be) the call log at path for
// appending.
func openCallLog(path string) (*callLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("simfleet: open the call log: %w", err)
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	host, _ := os.Hostname()
	return &callLog{f: f, proc: fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(suffix[:])), pid: os.Getpid(), host: host}, nil
}

// write appends one line, in one write(2). Strings a caller chooses are
// cut to fit a line (their sum stays below maxCallLine).
func (l *callLog) write(c Call) error {
	c.Cluster, c.Command, c.Operation = clip(c.Cluster, 200), clip(c.Command, 200), clip(c.Operation, 300)
	c.Before, c.After, c.Error = clip(c.Before, 100), clip(c.After, 100), clip(c.Error, 2000)
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if len(b) >= maxCallLine {
		return fmt.Errorf("simfleet: call log line of %d bytes is too long", len(b))
	}
	_, err = l.f.Write(append(b, '\n'))
	return err
}

// clip cuts s to at most n bytes (JSON may escape some of them into
// several, hence the generous margin of maxCallLine).
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-3], "") + "..."
}

// call is one Apply call being recorded. Its methods do nothing on a nil
// call (a fleet without a call log).
type call struct {
	log     *callLog
	line    Call
	outcome string // the outcome of a call that returns without error
	loaded  bool
}

// begin records the start of an Apply call. It fails if the line cannot
// be written: Apply then does not act, so that the log never misses a
// change.
func (l *callLog) begin(req drivers.Request) (*call, error) {
	if l == nil {
		return nil, nil
	}
	c := &call{log: l, line: Call{
		Event: CallBegin, Time: time.Now().UTC(), Proc: l.proc, PID: l.pid, Host: l.host, Seq: l.seq.Add(1),
		Cluster: req.Cluster.ID, Command: req.CommandID, Attempt: req.Attempt, Token: req.FencingToken,
		Operation: describeOperation(req.Operation),
	}}
	if err := l.write(c.line); err != nil {
		return nil, fmt.Errorf("simfleet: record the call in the call log: %w", err)
	}
	return c, nil
}

// read notes what the call found on the cluster before acting.
func (c *call) read(st State) {
	if c == nil || c.loaded {
		return
	}
	c.loaded = true
	c.line.Before, c.line.SeenToken = st.Version, st.FencingToken
}

// settle sets the outcome of the call, should it return without error.
func (c *call) settle(outcome string) {
	if c != nil {
		c.outcome = outcome
	}
}

// end records how the call ended. A line that cannot be written is lost:
// the call log then shows a begin without an end, which a reader must take
// for a call that may have changed the cluster.
func (c *call) end(res drivers.Result, err error) {
	if c == nil {
		return
	}
	line := c.line
	line.Event, line.Began, line.Time = CallEnd, line.Time, time.Now().UTC()
	switch {
	case err == nil:
		line.Outcome, line.After = c.outcome, res.Version
	case errors.Is(err, drivers.ErrFenced):
		line.Outcome, line.After = OutcomeFenced, line.Before
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		line.Outcome, line.After = OutcomeInterrupted, line.Before
	default:
		line.Outcome, line.After = OutcomeFailed, line.Before
	}
	if err != nil {
		line.Error = err.Error()
	}
	_ = c.log.write(line)
}

func describeOperation(op rollout.Operation) string {
	switch op.Kind {
	case rollout.Upgrade:
		return "upgrade to " + op.Version
	case rollout.Config:
		return "config " + configSummary(op)
	}
	return string(op.Kind)
}

func (l *callLog) close() error {
	if l == nil {
		return nil
	}
	return l.f.Close()
}

// Close releases what the fleet holds open (its call log). The fleet must
// not be used afterwards.
func (f *Fleet) Close() error { return f.calls.close() }

// ApplyCall is one Apply call read back from a call log: its begin line
// and, if the call returned, its end line.
type ApplyCall struct {
	Begin Call
	End   Call
	Ended bool
}

// ReadCallLog reads a call log and pairs each begin line with its end,
// returning the calls in the order their begin lines were written (the
// order of the file: appends from every process land in the order they
// were made). A line
// that cannot be decoded, or an end without a begin, is skipped and
// reported in the error (joined, with the calls read all the same).
func ReadCallLog(path string) ([]ApplyCall, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read the call log: %w", err)
	}
	defer f.Close()
	type key struct {
		proc string
		seq  int64
	}
	var calls []ApplyCall
	index := map[key]int{}
	var errs []error
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		var c Call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", path, n, err))
			continue
		}
		k := key{c.Proc, c.Seq}
		switch c.Event {
		case CallBegin:
			index[k] = len(calls)
			calls = append(calls, ApplyCall{Begin: c})
		case CallEnd:
			i, ok := index[k]
			if !ok {
				errs = append(errs, fmt.Errorf("%s:%d: an end without a begin (process %s, call %d)", path, n, c.Proc, c.Seq))
				continue
			}
			calls[i].End, calls[i].Ended = c, true
		default:
			errs = append(errs, fmt.Errorf("%s:%d: unknown event %q", path, n, c.Event))
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read the call log: %w", err))
	}
	return calls, errors.Join(errs...)
}

// WouldFail reports whether the fleet, with the given FailureRate, fails
// the operation of a command: the choice depends on the command ID alone,
// so that a checker can tell what an undisturbed run would have done.
func WouldFail(failureRate float64, commandID string) bool {
	if failureRate <= 0 {
		return false
	}
	h := fnv.New64a()
	h.Write([]byte(commandID))
	// The top 53 bits give a uniform fraction in [0, 1).
	frac := float64(h.Sum64()>>11) / (1 << 53)
	return frac < failureRate
}
