package kafkadriver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
)

// Probe implements [drivers.Prober]. It reads the cluster's metadata (fresh,
// never cached), asks every broker for its ApiVersions, reads
// min.insync.replicas of the topics that have under-replicated partitions,
// and reads the managed configs; see [assess] for how that becomes a status
// and its reasons ("2 of 3 brokers online", "3 partitions offline").
//
// Version is the lowest of the brokers' version guesses: "4.1" for Kafka
// 4.1.x (patch versions cannot be told apart), "at least 4.4" for a version
// newer than franz-go knows. Details hold what was measured:
// brokers.online, brokers.expected (when set), controller (a broker ID or
// "none"), partitions.total, partitions.offline,
// partitions.under_replicated, partitions.under_min_isr,
// version.broker.<id> for each broker, and config.<key> for each managed
// config ("mixed: 1=a, 2=b" when the brokers disagree).
//
// ConfigHash is "" when the cluster has no managed.configs, else the first
// 16 hex digits of a SHA-256 over every managed key's value: a
// cluster-wide key's value on each online broker, a broker key's on its
// broker, a topic key's on its topic ("(no such topic)" when it does not
// exist). Sensitive values read as nothing, so changes to them do not show.
//
// Probe fails when the cluster's settings are invalid ([ErrInvalidSetting]),
// when its metadata cannot be read (unreachable, authentication failed) or
// when its managed configs cannot be read; the monitor then reports it
// unhealthy with the error as the reason.
func (d *Driver) Probe(ctx context.Context, c inventory.Cluster) (drivers.Observation, error) {
	cl, release, err := d.acquire(c)
	if err != nil {
		return drivers.Observation{}, err
	}
	defer release()

	v, err := observe(ctx, cl)
	if err != nil {
		return drivers.Observation{}, fmt.Errorf("cluster %s (%s): %w", c.ID, c.Address, err)
	}
	a := assess(v, cl.set.expectedBrokers)
	obs := drivers.Observation{Status: a.status, Reasons: a.reasons, Version: a.version, Details: a.details}
	if len(cl.set.managed) > 0 {
		h, values, err := managedHash(ctx, cl, v.meta)
		if err != nil {
			return drivers.Observation{}, fmt.Errorf("cluster %s (%s): read managed configs: %w", c.ID, c.Address, err)
		}
		obs.ConfigHash = h
		obs.Config = values // the managed keys, as written in a config operation
		for k, val := range values {
			obs.Details["config."+k] = val
		}
	}
	return obs, nil
}

// view is what one probe read of a cluster: the input of [assess].
type view struct {
	meta kadm.Metadata
	// minISR is min.insync.replicas of each topic with under-replicated
	// partitions (only those are read, to keep a probe cheap).
	minISR map[string]int
	// minISRErrs are the topics whose min.insync.replicas could not be
	// read.
	minISRErrs map[string]error
	// versions are the brokers' version guesses, by node ID; a broker
	// whose ApiVersions failed has an entry in versionErrs instead.
	versions    map[int32]string
	versionErrs map[int32]error
}

// observe reads a view of the cluster.
func observe(ctx context.Context, cl *client) (view, error) {
	meta, err := freshMetadata(ctx, cl)
	if err != nil {
		return view{}, fmt.Errorf("read metadata: %w", err)
	}
	v := view{meta: meta, minISR: map[string]int{}, minISRErrs: map[string]error{}}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		v.versions, v.versionErrs = brokerVersions(ctx, cl, meta)
	}()

	var underReplicated []string
	for _, t := range meta.Topics {
		for _, p := range t.Partitions {
			if p.Leader >= 0 && len(p.ISR) < len(p.Replicas) {
				underReplicated = append(underReplicated, t.Topic)
				break
			}
		}
	}
	if len(underReplicated) > 0 {
		rctx, cancel := cl.set.roundTrip(ctx)
		rcs, err := cl.adm.DescribeTopicConfigs(rctx, underReplicated...)
		cancel()
		for _, t := range underReplicated {
			v.minISRErrs[t] = err // overwritten below for the topics that answered
		}
		for _, rc := range rcs {
			if rc.Err != nil {
				v.minISRErrs[rc.Name] = rc.Err
				continue
			}
			n := 1 // Kafka's default
			for _, c := range rc.Configs {
				if c.Key == "min.insync.replicas" {
					if i, err := strconv.Atoi(c.MaybeValue()); err == nil {
						n = i
					}
				}
			}
			v.minISR[rc.Name] = n
			delete(v.minISRErrs, rc.Name)
		}
		for t, err := range v.minISRErrs {
			if err == nil {
				v.minISRErrs[t] = errors.New("not in the answer")
			}
		}
	}
	wg.Wait()
	return v, nil
}

