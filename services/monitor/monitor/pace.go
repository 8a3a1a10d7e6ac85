package monitor

import (
	"math"
	"time"
)

// bucket is a token bucket on the monitor's clock: rate tokens a second,
// holding up to one second's worth, so that a pause (no probe due) lets a
// burst of one second's work go at once and no more. It is not safe for
// concurrent use.
type bucket struct {
	every time.Duration // time one token takes to come
	burst time.Duration // how far behind now the bucket may fall: its capacity
	next  time.Time     // when the bucket, spent, has a token again
}

func newBucket(rate float64) *bucket {
	every := time.Duration(float64(time.Second) / rate)
	return &bucket{every: max(every, 1), burst: time.Second}
}

// ready returns when a token is there: now or earlier if one is.
func (b *bucket) ready(now time.Time) time.Time {
	return maxTime(b.next, now.Add(b.every-b.burst))
}

// take spends a token (which must be ready).
func (b *bucket) take(now time.Time) { b.next = b.ready(now).Add(b.every) }

// allow spends a token if one is there.
func (b *bucket) allow(now time.Time) bool {
	if b.ready(now).After(now) {
		return false
	}
	b.take(now)
	return true
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Pace is how often this copy probes and heartbeats each of its clusters.
type Pace struct {
	Clusters int
	// Interval is the time between two probes of a cluster: the
	// configured interval, or the time the probe budget takes to go
	// round the clusters if that is longer (Stretched).
	Interval  time.Duration
	Stretched bool
	// Heartbeat is the longest time without a signal for a cluster whose
	// health does not change: the configured heartbeat, or the time the
	// heartbeat budget takes to go round the clusters if that is longer.
	Heartbeat time.Duration
}

// pace returns the pace of a copy that owns n clusters.
func (c Config) pace(n int) Pace {
	round := func(rate float64) time.Duration {
		return time.Duration(math.Ceil(float64(n)/rate*1000)) * time.Millisecond
	}
	p := Pace{Clusters: n, Interval: c.Interval, Heartbeat: c.Heartbeat}
	if r := round(c.ProbeRate); r > p.Interval {
		p.Interval, p.Stretched = r, true
	}
	p.Heartbeat = max(p.Heartbeat, round(c.HeartbeatBudget))
	return p
}
