// Package inventory holds the fleet's clusters as Flotilla knows them: what
// each one is, how to reach it and which labels select it.
package inventory

import (
	"fmt"
	"regexp"
)

// Cluster is one member of the fleet: a Kafka cluster or one of its
// companions (ksqlDB, Connect, Schema Registry, any other service).
// It is the value of the fleet.inventory topic, keyed by ID.
type Cluster struct {
	// ID is the stable, unique name of the cluster (e.g. "prod-eu-1").
	ID string `json:"id"`
	// Labels select the cluster in rollouts: cloud, region, env, tier,
	// kind and any other key the operator likes.
	Labels map[string]string `json:"labels,omitempty"`
	// Driver names the driver that applies operations to this cluster
	// ("sim", later "kafka" or "exec") and the probe that watches it.
	Driver string `json:"driver"`
	// Address is how the driver reaches the cluster (bootstrap servers,
	// an API URL, or a simulated cluster's name).
	Address string `json:"address,omitempty"`
	// Version is the software version the cluster runs, as registered.
	Version string `json:"version,omitempty"`
	// Settings tell the driver how to reach and authenticate to the
	// cluster: for the kafka driver security.protocol, sasl.mechanism,
	// sasl.username, sasl.password.env (the name of an environment
	// variable of the executor and monitor that holds the password),
	// tls.ca.file, expected.brokers. They never hold secrets themselves:
	// the inventory is a topic anyone with read access can replay.
	Settings map[string]string `json:"settings,omitempty"`
	// Desired is the state the cluster should be in, for drift detection:
	// what the monitor compares its observations with. A part it leaves
	// empty (no version, a config key not listed) is what the last
	// successful rollout left instead.
	Desired Desired `json:"desired,omitzero"`
	// DriftIgnore lists config keys, or "version", that are never
	// reported as drift (a key that a person or another tool owns).
	DriftIgnore []string `json:"driftIgnore,omitempty"`
}

// Desired is a cluster's declared desired state.
type Desired struct {
	// Version is the software version the cluster should run; empty: the
	// version the last successful upgrade left.
	Version string `json:"version,omitempty"`
	// Config holds managed config keys and the values they should have.
	Config map[string]string `json:"config,omitempty"`
}

// DriftVersionKey is the key that names the version in DriftIgnore and
// in drift reports.
const DriftVersionKey = "version"

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Validate reports what is wrong with a cluster registration, if anything.
func (c Cluster) Validate() error {
	if !idPattern.MatchString(c.ID) {
		return fmt.Errorf("cluster id %q: must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", c.ID)
	}
	if c.Driver == "" {
		return fmt.Errorf("cluster %s: driver is required", c.ID)
	}
	for k := range c.Labels {
		if k == "" {
			return fmt.Errorf("cluster %s: empty label key", c.ID)
		}
	}
	for k := range c.Desired.Config {
		if k == "" {
			return fmt.Errorf("cluster %s: empty desired config key", c.ID)
		}
	}
	for _, k := range c.DriftIgnore {
		if k == "" {
			return fmt.Errorf("cluster %s: empty key in the drift ignore list", c.ID)
		}
	}
	return nil
}