// freshMetadata reads the metadata of every topic from the cluster. kadm's
// Metadata may answer from a cache a few seconds old; a probe must not.
func freshMetadata(ctx context.Context, cl *client) (kadm.Metadata, error) {
	rctx, cancel := cl.set.roundTrip(ctx)
	defer cancel()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(rctx, cl.kgo)
	if err != nil {
		return kadm.Metadata{}, err
	}
	m := kadm.Metadata{Controller: resp.ControllerID, Topics: kadm.TopicDetails{}}
	if resp.ClusterID != nil {
		m.Cluster = *resp.ClusterID
	}
	for _, b := range resp.Brokers {
		m.Brokers = append(m.Brokers, kgo.BrokerMetadata{NodeID: b.NodeID, Host: b.Host, Port: b.Port, Rack: b.Rack})
	}
	sort.Slice(m.Brokers, func(i, j int) bool { return m.Brokers[i].NodeID < m.Brokers[j].NodeID })
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			// Not ours to judge (e.g. not authorized to describe it).
			continue
		}
		td := kadm.TopicDetail{Topic: *t.Topic, ID: t.TopicID, IsInternal: t.IsInternal, Partitions: kadm.PartitionDetails{}}
		for _, p := range t.Partitions {
			td.Partitions[p.Partition] = kadm.PartitionDetail{
				Topic: td.Topic, Partition: p.Partition, Leader: p.Leader, LeaderEpoch: p.LeaderEpoch,
				Replicas: p.Replicas, ISR: p.ISR, OfflineReplicas: p.OfflineReplicas,
				Err: kerr.ErrorForCode(p.ErrorCode),
			}
		}
		m.Topics[td.Topic] = td
	}
	return m, nil
}

// brokerVersions asks every broker of meta for its ApiVersions, in
// parallel, and guesses the Kafka version it runs.
func brokerVersions(ctx context.Context, cl *client, meta kadm.Metadata) (map[int32]string, map[int32]error) {
	versions, errs := map[int32]string{}, map[int32]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, b := range meta.Brokers {
		wg.Add(1)
		go func(id int32) {
			defer wg.Done()
			rctx, cancel := cl.set.roundTrip(ctx)
			defer cancel()
			req := kmsg.NewPtrApiVersionsRequest()
			req.ClientSoftwareName, req.ClientSoftwareVersion = "flotilla", "1"
			resp, err := req.RequestWith(rctx, cl.kgo.Broker(int(id)))
			if err == nil {
				err = kerr.ErrorForCode(resp.ErrorCode)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[id] = err
				return
			}
			versions[id] = guessVersion(resp)
		}(b.NodeID)
	}
	wg.Wait()
	return versions, errs
}

// defaultSkipKeys are the keys kversion skips by default (broker-to-broker
// requests and telemetry); passing SkipKeys replaces them, so we repeat
// them.
var defaultSkipKeys = []int16{4, 5, 6, 7, 27, 56, 57, 58, 67, 71, 72}

