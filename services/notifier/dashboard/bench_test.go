package dashboard

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/simfleet"
)

// fleetModel is a model of n simulated clusters, each with a health signal.
func fleetModel(b *testing.B, n int) *Model {
	b.Helper()
	m := NewModel()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range simfleet.GenerateClusters(n) {
		m.ApplyCluster(c.ID, &c)
		h := records.Health{ClusterID: c.ID, Status: testStatuses[rng.IntN(3)], ObservedVersion: c.Version,
			Details: map[string]string{"brokers.online": "3", "brokers.expected": "3", "controller": "1"}}
		m.ApplyHealth(c.ID, &h)
	}
	m.markReady()
	return m
}

// The fleet page and a health signal cost the same with 100,000 clusters
// as with 1,000 (the counts are kept, never recounted); a selector costs
// what it picks. Compare the sizes: go test -bench . -run ^$ ./services/notifier/dashboard
func BenchmarkFleet(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		m := fleetModel(b, n)
		b.Run(fmt.Sprintf("clusters=%d/all", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := m.Fleet("", "region", 1); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("clusters=%d/selector-one-region", n), func(b *testing.B) {
			// The index narrows the search to one region (a fifth of the fleet).
			for b.Loop() {
				if _, err := m.Fleet("region=eu-west-1,env=prod", "tier", 1); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("clusters=%d/health-signal", n), func(b *testing.B) {
			ids := m.sortedIDs()
			i := 0
			for b.Loop() {
				id := ids[i%len(ids)]
				i++
				m.ApplyHealth(id, &records.Health{ClusterID: id, Status: testStatuses[i%3], ObservedVersion: "3.9.1"})
			}
		})
	}
}

// BenchmarkModelMemory reports the heap a model of 100,000 clusters holds.
func BenchmarkModelMemory(b *testing.B) {
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m := fleetModel(b, 100_000)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB/100k-clusters")
		runtime.KeepAlive(m)
	}
}
