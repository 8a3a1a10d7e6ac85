package execdriver

import (
	"testing"

	"github.com/flotilla-fleet/flotilla/pkg/drivers"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// TestConfigKeyNamedJSONKeepsTheJSONVariable: FLOTILLA_CONFIG_JSON holds
// every key, even when one key's own variable would have its name.
func TestConfigKeyNamedJSONKeepsTheJSONVariable(t *testing.T) {
	vars := operationVars(drivers.Request{Operation: rollout.Operation{Kind: rollout.Config, Config: map[string]string{"json": "x", "a": "1"}}})
	if got := vars["FLOTILLA_CONFIG_JSON"]; got != `{"a":"1","json":"x"}` {
		t.Fatalf("FLOTILLA_CONFIG_JSON = %q, want every key", got)
	}
	if vars["FLOTILLA_CONFIG_A"] != "1" {
		t.Fatalf("FLOTILLA_CONFIG_A = %q", vars["FLOTILLA_CONFIG_A"])
	}
}
