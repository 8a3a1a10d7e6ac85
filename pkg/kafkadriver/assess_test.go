package kafkadriver

import (
	"errors"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// meta builds cluster metadata: brokers 1..n, the controller, and topics
// whose partitions are given as "leader/replicas/isr" triples.
func meta(brokers int, controller int32, topics map[string][][3]int) kadm.Metadata {
	m := kadm.Metadata{Controller: controller, Topics: kadm.TopicDetails{}}
	for i := 1; i <= brokers; i++ {
		m.Brokers = append(m.Brokers, kgo.BrokerMetadata{NodeID: int32(i), Host: "k", Port: 9092})
	}
	for name, parts := range topics {
		td := kadm.TopicDetail{Topic: name, Partitions: kadm.PartitionDetails{}}
		for p, lri := range parts {
			pd := kadm.PartitionDetail{Topic: name, Partition: int32(p), Leader: int32(lri[0])}
			for r := 1; r <= lri[1]; r++ {
				pd.Replicas = append(pd.Replicas, int32(r))
			}
			pd.ISR = pd.Replicas[:lri[2]]
			td.Partitions[int32(p)] = pd
		}
		m.Topics[name] = td
	}
	return m
}

func TestAssess(t *testing.T) {
	healthyParts := [][3]int{{1, 3, 3}, {2, 3, 3}, {3, 3, 3}}
	versions := map[int32]string{1: "4.1", 2: "4.0", 3: "4.1"}
	for _, tc := range []struct {
		name     string
		view     view
		expected int
		status   records.HealthStatus
		reasons  []string
		details  map[string]string // a subset of the details
	}{
		{
			name:     "healthy",
			view:     view{meta: meta(3, 2, map[string][][3]int{"orders": healthyParts}), versions: versions},
			expected: 3,
			status:   records.HealthHealthy,
			details: map[string]string{
				"brokers.online": "3", "brokers.expected": "3", "controller": "2", "partitions.total": "3",
				"partitions.offline": "0", "partitions.under_replicated": "0", "partitions.under_min_isr": "0",
				"version.broker.1": "4.1", "version.broker.2": "4.0", "version.broker.3": "4.1",
			},
		},
		{
			name:     "expected brokers unset: any number will do",
			view:     view{meta: meta(1, 1, nil), versions: map[int32]string{1: "4.1"}},
			status:   records.HealthHealthy,
			details:  map[string]string{"brokers.online": "1"},
			expected: 0,
		},
		{
			name:     "fewer brokers than expected",
			view:     view{meta: meta(2, 1, map[string][][3]int{"orders": healthyParts}), versions: versions},
			expected: 3,
			status:   records.HealthUnhealthy,
			reasons:  []string{"2 of 3 brokers online"},
		},
		{
			name:    "no controller",
			view:    view{meta: meta(3, -1, nil)},
			status:  records.HealthUnhealthy,
			reasons: []string{"no active controller"},
			details: map[string]string{"controller": "none"},
		},
		{
			name: "offline partitions",
			view: view{meta: meta(3, 1, map[string][][3]int{
				"orders":   {{-1, 3, 0}, {-1, 3, 1}, {1, 3, 3}},
				"payments": {{-1, 3, 0}},
			})},
			status:  records.HealthUnhealthy,
			reasons: []string{"3 partitions offline"},
			details: map[string]string{"partitions.offline": "3", "partitions.under_replicated": "0"},
		},
		{
			name: "under-replicated but within min ISR: degraded",
			view: view{
				meta:   meta(3, 1, map[string][][3]int{"orders": {{1, 3, 2}, {2, 3, 3}}}),
				minISR: map[string]int{"orders": 2},
			},
			status:  records.HealthDegraded,
			reasons: []string{"1 partition under-replicated (orders)"},
			details: map[string]string{"partitions.under_replicated": "1", "partitions.under_min_isr": "0"},
		},
		{
			name: "below min ISR: unhealthy",
			view: view{
				meta: meta(3, 1, map[string][][3]int{
					"orders":   {{1, 3, 1}, {2, 3, 1}, {3, 3, 2}},
					"payments": {{1, 3, 1}},
				}),
				minISR: map[string]int{"orders": 2, "payments": 1},
			},
			status:  records.HealthUnhealthy,
			reasons: []string{"2 partitions below min.insync.replicas (orders)", "4 partitions under-replicated (orders, payments)"},
			details: map[string]string{"partitions.under_replicated": "4", "partitions.under_min_isr": "2"},
		},
		{
			name: "min ISR unreadable: degraded, not guessed",
			view: view{
				meta:       meta(3, 1, map[string][][3]int{"orders": {{1, 3, 1}}}),
				minISRErrs: map[string]error{"orders": errors.New("TOPIC_AUTHORIZATION_FAILED")},
			},
			status: records.HealthDegraded,
			reasons: []string{
				"1 partition under-replicated (orders)",
				"could not read min.insync.replicas of orders: TOPIC_AUTHORIZATION_FAILED",
			},
		},
		{
			name: "everything at once",
			view: view{
				meta:   meta(2, -1, map[string][][3]int{"a": {{-1, 3, 0}}, "b": {{1, 3, 1}}, "c": {{1, 2, 1}}, "d": {{1, 2, 1}}, "e": {{1, 2, 1}}}),
				minISR: map[string]int{"b": 2, "c": 1, "d": 1, "e": 1},
			},
			expected: 3,
			status:   records.HealthUnhealthy,
			reasons: []string{
				"2 of 3 brokers online", "no active controller", "1 partition offline",
				"1 partition below min.insync.replicas (b)", "4 partitions under-replicated (b, c, d and 1 more)",
			},
		},
		{
			name: "a broker not answering ApiVersions",
			view: view{
				meta:        meta(3, 1, nil),
				versions:    map[int32]string{1: "4.1", 3: "4.1"},
				versionErrs: map[int32]error{2: errors.New("connection refused")},
			},
			status:  records.HealthDegraded,
			reasons: []string{"broker 2 did not answer ApiVersions: connection refused"},
			details: map[string]string{"version.broker.2": "unknown", "version.broker.1": "4.1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := assess(tc.view, tc.expected)
			if a.status != tc.status {
				t.Errorf("status = %s, want %s", a.status, tc.status)
			}
			if !slices.Equal(a.reasons, tc.reasons) {
				t.Errorf("reasons = %q, want %q", a.reasons, tc.reasons)
			}
			for k, want := range tc.details {
				if got := a.details[k]; got != want {
					t.Errorf("details[%s] = %q, want %q", k, got, want)
				}
			}
			if tc.expected == 0 {
				if _, ok := a.details["brokers.expected"]; ok {
					t.Error("brokers.expected reported though none was set")
				}
			}
		})
	}
}

func TestAssessVersionIsLowest(t *testing.T) {
	a := assess(view{meta: meta(3, 1, nil), versions: map[int32]string{1: "4.1", 2: "3.9", 3: "at least 4.4"}}, 0)
	if a.version != "3.9" {
		t.Errorf("version = %q, want the lowest, 3.9", a.version)
	}
}

func TestVersionLess(t *testing.T) {
	for _, tc := range []struct {
		x, y string
		less bool
	}{
		{"3.9", "4.0", true},
		{"4.0", "3.9", false},
		{"3.10", "3.9", false},
		{"at least 4.4", "4.1", false},
		{"4.1", "at least 4.4", true},
		{"unknown custom version", "0.8.0", true},
		{"4.1", "4.1.1", true},
	} {
		if got := versionLess(tc.x, tc.y); got != tc.less {
			t.Errorf("versionLess(%q, %q) = %v", tc.x, tc.y, got)
		}
	}
}

// apiVersions is the ApiVersions answer of a broker that supports vs.
func apiVersions(vs *kversion.Versions) *kmsg.ApiVersionsResponse {
	resp := kmsg.NewPtrApiVersionsResponse()
	vs.EachMaxKeyVersion(func(k, v int16) {
		key := kmsg.NewApiVersionsResponseApiKey()
		key.ApiKey, key.MaxVersion = k, v
		resp.ApiKeys = append(resp.ApiKeys, key)
	})
	return resp
}

func TestGuessVersion(t *testing.T) {
	for _, tc := range []struct {
		name string
		vs   *kversion.Versions
		want string
	}{
		{"kafka 3.9", kversion.V3_9_0(), "3.9"},
		{"kafka 4.0", kversion.V4_0_0(), "4.0"},
		{"kafka 4.1", kversion.V4_1_0(), "4.1"},
	} {
		if got := guessVersion(apiVersions(tc.vs)); got != tc.want {
			t.Errorf("%s: guess %q, want %q", tc.name, got, tc.want)
		}
	}

	// A broker implementing only part of 4.1's API (as kfake does) still
	// gets a version, not a range.
	partial := kversion.V4_1_0()
	resp := apiVersions(partial)
	resp.ApiKeys = slices.DeleteFunc(resp.ApiKeys, func(k kmsg.ApiVersionsResponseApiKey) bool {
		return k.ApiKey >= 38 && k.ApiKey <= 41 // delegation tokens
	})
	if got := guessVersion(resp); got != "4.1" && got != "at least 4.1" {
		t.Errorf("partial 4.1: guess %q", got)
	}
}
