package metrics

import (
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
)

// KafkaNamespace prefixes the franz-go client metrics (kgo_produce_bytes_total...).
const KafkaNamespace = "kgo"

// kafkaHooks are the kgo hooks of every client of one service: kprom's
// metrics, labelled service="<name>", summed over the service's clients.
//
// kprom's Metrics belongs to one client: it registers its collectors when
// its client is made (a second client on it would register them twice, and
// panic) and unregisters them all when that client closes. A service makes
// many clients, some short-lived (a table's read, a partition's producer),
// from the same options. So the kprom Metrics is set up once, by the first
// client, and never torn down; the broker, produce and fetch hooks, which
// do not depend on the client, count for all of them. kprom's gauges of
// buffered records, which read its first client, are left out and
// replaced by gauges summed over the clients open now.
type kafkaHooks struct {
	m    *kprom.Metrics
	once sync.Once

	mu      sync.Mutex
	clients map[*kgo.Client]struct{}
}

var (
	_ kgo.HookNewClient           = (*kafkaHooks)(nil)
	_ kgo.HookClientClosed        = (*kafkaHooks)(nil)
	_ kgo.HookBrokerConnect       = (*kafkaHooks)(nil)
	_ kgo.HookBrokerDisconnect    = (*kafkaHooks)(nil)
	_ kgo.HookBrokerThrottle      = (*kafkaHooks)(nil)
	_ kgo.HookBrokerE2E           = (*kafkaHooks)(nil)
	_ kgo.HookProduceBatchWritten = (*kafkaHooks)(nil)
	_ kgo.HookFetchBatchRead      = (*kafkaHooks)(nil)
)

// newKafkaHooks registers on reg the buffered gauges of service's clients;
// kprom's collectors are registered when the first client is made.
func newKafkaHooks(reg prometheus.Registerer, service string) (*kafkaHooks, error) {
	h := &kafkaHooks{clients: map[*kgo.Client]struct{}{}}
	labels := prometheus.Labels{"service": service}
	h.m = kprom.NewMetrics(KafkaNamespace,
		kprom.Registerer(skipGaugeFuncs{reg}),
		kprom.WithStaticLabel(labels),
		// By topic, not by broker: what a service reads and writes.
		kprom.FetchAndProduceDetail(kprom.ByTopic, kprom.Records, kprom.UncompressedBytes),
		kprom.Histograms(kprom.RequestDurationE2E),
	)
	gauge := func(name, help string, of func(*kgo.Client) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: KafkaNamespace, Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(h.sum(of)) })
	}
	err := register(reg,
		gauge("buffered_produce_records_total", "Records buffered in the service's clients, waiting to be produced.", (*kgo.Client).BufferedProduceRecords),
		gauge("buffered_produce_bytes", "Bytes buffered in the service's clients, waiting to be produced.", (*kgo.Client).BufferedProduceBytes),
		gauge("buffered_fetch_records_total", "Records fetched by the service's clients and not polled yet.", (*kgo.Client).BufferedFetchRecords),
		gauge("buffered_fetch_bytes", "Bytes fetched by the service's clients and not polled yet.", (*kgo.Client).BufferedFetchBytes),
	)
	return h, err
}

// opt is the client option that installs the hooks.
func (h *kafkaHooks) opt() kgo.Opt { return kgo.WithHooks(h) }

func (h *kafkaHooks) sum(of func(*kgo.Client) int64) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var n int64
	for cl := range h.clients {
		n += of(cl)
	}
	return n
}

func (h *kafkaHooks) OnNewClient(cl *kgo.Client) {
	h.once.Do(func() { h.m.OnNewClient(cl) })
	h.mu.Lock()
	h.clients[cl] = struct{}{}
	h.mu.Unlock()
}

// OnClientClosed forgets the client; kprom's collectors stay (see kafkaHooks).
func (h *kafkaHooks) OnClientClosed(cl *kgo.Client) {
	h.mu.Lock()
	delete(h.clients, cl)
	h.mu.Unlock()
}

func (h *kafkaHooks) OnBrokerConnect(meta kgo.BrokerMetadata, dial time.Duration, conn net.Conn, err error) {
	h.m.OnBrokerConnect(meta, dial, conn, err)
}

func (h *kafkaHooks) OnBrokerDisconnect(meta kgo.BrokerMetadata, conn net.Conn) {
	h.m.OnBrokerDisconnect(meta, conn)
}

func (h *kafkaHooks) OnBrokerThrottle(meta kgo.BrokerMetadata, interval time.Duration, after bool) {
	h.m.OnBrokerThrottle(meta, interval, after)
}

func (h *kafkaHooks) OnBrokerE2E(meta kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	h.m.OnBrokerE2E(meta, key, e2e)
}

func (h *kafkaHooks) OnProduceBatchWritten(meta kgo.BrokerMetadata, topic string, partition int32, m kgo.ProduceBatchMetrics) {
	h.m.OnProduceBatchWritten(meta, topic, partition, m)
}

func (h *kafkaHooks) OnFetchBatchRead(meta kgo.BrokerMetadata, topic string, partition int32, m kgo.FetchBatchMetrics) {
	h.m.OnFetchBatchRead(meta, topic, partition, m)
}

// skipGaugeFuncs is the registerer given to kprom: it drops kprom's
// buffered gauges, the only single-metric collectors (GaugeFunc) kprom
// makes, which would read its first client only.
type skipGaugeFuncs struct{ prometheus.Registerer }

func (r skipGaugeFuncs) Register(c prometheus.Collector) error {
	if _, single := c.(prometheus.Metric); single {
		return nil
	}
	return r.Registerer.Register(c)
}

func (r skipGaugeFuncs) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}
