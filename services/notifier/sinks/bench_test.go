package sinks

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// BenchmarkDelivery measures a webhook destination's throughput: b.N
// notifications of 60 workflows, over the test topics' partitions, to a
// receiver that takes 2 ms to answer each. ns/op is the time per
// notification, from the first written to the last committed.
func BenchmarkDelivery(b *testing.B) {
	bb := testBackbone(b)
	hook := newReceiver(b, clockwork.NewRealClock(), secretA, secretB)
	hook.respond = func(int, delivery, http.ResponseWriter, *http.Request) { time.Sleep(2 * time.Millisecond) }
	notes := make([]records.Notification, b.N)
	for i := range notes {
		notes[i] = note(fmt.Sprintf("n%d", i), "workflow.progress", records.SeverityInfo, fmt.Sprintf("wf-%d", i%60), "")
	}
	startSinks(b, Config{Backbone: bb, Routing: Routing{Destinations: []Destination{webhook("hook", hook.srv.URL)}}})
	b.ResetTimer()
	produceNotes(b, bb, notes...)
	awaitCommittedToEnd(b, bb, "hook")
	b.StopTimer()
	if got := len(hook.ids()); got < b.N {
		b.Fatalf("%d requests for %d notifications", got, b.N)
	}
}
