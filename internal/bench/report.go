package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a run measured, stage by stage, and the goals checked.
type Report struct {
	Broker     string           `json:"broker"`
	Clusters   []int            `json:"clusters"`
	InFlight   int              `json:"inFlight"`
	Quick      bool             `json:"quick"`
	Started    time.Time        `json:"started"`
	Elapsed    float64          `json:"elapsedSeconds"`
	Limits     *LimitsResult    `json:"limits,omitempty"`
	Rollouts   []RolloutResult  `json:"rollouts,omitempty"`
	Reaction   *ReactionResult  `json:"reaction,omitempty"`
	Recoveries []RecoveryResult `json:"recoveries,omitempty"`
	Goals      []Goal           `json:"goals"`
}

// Goal is one figure beside the goal issue 9 sets for it. A goal missed
// does not fail the run: the figure is what the run is for.
type Goal struct {
	Figure string `json:"figure"`
	Value  string `json:"value"`
	Goal   string `json:"goal"`
	Pass   bool   `json:"pass"`
}

// The goals of issue 9.
const (
	goalTxnRatio      = 0.20
	goalReactionP99   = 250.0 // milliseconds
	goalCatchUpRatio  = 0.50
	goalRSS           = 300 << 20
	goalIdleCores     = 0.5
	mib               = 1 << 20
	goalRSSText       = "≤ 300 MiB"
	goalIdleCoresText = "< 0.5 core"
)

// check computes the rollouts' ratios to the raw limit and lists the goals.
func (r *Report) check() {
	r.Goals = nil
	for i := range r.Rollouts {
		ro := &r.Rollouts[i]
		if !r.hasTxnLimit() {
			continue
		}
		ro.TxnRatio = ro.OpsPerSecond / r.Limits.Txn
		r.goal(fmt.Sprintf("completion, %s clusters", count(ro.Clusters)), pct(ro.TxnRatio)+" of raw txn", "≥ 20% of raw txn", ro.Finished && ro.TxnRatio >= goalTxnRatio)
	}
	if re := r.Reaction; re != nil {
		r.goal("reaction p99", millis(re.P99Millis), "≤ 250 ms", len(re.Trials) > 0 && re.P99Millis <= goalReactionP99)
		r.goal("commands after a pause", count(re.CommandsAfterPause), "0", len(re.Trials) > 0 && re.CommandsAfterPause == 0)
	}
	for _, rc := range r.Recoveries {
		at := count(rc.Clusters) + " clusters"
		for _, s := range rc.Services {
			if s.Records > 0 {
				r.goal(fmt.Sprintf("catch-up, %s, %s", s.Service, at), pct(s.Ratio)+" of raw", "≥ 50% of raw", s.Acted && s.Ratio >= goalCatchUpRatio)
			}
		}
		rss := r.PeakRSS(rc.Clusters)
		for _, name := range serviceNames {
			if v, ok := rss[name]; ok {
				r.goal(fmt.Sprintf("peak RSS, %s, %s", name, at), mibs(v), goalRSSText, v <= goalRSS)
			}
		}
		if rc.IdleSeconds > 0 {
			r.goal("idle CPU, "+at, cores(rc.IdleCoresTotal), goalIdleCoresText, rc.IdleCoresTotal < goalIdleCores)
		}
	}
}

func (r *Report) hasTxnLimit() bool { return r.Limits != nil && r.Limits.Txn > 0 }

func (r *Report) goal(figure, value, goal string, pass bool) {
	r.Goals = append(r.Goals, Goal{Figure: figure, Value: value, Goal: goal, Pass: pass})
}

// PeakRSS returns each service's peak resident memory over the stages
// run at n clusters.
func (r *Report) PeakRSS(n int) map[string]int64 {
	out := map[string]int64{}
	merge := func(m map[string]int64) {
		for k, v := range m {
			out[k] = max(out[k], v)
		}
	}
	for _, ro := range r.Rollouts {
		if ro.Clusters == n {
			merge(ro.PeakRSS)
		}
	}
	for _, rc := range r.Recoveries {
		if rc.Clusters == n {
			merge(rc.PeakRSS)
		}
	}
	return out
}

// WriteTable prints the report for people.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "flotilla bench on the %s broker, %s, in %s\n", r.Broker, r.Started.Format("2006-01-02 15:04 UTC"), time.Duration(r.Elapsed*float64(time.Second)).Round(time.Second))
	r.writeLimits(tw)
	r.writeRollouts(tw)
	r.writeReaction(tw)
	r.writeRecoveries(tw)
	fmt.Fprintf(tw, "\nGOALS (issue 9; a goal missed does not fail the run)\nFIGURE\tVALUE\tGOAL\tRESULT\n")
	for _, g := range r.Goals {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", g.Figure, g.Value, g.Goal, passFail(g.Pass))
	}
	return tw.Flush()
}

func (r *Report) writeLimits(w io.Writer) {
	l := r.Limits
	if l == nil {
		return
	}
	fmt.Fprintf(w, "\nLIMITS: raw franz-go, %s records of %d bytes (Avro commands and operation events)\n", count(l.Records), l.RecordBytes)
	fmt.Fprintf(w, "produce\t%s records/s\t%.1f MB/s\n", count(int(l.Produce)), l.ProduceMBps)
	fmt.Fprintf(w, "consume (read committed)\t%s records/s\t\n", count(int(l.Consume)))
	perTxn := 0
	if l.TxnCommits > 0 {
		perTxn = l.Records / l.TxnCommits
	}
	fmt.Fprintf(w, "transactional consume→produce\t%s records/s\t%s transactions of %s records on average\n", count(int(l.Txn)), count(l.TxnCommits), count(perTxn))
	writeProblem(w, "", l.Error)
}

