// Package topics is Flotilla's topic catalogue: the names of the topics its
// services share, the configuration each must have, the idempotent start-up
// step that creates and verifies them, and the partitioner that keeps every
// record of a workflow on one partition number across topics.
package topics

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultNamespace is the namespace used when none is given.
const DefaultNamespace = "fleet"

// DefaultPartitions is how many partitions each topic is created with
// unless told otherwise. A partition is the unit of work a service's copy
// owns, so it bounds how many copies of a service can share the work (12:
// up to 12 of each); it does not bound the operations in flight, which any
// partition holds as many of as the executor's concurrency allows. The
// count is fixed when a topic is created: Kafka can add partitions to a
// topic, but that moves keys to other partitions, which the services'
// state (rebuilt per partition) does not survive.
const DefaultPartitions = 12

// Names holds the name of every topic of one Flotilla installation. All names
// share the Namespace prefix, so several installations can share one Kafka
// cluster.
type Names struct {
	Namespace     string
	Inventory     string // cluster ID → cluster; compacted
	Policies      string // policy name → deployment policy; compacted
	Trust         string // "principal/NAME" or "role/NAME" → the trust store; compacted, one partition
	Requests      string // request ID → request; compacted
	Workflows     string // workflow ID or workflowID/clusterID → workflow row; compacted
	Commands      string // workflowID/clusterID → command; compacted
	Operations    string // workflowID/clusterID → operation; compacted
	Health        string // cluster ID → health; compacted
	History       string // clusterID/workflowID → how the workflow's operation on the cluster ended; compacted, deleted after retention
	Claims        string // clusterID/commandID → claim on a cluster; compacted
	Leases        string // "commands-N" → lease of the executor owning partition N of commands; compacted
	Notifications string // workflow or cluster ID → notification; deleted after retention
	DeadLetters   string // "topic/partition/offset" → a record a service could not use; deleted after retention
	Checkpoints   string // workflowID/@writer/bucket → signed checkpoint of a writer's hash chain; compacted
}

// NewNames returns the topic names for namespace ("" means DefaultNamespace):
// "<namespace>.inventory", "<namespace>.requests", and so on.
func NewNames(namespace string) Names {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	return Names{
		Namespace:     namespace,
		Inventory:     namespace + ".inventory",
		Policies:      namespace + ".policies",
		Trust:         namespace + ".trust",
		Requests:      namespace + ".requests",
		Workflows:     namespace + ".workflows",
		Commands:      namespace + ".commands",
		Operations:    namespace + ".operations",
		Health:        namespace + ".health",
		History:       namespace + ".history",
		Claims:        namespace + ".claims",
		Leases:        namespace + ".leases",
		Notifications: namespace + ".notifications",
		DeadLetters:   namespace + ".deadletters",
		Checkpoints:   namespace + ".checkpoints",
	}
}

// All returns every topic name, in catalogue order.
func (n Names) All() []string {
	return []string{n.Inventory, n.Policies, n.Trust, n.Requests, n.Workflows, n.Commands, n.Operations, n.Health, n.History, n.Claims, n.Leases, n.Notifications, n.DeadLetters, n.Checkpoints}
}

// Group returns the consumer group, and the stem of transactional IDs, of
// service in this namespace: "<namespace>.<service>". Keeping it under the
// namespace keeps two installations on one cluster from joining each other's
// groups or fencing each other's transactions.
func (n Names) Group(service string) string {
	return n.Namespace + "." + service
}

// Co-partitioning groups used by Catalogue.
const (
	// ByWorkflow groups the topics keyed by workflow ID (or
	// "workflowID/clusterID"): a workflow's rows must share one partition
	// number across them, so the planner's partition of a workflow sees
	// all of its requests, commands and operations.
	ByWorkflow = "workflow"
	// ByCluster groups the topics keyed by cluster ID.
	ByCluster = "cluster"
)