// guessVersion guesses the Kafka version a broker runs from its
// ApiVersions. Real Kafka gets an exact guess ("v4.1"). Kafka-protocol
// brokers that implement only part of the API (kfake, Redpanda) confuse the
// guess into a range; for those we guess again from only the keys the
// broker has ("at least v3.9"). The leading "v" is dropped, as inventory
// versions have none.
func guessVersion(resp *kmsg.ApiVersionsResponse) string {
	vs := kversion.FromApiVersionsResponse(resp)
	g := vs.VersionGuess()
	if !strings.HasPrefix(g, "v") && !strings.HasPrefix(g, "at least v") {
		have := map[int16]bool{}
		for _, k := range resp.ApiKeys {
			have[k.ApiKey] = true
		}
		skip := append([]int16(nil), defaultSkipKeys...)
		for k := int16(0); k <= maxKnownKey(); k++ {
			if !have[k] {
				skip = append(skip, k)
			}
		}
		if g2 := vs.VersionGuess(kversion.SkipKeys(skip...)); strings.HasPrefix(g2, "v") || strings.HasPrefix(g2, "at least v") {
			g = g2
		}
	}
	return versionRE.ReplaceAllString(g, "$1")
}

var versionRE = regexp.MustCompile(`\bv(\d+\.\d+(?:\.\d+)?)`)

// maxKnownKey is the highest request key kversion knows of.
var maxKnownKey = sync.OnceValue(func() int16 {
	var hi int16
	kversion.Tip().EachMaxKeyVersion(func(k, _ int16) {
		if k > hi {
			hi = k
		}
	})
	return hi
})

// assessment is the health a view shows.
type assessment struct {
	status  records.HealthStatus
	reasons []string
	details map[string]string
	version string // lowest broker version guess

	offline, underMinISR, underReplicated int
}

// assess judges a view of a cluster, expecting expected brokers (0: any
// number). It is unhealthy when fewer brokers than expected are online, no
// controller is active, partitions are offline (no leader) or, among the
// online ones, have fewer in-sync replicas than their topic's
// min.insync.replicas (producers with acks=all fail on them); degraded when
// online partitions are under-replicated or a broker did not answer
// ApiVersions or a topic's min.insync.replicas could not be read; healthy
// otherwise.
func assess(v view, expected int) assessment {
	a := assessment{status: records.HealthHealthy, details: map[string]string{}}
	unhealthy := func(format string, args ...any) {
		a.status = records.HealthUnhealthy
		a.reasons = append(a.reasons, fmt.Sprintf(format, args...))
	}
	degraded := func(format string, args ...any) {
		if a.status == records.HealthHealthy {
			a.status = records.HealthDegraded
		}
		a.reasons = append(a.reasons, fmt.Sprintf(format, args...))
	}

	online := len(v.meta.Brokers)
	a.details["brokers.online"] = strconv.Itoa(online)
	if expected > 0 {
		a.details["brokers.expected"] = strconv.Itoa(expected)
		if online < expected {
			unhealthy("%d of %d brokers online", online, expected)
		}
	}
	if v.meta.Controller < 0 {
		a.details["controller"] = "none"
		unhealthy("no active controller")
	} else {
		a.details["controller"] = strconv.Itoa(int(v.meta.Controller))
	}

	var total int
	var minISRTopics, underRepTopics []string
	for _, name := range v.meta.Topics.Names() {
		t := v.meta.Topics[name]
		var belowMin, underRep bool
		for _, p := range t.Partitions {
			total++
			switch {
			case p.Leader < 0:
				a.offline++
			case len(p.ISR) < len(p.Replicas):
				a.underReplicated++
				underRep = true
				if min, ok := v.minISR[name]; ok && len(p.ISR) < min {
					a.underMinISR++
					belowMin = true
				}
			}
		}
		if belowMin {
			minISRTopics = append(minISRTopics, name)
		}
		if underRep {
			underRepTopics = append(underRepTopics, name)
		}
	}
	a.details["partitions.total"] = strconv.Itoa(total)
	a.details["partitions.offline"] = strconv.Itoa(a.offline)
	a.details["partitions.under_replicated"] = strconv.Itoa(a.underReplicated)
	a.details["partitions.under_min_isr"] = strconv.Itoa(a.underMinISR)
	if a.offline > 0 {
		unhealthy("%s offline", plural(a.offline, "partition"))
	}
	if a.underMinISR > 0 {
		unhealthy("%s below min.insync.replicas (%s)", plural(a.underMinISR, "partition"), listSome(minISRTopics))
	}
	if a.underReplicated > 0 {
		degraded("%s under-replicated (%s)", plural(a.underReplicated, "partition"), listSome(underRepTopics))
	}
	if len(v.minISRErrs) > 0 {
		topics := make([]string, 0, len(v.minISRErrs))
		for t := range v.minISRErrs {
			topics = append(topics, t)
		}
		sort.Strings(topics)
		degraded("could not read min.insync.replicas of %s: %v", listSome(topics), v.minISRErrs[topics[0]])
	}

	ids := make([]int32, 0, len(v.versions)+len(v.versionErrs))
	for id := range v.versions {
		ids = append(ids, id)
	}
	for id := range v.versionErrs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		key := fmt.Sprintf("version.broker.%d", id)
		if err, ok := v.versionErrs[id]; ok {
			a.details[key] = "unknown"
			degraded("broker %d did not answer ApiVersions: %v", id, err)
			continue
		}
		a.details[key] = v.versions[id]
		if a.version == "" || versionLess(v.versions[id], a.version) {
			a.version = v.versions[id]
		}
	}
	return a
}