func (r *Report) writeRollouts(w io.Writer) {
	if len(r.Rollouts) == 0 {
		return
	}
	fmt.Fprintf(w, "\nROLLOUT: upgrade every kafka cluster, instant operations, one phase of one wave, maxInFlight %s\n", count(r.InFlight))
	fmt.Fprintf(w, "CLUSTERS\tTARGETS\tCOMPLETED\tSECONDS\tOPS/S\tOF RAW TXN (GOAL ≥ 20%%)\tMAX IN FLIGHT\tTOTAL SECONDS\n")
	for _, ro := range r.Rollouts {
		ratio := "- (no limits stage)"
		if r.hasTxnLimit() {
			ratio = pct(ro.TxnRatio) + " " + passFail(ro.Finished && ro.TxnRatio >= goalTxnRatio)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%.1f\t%s\t%s\t%s\t%.1f\n", count(ro.Clusters), count(ro.Targets), count(ro.Completed), ro.Seconds,
			count(int(ro.OpsPerSecond)), ratio, count(ro.MaxInFlight), ro.TotalSeconds)
	}
	for _, ro := range r.Rollouts {
		writeProblem(w, count(ro.Clusters)+" clusters: ", ro.Note)
		if ro.Note == "" {
			writeProblem(w, count(ro.Clusters)+" clusters: ", ro.Error)
		}
	}
}

func (r *Report) writeReaction(w io.Writer) {
	re := r.Reaction
	if re == nil {
		return
	}
	fmt.Fprintf(w, "\nREACTION: unhealthy signal written → pause committed, %s clusters, %s targets, maxInFlight %s, operations of %gs, %d at a time\n",
		count(re.Clusters), count(re.Targets), count(re.InFlightLimit), re.OpSeconds, re.ExecutorConcurrency)
	fmt.Fprintf(w, "TRIAL\tCLUSTER\tIN FLIGHT\tMILLISECONDS\tFINISHED IN PAUSE\tCOMMANDS AFTER PAUSE\n")
	for i, t := range re.Trials {
		fmt.Fprintf(w, "%d\t%s\t%s\t%.1f\t%d\t%d\n", i+1, t.Cluster, count(t.InFlight), t.Millis, t.FinishedInPause, t.CommandsAfterPause)
	}
	ok := len(re.Trials) > 0
	fmt.Fprintf(w, "p50 %s, p99 %s (goal ≤ 250 ms: %s); commands after a pause: %d (goal 0: %s)\n", millis(re.P50Millis), millis(re.P99Millis),
		passFail(ok && re.P99Millis <= goalReactionP99), re.CommandsAfterPause, passFail(ok && re.CommandsAfterPause == 0))
	writeProblem(w, "", re.Note)
	if re.Note == "" {
		writeProblem(w, "", re.Error)
	}
}

func (r *Report) writeRecoveries(w io.Writer) {
	for _, rc := range r.Recoveries {
		fmt.Fprintf(w, "\nRECOVERY: %s clusters, %d finished rollouts, %s records in the topics; idle over %.0fs\n", count(rc.Clusters), rc.HistoryRollouts, count(int(rc.HistoryRecords)), rc.IdleSeconds)
		fmt.Fprintf(w, "SERVICE\tSTART→ACTING\tRECORDS READ\tCATCH-UP/S\tRAW/S\tRATIO (GOAL ≥ 50%%)\tPEAK RSS (GOAL ≤ 300 MiB)\tIDLE CORES\n")
		rss := r.PeakRSS(rc.Clusters)
		for _, s := range rc.Services {
			acting, ratio := "did not act", "-"
			if s.Acted {
				acting = fmt.Sprintf("%.2fs", s.ActingSeconds)
			}
			if s.Acted && s.Records > 0 {
				ratio = pct(s.Ratio) + " " + passFail(s.Ratio >= goalCatchUpRatio)
			}
			mem := "-"
			if v, ok := rss[s.Service]; ok {
				mem = mibs(v) + " " + passFail(v <= goalRSS)
			}
			idle := "-"
			if v, ok := rc.IdleCores[s.Service]; ok {
				idle = cores(v)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Service, acting, count(int(s.Records)), count(int(s.CatchUp)), count(int(s.Raw)), ratio, mem, idle)
		}
		if rc.IdleSeconds > 0 {
			fmt.Fprintf(w, "idle fleet: %s (goal %s: %s)\n", cores(rc.IdleCoresTotal), goalIdleCoresText, passFail(rc.IdleCoresTotal < goalIdleCores))
		}
		fmt.Fprintf(w, "(the notifier reads no topic from its start: it goes on from its group's committed offsets)\n")
		writeProblem(w, "", rc.Note)
		if rc.Note == "" {
			writeProblem(w, "", rc.Error)
		}
	}
}

func writeProblem(w io.Writer, prefix, text string) {
	if text != "" {
		fmt.Fprintf(w, "%s%s\n", prefix, text)
	}
}

func passFail(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}

func millis(ms float64) string { return fmt.Sprintf("%.0f ms", ms) }
func mibs(b int64) string      { return fmt.Sprintf("%d MiB", b/mib) }
func cores(c float64) string   { return fmt.Sprintf("%.3f cores", c) }

// pct writes a ratio as a percentage, with a decimal below 10%.
func pct(x float64) string {
	if x < 0.1 {
		return fmt.Sprintf("%.1f%%", 100*x)
	}
	return fmt.Sprintf("%.0f%%", 100*x)
}

// count writes n with thousands separators: 100,000.
func count(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + count(-n)
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