// Spec is one topic to create: its name, partition count and replication
// factor (-1 for either means the broker's default), and its configs.
type Spec struct {
	Name              string
	Partitions        int32
	ReplicationFactor int16
	Configs           map[string]*string
	// CoPartition names the group of topics that must have the same
	// number of partitions as this one ("" for none). Ensure checks it.
	CoPartition string
	// AtLeast are numeric configs that an existing topic must have at
	// least this value of: Ensure raises a lower (or unset) one, so that
	// a topic created by an older Flotilla gets it, and keeps a higher one
	// an operator chose. Catalogue also puts them in Configs, for topics
	// it creates.
	AtLeast map[string]int64
}

// MinCompactionLag is how long a record of the topics the notifier reads
// (workflows, operations, health) stays in the log before compaction may
// remove it, superseded by a later record of its key
// (min.compaction.lag.ms). The notifier announces every record it reads;
// one that compaction removed before the notifier got to it is never
// announced. So this is how far behind the notifier may fall (stopped,
// crashed, cut off from Kafka) and still miss nothing: a day covers a
// night or a weekend day without anyone noticing, at the cost of up to a
// day of records that tables of these topics (the planner's health table,
// its workflows, the executor's operations, the monitor's health) read
// uncompacted when they start. Past it, the notifier misses some of what
// happened while it was away (an operation's start, a wave's start, a
// health change followed by later signals); the last record of every key
// survives, so it still announces where each workflow, operation and
// cluster ended up, once.
const MinCompactionLag = 24 * time.Hour

// retentionYear is how long notifications are kept: long enough to audit a
// year of rollouts, short enough that the topic does not grow forever.
const retentionYear = 365 * 24 * time.Hour

// Catalogue returns the specs of every topic in n, each with partitions
// partitions and replicationFactor replicas (-1: broker default).
//
// Every topic but notifications is compacted: each holds state keyed so that
// the last record per key is what must survive (see DESIGN.md), and services
// rebuild from it on start. The topics the notifier reads (workflows,
// operations, health) also keep every record for MinCompactionLag before
// compaction may remove it, an AtLeast config. Notifications are a stream
// for people, deleted after a year. Nothing else is set, so the broker's
// defaults (and an operator's changes) apply to everything else.
func Catalogue(n Names, partitions int32, replicationFactor int16) []Spec {
	compact := func() map[string]*string {
		return map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}
	}
	spec := func(name, group string, configs map[string]*string) Spec {
		return Spec{Name: name, Partitions: partitions, ReplicationFactor: replicationFactor, Configs: configs, CoPartition: group}
	}
	notified := func(s Spec) Spec { // read by the notifier
		lag := MinCompactionLag.Milliseconds()
		s.Configs["min.compaction.lag.ms"] = kadm.StringPtr(strconv.FormatInt(lag, 10))
		s.AtLeast = map[string]int64{"min.compaction.lag.ms": lag}
		return s
	}
	// What users write is stamped with the broker's clock, not the
	// producer's: a signed record's time is checked against it (package
	// trust), and a key's expiry and revocation too.
	userWritten := func(s Spec) Spec {
		s.Configs["message.timestamp.type"] = kadm.StringPtr("LogAppendTime")
		return s
	}
	// The trust store is read whole by every service, in one order (an
	// admin's record before what its key signs): one partition.
	trust := userWritten(spec(n.Trust, "", compact()))
	trust.Partitions = 1
	return []Spec{
		userWritten(spec(n.Inventory, ByCluster, compact())),
		userWritten(spec(n.Policies, "", compact())), // every planner reads all of it
		trust,
		userWritten(spec(n.Requests, ByWorkflow, compact())),
		notified(spec(n.Workflows, ByWorkflow, compact())),
		spec(n.Commands, ByWorkflow, compact()),
		notified(spec(n.Operations, ByWorkflow, compact())),
		notified(spec(n.Health, ByCluster, compact())),
		// A cluster's operation history: one record per workflow that
		// changed it, the last word on each; kept for a year, as the
		// notifications that announced them.
		spec(n.History, ByCluster, map[string]*string{
			"cleanup.policy": kadm.StringPtr("compact,delete"),
			"retention.ms":   kadm.StringPtr(strconv.FormatInt(retentionYear.Milliseconds(), 10)),
		}),
		spec(n.Claims, ByCluster, compact()),
		spec(n.Leases, "", compact()), // a key per partition of commands; read whole
		spec(n.Notifications, "", map[string]*string{
			"cleanup.policy": kadm.StringPtr("delete"),
			"retention.ms":   kadm.StringPtr(strconv.FormatInt(retentionYear.Milliseconds(), 10)),
		}),
		// Bad records set aside, kept as long as the notifications that
		// announce them.
		spec(n.DeadLetters, "", map[string]*string{
			"cleanup.policy": kadm.StringPtr("delete"),
			"retention.ms":   kadm.StringPtr(strconv.FormatInt(retentionYear.Milliseconds(), 10)),
		}),
		// The writers' signed checkpoints of their hash chains: the last
		// of each key is what a verifier needs (package auditchain).
		spec(n.Checkpoints, ByWorkflow, compact()),
	}
}