// versionLess orders version guesses by the first version number in them
// ("3.9" < "at least 4.1" < "4.2"); guesses without a number sort first.
func versionLess(x, y string) bool {
	nx, ny := versionNumbers(x), versionNumbers(y)
	for i := 0; i < len(nx) && i < len(ny); i++ {
		if nx[i] != ny[i] {
			return nx[i] < ny[i]
		}
	}
	if len(nx) != len(ny) {
		return len(nx) < len(ny)
	}
	return x < y
}

var numbersRE = regexp.MustCompile(`\d+(?:\.\d+)*`)

func versionNumbers(s string) []int {
	m := numbersRE.FindString(s)
	if m == "" {
		return nil
	}
	var out []int
	for _, p := range strings.Split(m, ".") {
		n, _ := strconv.Atoi(p)
		out = append(out, n)
	}
	return out
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// listSome lists up to three names, and how many more there are.
func listSome(names []string) string {
	const most = 3
	if len(names) <= most {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:most], ", "), len(names)-most)
}

// managedHash reads the cluster's managed configs and returns their hash
// and, for people, each managed key's value ("mixed: 1=a, 2=b" when the
// brokers disagree). A cluster-wide key is read on every online broker.
func managedHash(ctx context.Context, cl *client, meta kadm.Metadata) (string, map[string]string, error) {
	var want wanted
	for _, k := range cl.set.managed {
		want.add(k, meta)
	}
	cv, err := describe(ctx, cl, want)
	if err != nil {
		return "", nil, err
	}
	var lines []string
	values := map[string]string{}
	for _, k := range cl.set.managed {
		switch k.scope {
		case scopeTopic:
			val := cv.topicValue(k.topic, k.key)
			lines = append(lines, fmt.Sprintf("topic/%s/%s=%s", k.topic, k.key, val))
			values[k.String()] = val
		case scopeBroker:
			val := cv.brokerValue(k.broker, k.key)
			lines = append(lines, fmt.Sprintf("broker/%d/%s=%s", k.broker, k.key, val))
			values[k.String()] = val
		case scopeCluster:
			var per []string
			seen := map[string]bool{}
			for _, b := range meta.Brokers {
				val := cv.brokerValue(b.NodeID, k.key)
				lines = append(lines, fmt.Sprintf("broker/%d/%s=%s", b.NodeID, k.key, val))
				per = append(per, fmt.Sprintf("%d=%s", b.NodeID, val))
				seen[val] = true
			}
			switch {
			case len(seen) == 1:
				for val := range seen {
					values[k.String()] = val
				}
			case len(seen) > 1:
				values[k.String()] = "mixed: " + strings.Join(per, ", ")
			}
		}
	}
	sort.Strings(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(sum[:8]), values, nil
}
