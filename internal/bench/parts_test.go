package bench

import (
	"testing"
	"time"
)

func TestParseVmHWM(t *testing.T) {
	got, err := parseVmHWM("Name:\tflotilla\nVmPeak:\t  900 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 1000 kB\n")
	if err != nil || got != 123456<<10 {
		t.Errorf("got %d, %v; want %d", got, err, 123456<<10)
	}
	if _, err := parseVmHWM("Name:\tflotilla\n"); err == nil {
		t.Error("no VmHWM: no error")
	}
}

func TestParseCPUTime(t *testing.T) {
	// pid (comm) state, then fields 4..13, then utime (14) and stime (15).
	stat := "4242 (flotilla bench) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1"
	got, err := parseCPUTime(stat)
	if want := 3 * time.Second; err != nil || got != want {
		t.Errorf("got %v, %v; want %v", got, err, want)
	}
	if _, err := parseCPUTime("4242 (x) S 1"); err == nil {
		t.Error("short stat: no error")
	}
}

func TestMaxInFlight(t *testing.T) {
	at := func(ms int) time.Time { return time.UnixMilli(int64(ms)) }
	l := &workflowLog{
		commands: map[string]time.Time{"a": at(0), "b": at(1), "c": at(5), "d": at(5), "e": at(9)},
		// c and d are sent in the millisecond a and b finish: they do
		// not count beside them.
		ends: map[string]time.Time{"a": at(5), "b": at(5), "c": at(7)},
	}
	if got := l.maxInFlight(); got != 2 {
		t.Errorf("max in flight %d, want 2", got)
	}
	if got := l.commandsBetween(at(1), at(9)); got != 2 {
		t.Errorf("%d commands strictly between, want 2 (c and d)", got)
	}
	first, last, ok := l.span()
	if !ok || !first.Equal(at(0)) || !last.Equal(at(7)) {
		t.Errorf("span %v..%v %v", first, last, ok)
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{30, 10, 20, 40, 50}
	for p, want := range map[float64]float64{50: 30, 99: 50, 1: 10} {
		if got := percentile(xs, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if got := percentile(nil, 99); got != 0 {
		t.Errorf("p99 of nothing = %v", got)
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 100000: "100,000", 1234567: "1,234,567", -2500: "-2,500"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}