// verifyTimeout bounds how long Ensure waits for newly created topics to
// appear in metadata; a broker propagates them asynchronously.
const verifyTimeout = 15 * time.Second

// Ensure creates every topic in specs that does not exist yet and verifies
// all of them. It is idempotent and safe to run from several processes at
// once: a topic that already exists (whoever created it, with whatever
// partition count) is left as it is.
//
// It then checks what the services rely on, and fails with an error naming
// the topics if it does not hold:
//   - topics with the same non-empty Spec.CoPartition have the same number of
//     partitions (otherwise a workflow's records would be split between
//     partitions owned by different planner instances);
//   - a topic whose spec asks for cleanup.policy=compact really is compacted
//     (otherwise the state the services rebuild from would be deleted).
//
// And it raises the Spec.AtLeast configs of existing topics that have less
// (a topic created by an older Flotilla), only those keys, with an
// incremental config change: running it again changes nothing. That is
// the one change it makes to an existing topic, and it needs the
// ALTER_CONFIGS permission on it; if the change is refused, Ensure fails
// naming the topic, the config and the value to set.
//
// Only missing topics are created, so Ensure needs no permission to create
// topics when they all exist. Creating fails on any broker error other than
// TOPIC_ALREADY_EXISTS (for example not being authorised, or a replication
// factor larger than the number of brokers). Newly created topics take a
// moment to appear in metadata and to get a leader serving each partition;
// Ensure waits for that (up to ctx's deadline, or 15 seconds for each), so
// that clients can use the topics as soon as it returns.
func Ensure(ctx context.Context, adm *kadm.Client, specs []Spec) error {
	// Create only what is missing, so that topics managed by someone
	// else need no permission to create topics. Existence is asked with
	// DescribeConfigs, not Metadata: kgo caches metadata answers for a
	// few seconds, "unknown topic" included, which would hide the topics
	// just created from the verification below. If even that is not
	// allowed, try creating everything.
	existing := make(map[string]bool)
	if rcs, err := adm.DescribeTopicConfigs(ctx, specNames(specs)...); err == nil {
		for _, rc := range rcs {
			existing[rc.Name] = rc.Err == nil
		}
	}
	// A topic new to an installation (added by a later Flotilla) gets the
	// partition count of the topics it is co-partitioned with, whatever
	// --partitions says now.
	groupCount, err := existingGroupCounts(ctx, adm, specs, existing)
	if err != nil {
		return err
	}
	var created []string
	for _, s := range specs {
		if existing[s.Name] {
			continue
		}
		created = append(created, s.Name)
		partitions := s.Partitions
		if n, ok := groupCount[s.CoPartition]; ok && s.CoPartition != "" {
			partitions = n
		}
		resp, err := adm.CreateTopics(ctx, partitions, s.ReplicationFactor, s.Configs, s.Name)
		if err != nil {
			return fmt.Errorf("create topic %s: %w", s.Name, err)
		}
		r, ok := resp[s.Name]
		if !ok {
			return fmt.Errorf("create topic %s: no answer from the broker", s.Name)
		}
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			if errors.Is(r.Err, kerr.TopicAuthorizationFailed) || errors.Is(r.Err, kerr.ClusterAuthorizationFailed) {
				return fmt.Errorf("create topic %s: %w: this principal may not create topics; create them as a Kafka administrator (flotilla acl apply does, with the ACLs)", s.Name, r.Err)
			}
			if r.ErrMessage != "" {
				return fmt.Errorf("create topic %s: %w: %s", s.Name, r.Err, r.ErrMessage)
			}
			return fmt.Errorf("create topic %s: %w", s.Name, r.Err)
		}
	}
	counts, err := partitionCounts(ctx, adm, specs)
	if err != nil {
		return err
	}
	if err := waitServed(ctx, adm, created); err != nil {
		return err
	}
	return errors.Join(checkCoPartitioned(specs, counts), checkCompacted(ctx, adm, specs), raiseAtLeast(ctx, adm, specs))
}

