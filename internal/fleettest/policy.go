package fleettest

import (
	"os"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// ApplyPolicy writes deployment policies to the policies topic, keyed by
// name, as `flotilla policy apply` does.
func (f *Fleet) ApplyPolicy(policies ...rollout.Policy) {
	f.t.Helper()
	var recs []*kgo.Record
	for _, p := range policies {
		recs = append(recs, f.Record(f.Backbone.Names().Policies, p.Name, records.PolicyRecord{
			Envelope: records.Envelope{ID: uuid.NewString(), Time: f.Clock.Now(), Principal: "test"},
			Policy:   p,
		}))
	}
	f.Produce(recs...)
}

// RemovePolicy writes the tombstone of a deployment policy.
func (f *Fleet) RemovePolicy(name string) {
	f.t.Helper()
	f.Produce(&kgo.Record{Topic: f.Backbone.Names().Policies, Key: []byte(name)})
}

// ReadPolicy reads a deployment policy from a YAML file, such as one of
// examples/policies, failing the test if it does not parse or validate.
func (f *Fleet) ReadPolicy(file string) rollout.Policy {
	f.t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		f.t.Fatal(err)
	}
	p, err := rollout.ParsePolicyYAML(data)
	if err == nil {
		err = p.Validate()
	}
	if err != nil {
		f.t.Fatalf("%s: %v", file, err)
	}
	return p
}
