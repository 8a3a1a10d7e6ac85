package simfleet

import (
	"fmt"

	"github.com/flotilla-fleet/flotilla/pkg/inventory"
)

// choice is one value of a label and its weight in percent.
type choice struct {
	value  string
	weight int
}

var (
	clouds = []choice{{"aws", 40}, {"gcp", 30}, {"azure", 30}}
	// regions lists each cloud's regions, equally likely.
	regions = map[string][]string{
		"aws":   {"us-east-1", "eu-west-1"},
		"gcp":   {"us-central1", "europe-west1"},
		"azure": {"eastus", "westeurope"},
	}
	envs = []choice{{"prod", 50}, {"staging", 30}, {"dev", 20}}
	// internal is the last bucket because the tier sequence reaches the top
	// early (sim-0003, sim-0006), so even a dozen clusters include internal ones.
	tiers = []choice{{"standard", 55}, {"critical", 30}, {"internal", 15}}
	kinds = []choice{{"kafka", 70}, {"ksqldb", 10}, {"connect", 10}, {"schema-registry", 10}}
	// versions is the version each kind runs in a freshly generated fleet.
	versions = map[string]string{
		"kafka":           "3.8.0",
		"ksqldb":          "0.29.0",
		"connect":         "3.8.0",
		"schema-registry": "7.7.0",
	}
)

// Each label walks its own Weyl sequence, i*k mod 2^64, where k is the
// fractional part of an irrational number (the square roots of 2, 3, 5, 7
// and 11) scaled to 64 bits. Unlike random draws, these spread evenly even
// over a dozen clusters, so a small dev fleet still has internal clusters
// and Azure ones; and the sequences, being rationally independent, do not
// move in step.
const (
	cloudSeq  uint64 = 0x6a09e667f3bcc908
	regionSeq uint64 = 0xbb67ae8584caa73b
	envSeq    uint64 = 0x3c6ef372fe94f82b
	tierSeq   uint64 = 0xa54ff53a5f1d36f1
	kindSeq   uint64 = 0x510e527fade682d1
)

// pick returns the value of choices that the i-th point of sequence k falls
// into, weighting each by its share of 100.
func pick(i int, k uint64, choices []choice) string {
	pct := int(((uint64(i) * k >> 32) * 100) >> 32) // 0..99
	for _, c := range choices {
		if pct < c.weight {
			return c.value
		}
		pct -= c.weight
	}
	return choices[len(choices)-1].value
}

// GenerateClusters returns a simulated fleet of n clusters, the same every
// time: IDs "sim-0001" to "sim-<n>", driver "sim", address "sim://<id>",
// and the labels cloud (aws, gcp, azure), region (two per cloud: us-east-1
// and eu-west-1, us-central1 and europe-west1, eastus and westeurope), env
// (prod, staging, dev), tier (about 15% internal, then standard and
// critical) and kind (about 70% kafka, then ksqldb, connect and
// schema-registry). Each cluster runs its kind's version: kafka 3.8.0,
// ksqldb 0.29.0, connect 3.8.0, schema-registry 7.7.0.
//
// A cluster's labels depend only on its index, so GenerateClusters(10) is
// the first ten of GenerateClusters(100). It returns nil for n <= 0.
func GenerateClusters(n int) []inventory.Cluster {
	if n <= 0 {
		return nil
	}
	out := make([]inventory.Cluster, 0, n)
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("sim-%04d", i)
		cloud := pick(i, cloudSeq, clouds)
		rs := regions[cloud]
		region := rs[int(((uint64(i)*regionSeq>>32)*uint64(len(rs)))>>32)]
		kind := pick(i, kindSeq, kinds)
		out = append(out, inventory.Cluster{
			ID: id,
			Labels: map[string]string{
				"cloud":  cloud,
				"region": region,
				"env":    pick(i, envSeq, envs),
				"tier":   pick(i, tierSeq, tiers),
				"kind":   kind,
			},
			Driver:  DriverName,
			Address: "sim://" + id,
			Version: versions[kind],
		})
	}
	return out
}