// existingGroupCounts returns, for each co-partitioning group with a topic
// that exists, that topic's partition count.
func existingGroupCounts(ctx context.Context, adm *kadm.Client, specs []Spec, existing map[string]bool) (map[string]int32, error) {
	var names []string
	for _, s := range specs {
		if s.CoPartition != "" && existing[s.Name] {
			names = append(names, s.Name)
		}
	}
	out := map[string]int32{}
	if len(names) == 0 {
		return out, nil
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("list topics %s: %w", strings.Join(names, ", "), err)
	}
	for _, s := range specs {
		if d, ok := details[s.Name]; ok && d.Err == nil && len(d.Partitions) > 0 && s.CoPartition != "" {
			if _, seen := out[s.CoPartition]; !seen {
				out[s.CoPartition] = int32(len(d.Partitions))
			}
		}
	}
	return out, nil
}

// partitionCounts describes specs' topics until all of them are visible in
// metadata, and returns their partition counts.
func partitionCounts(ctx context.Context, adm *kadm.Client, specs []Spec) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	names := specNames(specs)
	// kadm answers ListTopics from kgo's metadata cache, which keeps an
	// "unknown topic" answer for MetadataMinAge (5s): a topic created a
	// moment ago, not yet in the metadata of the broker asked (Kafka
	// propagates it asynchronously), would look missing for 5s. Asking for
	// authorized operations makes kadm send a metadata request every time.
	direct := kadm.WithAuthorizedOps(ctx)
	backoff := 20 * time.Millisecond
	for {
		details, err := adm.ListTopics(direct, names...)
		var missing error
		if err == nil {
			counts := make(map[string]int, len(names))
			for _, name := range names {
				d, ok := details[name]
				switch {
				case !ok:
					missing = fmt.Errorf("topic %s: not in metadata", name)
				case d.Err != nil:
					missing = fmt.Errorf("topic %s: %w", name, d.Err)
				case len(d.Partitions) == 0:
					missing = fmt.Errorf("topic %s: no partitions in metadata yet", name)
				default:
					counts[name] = len(d.Partitions)
				}
			}
			if missing == nil {
				return counts, nil
			}
		} else {
			missing = err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for topics to appear: %w (last: %w)", ctx.Err(), missing)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// waitServed waits until the leader of every partition of topics answers
// for it. Kafka lists a new topic's partitions in its metadata a moment
// before their leaders serve them; a producer coming in between is told
// NOT_LEADER_OR_FOLLOWER and, with kgo, waits out the metadata min age (5s)
// before it retries. Only a partition's leader lists its offsets, and kgo
// retries that at once on fresh metadata.
func waitServed(ctx context.Context, adm *kadm.Client, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	backoff := 20 * time.Millisecond
	for {
		listed, err := adm.ListEndOffsets(ctx, topics...)
		if err == nil {
			err = listed.Error()
		}
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the partitions of new topics to have a leader: %w (last: %w)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

func specNames(specs []Spec) []string {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	return names
}

func checkCoPartitioned(specs []Spec, counts map[string]int) error {
	first := make(map[string]string) // group → first topic of the group in specs
	var errs []error
	for _, s := range specs {
		if s.CoPartition == "" {
			continue
		}
		ref, ok := first[s.CoPartition]
		if !ok {
			first[s.CoPartition] = s.Name
			continue
		}
		if counts[s.Name] != counts[ref] {
			errs = append(errs, fmt.Errorf("%s has %d partitions but %s has %d: co-partitioned topics must match",
				s.Name, counts[s.Name], ref, counts[ref]))
		}
	}
	return errors.Join(errs...)
}

func checkCompacted(ctx context.Context, adm *kadm.Client, specs []Spec) error {
	var names []string
	for _, s := range specs {
		if v := s.Configs["cleanup.policy"]; v != nil && hasPolicy(*v, "compact") {
			names = append(names, s.Name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, names...)
	if err != nil {
		return fmt.Errorf("describe topic configs: %w", err)
	}
	var errs []error
	for _, name := range names {
		rc, err := rcs.On(name, nil)
		if err == nil {
			err = rc.Err
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("describe configs of %s: %w", name, err))
			continue
		}
		policy := ""
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" {
				policy = c.MaybeValue()
			}
		}
		if !hasPolicy(policy, "compact") {
			errs = append(errs, fmt.Errorf("%s has cleanup.policy=%q but must be compacted: its state would be deleted", name, policy))
		}
	}
	return errors.Join(errs...)
}

// raiseAtLeast sets the Spec.AtLeast configs of specs' topics that have a
// lower value (an unset config shows the broker's default).
func raiseAtLeast(ctx context.Context, adm *kadm.Client, specs []Spec) error {
	var names []string
	for _, s := range specs {
		if len(s.AtLeast) > 0 {
			names = append(names, s.Name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, names...)
	if err != nil {
		return fmt.Errorf("describe topic configs: %w", err)
	}
	var errs []error
	for _, s := range specs {
		if len(s.AtLeast) == 0 {
			continue
		}
		rc, err := rcs.On(s.Name, nil)
		if err == nil {
			err = rc.Err
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("describe configs of %s: %w", s.Name, err))
			continue
		}
		have := map[string]string{}
		for _, c := range rc.Configs {
			have[c.Key] = c.MaybeValue()
		}
		var alter []kadm.AlterConfig
		for _, key := range slices.Sorted(maps.Keys(s.AtLeast)) {
			want := s.AtLeast[key]
			if got, err := strconv.ParseInt(have[key], 10, 64); err == nil && got >= want {
				continue // as asked, or more
			}
			alter = append(alter, kadm.AlterConfig{Op: kadm.SetConfig, Name: key, Value: kadm.StringPtr(strconv.FormatInt(want, 10))})
		}
		if len(alter) == 0 {
			continue
		}
		resps, err := adm.AlterTopicConfigs(ctx, alter, s.Name)
		if err == nil {
			var r kadm.AlterConfigsResponse
			if r, err = resps.On(s.Name, nil); err == nil {
				err = r.Err
				if err != nil && r.ErrMessage != "" {
					err = fmt.Errorf("%w: %s", err, r.ErrMessage)
				}
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s must have %s: %w", s.Name, describeAlter(alter), err))
		}
	}
	return errors.Join(errs...)
}

func describeAlter(alter []kadm.AlterConfig) string {
	parts := make([]string, len(alter))
	for i, a := range alter {
		parts[i] = a.Name + "=" + *a.Value
	}
	return strings.Join(parts, ", ")
}

// hasPolicy reports whether the comma-separated cleanup.policy value holds want.
func hasPolicy(policy, want string) bool {
	return slices.ContainsFunc(strings.Split(policy, ","), func(p string) bool {
		return strings.TrimSpace(p) == want
	})
}

// TargetKey returns the record key of a workflow's row about one cluster:
// "workflowID/clusterID". Partitioner puts it on the partition of workflowID.
// A cluster ID may itself contain '/'.
func TargetKey(workflowID, clusterID string) string {
	return workflowID + "/" + clusterID
}

// SpecKey returns the record key of a workflow's spec row:
// "workflowID/@spec". No cluster ID starts with '@', so it is no target's
// key; Partitioner puts it on the partition of workflowID.
func SpecKey(workflowID string) string {
	return workflowID + "/@spec"
}

// CheckpointKey returns the record key of a checkpoint of writer's hash
// chain over a workflow's records, for one bucket of its keys:
// "workflowID/@writer/bucket". Partitioner puts it on the partition of
// workflowID.
func CheckpointKey(workflowID, writer string, bucket int) string {
	return workflowID + "/@" + writer + "/" + strconv.Itoa(bucket)
}

// HistoryKey is the key of a cluster's history record of a workflow: by
// the cluster first, so that a cluster's history is on its partition.
func HistoryKey(clusterID, workflowID string) string {
	return clusterID + "/" + workflowID
}

// Partitioner returns the partitioner every Flotilla producer uses. A key
// "a/b" is partitioned by its prefix "a" alone, with Kafka's default murmur2
// key hashing, so that all rows of a workflow — its own row, its per-target
// rows "workflowID/clusterID" in workflows, commands and operations — land on
// the same partition number of every co-partitioned topic. A key without '/'
// is hashed whole, exactly as Kafka's (and kgo's) default partitioner would:
// a request produced by any client, keyed by its request ID, lands on the
// partition the planner uses for the workflow of that ID. Records without a
// key are spread like kgo's sticky key partitioner spreads them.
func Partitioner() kgo.Partitioner {
	return prefixPartitioner{kgo.StickyKeyPartitioner(nil)}
}

type prefixPartitioner struct{ inner kgo.Partitioner }

func (p prefixPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	return &prefixTopicPartitioner{inner: p.inner.ForTopic(topic)}
}

type prefixTopicPartitioner struct {
	inner  kgo.TopicPartitioner
	shadow kgo.Record // reused: kgo calls one topic's partitioner from one goroutine at a time
}

func (p *prefixTopicPartitioner) RequiresConsistency(r *kgo.Record) bool {
	return p.inner.RequiresConsistency(r)
}

func (p *prefixTopicPartitioner) Partition(r *kgo.Record, n int) int {
	if r.Key == nil {
		return p.inner.Partition(r, n)
	}
	key := r.Key
	if i := slices.Index(key, '/'); i >= 0 {
		key = key[:i]
	}
	// kgo's murmur2 is unexported: hash through its partitioner with a
	// record that carries only the key to hash.
	p.shadow.Key = key
	return p.inner.Partition(&p.shadow, n)
}

// PartitionOf returns the partition Partitioner puts a record keyed key on,
// of a topic of n partitions: for a decision that must know which
// partition a record it is about to write lands on (a workflow the planner
// makes by itself lives on the partition of its ID).
func PartitionOf(key string, n int32) int32 {
	if n <= 0 {
		return 0
	}
	p := Partitioner().ForTopic("")
	return int32(p.Partition(&kgo.Record{Key: []byte(key)}, int(n)))
}

// OnNewBatch keeps keyless records sticky, as in kgo's partitioner.
func (p *prefixTopicPartitioner) OnNewBatch() {
	if nb, ok := p.inner.(kgo.TopicPartitionerOnNewBatch); ok {
		nb.OnNewBatch()
	}
}
