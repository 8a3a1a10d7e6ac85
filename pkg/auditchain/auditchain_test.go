package auditchain

import (
	"crypto/ed25519"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/keys"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// memLog is a partition of each topic in memory, with compaction.
type memLog struct {
	recs map[string][]*kgo.Record // by topic (= role, and "checkpoints")
}

func (m *memLog) add(topic string, r *kgo.Record) {
	if m.recs == nil {
		m.recs = map[string][]*kgo.Record{}
	}
	r.Topic = topic
	r.Offset = int64(len(m.recs[topic]))
	if n := len(m.recs[topic]); n > 0 {
		r.Offset = m.recs[topic][n-1].Offset + 1
	}
	m.recs[topic] = append(m.recs[topic], r)
}

// compact keeps the last record of each key, tombstones included.
func (m *memLog) compact(dropTombstones bool) {
	for topic, rs := range m.recs {
		last := map[string]int64{}
		for _, r := range rs {
			last[string(r.Key)] = r.Offset
		}
		var kept []*kgo.Record
		for _, r := range rs {
			if last[string(r.Key)] == r.Offset && !(dropTombstones && r.Value == nil) {
				kept = append(kept, r)
			}
		}
		m.recs[topic] = kept
	}
}

type writerSim struct {
	t      *testing.T
	log    *memLog
	chains *Chains
}

func (w *writerSim) write(workflow string, recs ...[2]string) {
	tx := w.chains.Begin()
	for _, kv := range recs {
		role, key, value := Workflows, kv[0], kv[1]
		if strings.HasPrefix(key, "cmd:") {
			role, key = Commands, strings.TrimPrefix(key, "cmd:")
		}
		r := &kgo.Record{Key: []byte(key)}
		if value != "" {
			r.Value = []byte(value)
		}
		tx.Append(workflow, role, r)
		w.log.add(role, r)
	}
	for _, cp := range tx.Checkpoints(time.Unix(0, 0), nil) {
		b, err := records.Encode(cp)
		if err != nil {
			w.t.Fatal(err)
		}
		w.log.add("checkpoints", &kgo.Record{Key: []byte(cp.WorkflowID + "/@" + cp.Writer + "/" + strconv.Itoa(cp.Bucket)), Value: b})
	}
}

// rebuild returns the planner's chains as a planner taking the log over
// rebuilds them: from the checkpoints, then the workflows and commands.
func (m *memLog) rebuild() *Chains {
	c := New(Planner, nil)
	for _, r := range m.recs["checkpoints"] {
		cp, _ := records.DecodeCheckpoint(r.Value)
		c.ObserveCheckpoint(cp)
	}
	for _, role := range []string{Workflows, Commands} {
		for _, r := range m.recs[role] {
			c.Observe(role, r)
		}
	}
	return c
}

func verify(t *testing.T, log *memLog, pub ed25519.PublicKey) Report {
	t.Helper()
	v := NewVerifier(map[string]ed25519.PublicKey{keys.ID(pub): pub}, nil)
	for _, role := range []string{Workflows, Commands} {
		for _, r := range log.recs[role] {
			v.Record(role, r, nil)
		}
	}
	for _, r := range log.recs["checkpoints"] {
		v.Checkpoint(r, nil)
	}
	return v.Finish()
}

func setup(t *testing.T) (*writerSim, ed25519.PublicKey) {
	s, err := keys.WriteKeyPair(filepath.Join(t.TempDir(), "planner"))
	if err != nil {
		t.Fatal(err)
	}
	w := &writerSim{t: t, log: &memLog{}, chains: New(Planner, &s)}
	w.write("wf", [2]string{"wf", "h1"}, [2]string{"wf/c1", "t1"}, [2]string{"cmd:wf/c1", "c1"})
	w.write("wf", [2]string{"wf/c1", "t1-done"}, [2]string{"wf", "h2"}, [2]string{"wf/c2", "t2"})
	return w, s.Public()
}

func wantFinding(t *testing.T, rep Report, substr string) {
	t.Helper()
	for _, f := range rep.Findings {
		if strings.Contains(f.String(), substr) {
			return
		}
	}
	t.Fatalf("no finding with %q in %v", substr, rep.Findings)
}

func TestCleanLogAndCompactionVerify(t *testing.T) {
	w, pub := setup(t)
	if rep := verify(t, w.log, pub); len(rep.Findings) != 0 || rep.Records != 6 || rep.Tail != 0 {
		t.Fatalf("clean log: %+v", rep)
	}
	w.log.compact(false)
	if rep := verify(t, w.log, pub); len(rep.Findings) != 0 || rep.Records != 4 {
		t.Fatalf("compacted log: %+v", rep)
	}
	// Rebuilt from the compacted log, the chain goes on where it was.
	again := w.log.rebuild()
	if s1, h1 := again.Head("wf"); s1 != 6 || h1 != func() Hash { _, h := w.chains.Head("wf"); return h }() {
		t.Fatalf("rebuilt head seq %d", s1)
	}
	w.chains = again
	w.write("wf", [2]string{"wf", ""}, [2]string{"wf/c2", ""})
	w.log.compact(true)
	if rep := verify(t, w.log, pub); len(rep.Findings) != 0 {
		t.Fatalf("after a restart and tombstones: %v", rep.Findings)
	}
}

func TestTamperingIsFound(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(l *memLog)
		want   string
	}{
		{"altered, header copied", func(l *memLog) {
			r := *l.recs[Workflows][2] // wf/c1 t1-done
			r.Value = []byte("t1-failed")
			l.add(Workflows, &r)
			l.compact(false)
		}, "altered: its bytes"},
		{"altered, hash recomputed", func(l *memLog) {
			r := *l.recs[Workflows][4] // wf/c2 t2, the head
			lk, _, _ := LinkOf(&r)
			r.Value = []byte("h2-forged")
			r.Headers = nil
			lk.Hash = Sum(lk.Workflow, lk.Seq, lk.Prev, Workflows, &r)
			setLink(&r, lk)
			l.add(Workflows, &r)
			l.compact(false)
		}, "altered: not the record of seq 6"},
		{"removed by a tombstone", func(l *memLog) {
			l.add(Commands, &kgo.Record{Key: []byte("wf/c1")})
			l.compact(true)
		}, "removed: the checkpoint"},
		{"inserted", func(l *memLog) {
			l.add(Workflows, &kgo.Record{Key: []byte("wf/c9"), Value: []byte("forged")})
		}, "inserted: not in any chain"},
		{"reordered", func(l *memLog) {
			r := *l.recs[Workflows][1] // wf/c1 t1, seq 2
			l.add(Workflows, &r)
			l.compact(false)
		}, "reordered"},
		{"duplicated", func(l *memLog) {
			r := *l.recs[Workflows][4]
			l.add(Workflows, &r)
		}, "duplicated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, pub := setup(t)
			tc.tamper(w.log)
			wantFinding(t, verify(t, w.log, pub), tc.want)
		})
	}
}

func TestAbortUndoes(t *testing.T) {
	w, _ := setup(t)
	seq, head := w.chains.Head("wf")
	tx := w.chains.Begin()
	tx.Append("wf", Workflows, &kgo.Record{Key: []byte("wf"), Value: []byte("h3")})
	if cps := tx.Checkpoints(time.Now(), nil); len(cps) == 0 {
		t.Fatal("no checkpoint after a change")
	}
	tx.Abort()
	if s, h := w.chains.Head("wf"); s != seq || h != head {
		t.Fatal("abort left the chain advanced")
	}
	if cps := w.chains.Begin().Checkpoints(time.Now(), nil); len(cps) != 0 {
		t.Fatalf("abort left checkpoints due: %d", len(cps))
	}
}

// TestALargeChainIsSplitIntoBuckets grows a chain past a bucket's keys:
// its checkpoints split it, each bucket naming only its keys, and the log
// still verifies, compacted, and after a rebuild that carries on.
func TestALargeChainIsSplitIntoBuckets(t *testing.T) {
	w, pub := setup(t)
	var rows [][2]string
	for i := range 2500 {
		rows = append(rows, [2]string{"wf/c" + strconv.Itoa(i), "t"})
	}
	w.write("wf", rows...)
	w.write("wf", [2]string{"wf/c7", "t-done"}, [2]string{"wf", "h3"})
	rep := verify(t, w.log, pub)
	if len(rep.Findings) != 0 || rep.Tail != 0 {
		t.Fatalf("%d findings %v, tail %d", len(rep.Findings), rep.Findings[:min(3, len(rep.Findings))], rep.Tail)
	}
	if rep.Checkpoints != 4 {
		t.Errorf("%d latest checkpoints, want 4 buckets", rep.Checkpoints)
	}
	w.log.compact(false)
	again := w.log.rebuild()
	if again.Dirty(nil) {
		t.Error("a chain rebuilt from a log its checkpoints cover is dirty")
	}
	w.chains = again
	w.write("wf", [2]string{"wf/c8", ""})
	if rep := verify(t, w.log, pub); len(rep.Findings) != 0 {
		t.Fatalf("after a rebuild: %v", rep.Findings)
	}
}
