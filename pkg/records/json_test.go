package records

import (
	"bytes"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// A request as a user writes it by hand for `kcat -P` (one line per
// record): Avro JSON, unions named, defaulted fields left out.
const handWrittenRequest = `{"envelope": {"id": "0b5c1f7e-52a4-4e55-9d0c-7f2a0c1d9e33", "time": 1767225600000, "principal": "bob"}, ` +
	`"body": {"flotilla.SubmitRollout": {"spec": {"name": "restart-kafka", "operation": {"kind": "restart"}, "selector": "kind=kafka,env=prod", ` +
	`"clusters": ["legacy-1"], "phases": [` +
	`{"name": "canary", "selector": "tier=internal", "waves": {"mode": "count", "value": 1}, "bake_ms": 300000}, ` +
	`{"name": "aws-half", "selector": "cloud=aws", "waves": {"mode": "percent", "value": 50}, "max_in_flight": 2, "bake_ms": 600000}, ` +
	`{"name": "rest"}], ` +
	`"failure_threshold": {"percent": 10}}}}}`

func TestDecodeRequestJSON(t *testing.T) {
	want := Request{
		Envelope: Envelope{ID: "0b5c1f7e-52a4-4e55-9d0c-7f2a0c1d9e33", Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Principal: "bob"},
		Submit: &SubmitRollout{Spec: rollout.Spec{
			Name:      "restart-kafka",
			Operation: rollout.Operation{Kind: rollout.Restart},
			Selector:  "kind=kafka,env=prod",
			Clusters:  []string{"legacy-1"},
			Phases: []rollout.Phase{
				{Name: "canary", Selector: "tier=internal", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 1}, Bake: 5 * time.Minute},
				{Name: "aws-half", Selector: "cloud=aws", Waves: rollout.Waves{Mode: rollout.WavePercent, Value: 50}, MaxInFlight: 2, Bake: 10 * time.Minute},
				{Name: "rest"},
			},
			FailureThreshold: rollout.Threshold{Percent: 10},
		}},
	}
	for name, in := range map[string]string{
		"one line":            handWrittenRequest,
		"surrounding space":   "\n\t " + handWrittenRequest + "\n",
		"pretty, as in files": prettyJSON(t, handWrittenRequest),
	} {
		t.Run(name, func(t *testing.T) {
			got, err := DecodeRequest([]byte(in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func prettyJSON(t *testing.T, s string) string {
	t.Helper()
	return strings.NewReplacer(", ", ",\n  ", "{", "{\n  ", "}", "\n}").Replace(s)
}

func TestExampleRequestUpgrade(t *testing.T) {
	b, err := os.ReadFile("../../examples/request-upgrade.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Request{
		Envelope: Envelope{ID: "7f3c9a52-4d1e-4c8b-9a27-1b6e0f5d2c41", Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Principal: "alice"},
		Submit: &SubmitRollout{Spec: rollout.Spec{
			Name:      "kafka-3.9.1",
			Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"},
			Selector:  "kind=kafka",
			Phases: []rollout.Phase{
				{Name: "internal", Selector: "tier=internal", Bake: 10 * time.Minute},
				{Name: "azure", Selector: "cloud=azure", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}, MaxInFlight: 1, Bake: 15 * time.Minute},
				{Name: "rest", Waves: rollout.Waves{Mode: rollout.WaveExponential, Value: 1}, MaxInFlight: 4, Bake: 15 * time.Minute},
			},
			FailureThreshold: rollout.Threshold{Count: 1},
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestEncodeRequestJSON(t *testing.T) {
	in := fullRequest(inTime)
	in.Envelope.Principal = "quote \" backslash \\ newline \n html <&> unicode ✓"
	b, err := EncodeRequestJSON(in)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsRune(b, '\n') {
		t.Errorf("output spans lines, so kcat -P would split it: %s", b)
	}
	if !bytes.HasPrefix(b, []byte(`{"envelope":{"id":`)) || !bytes.Contains(b, []byte(`"body":{"flotilla.SubmitRollout":{"spec":{"name":"kafka-3.9.1","operation":`)) {
		t.Errorf("fields not in schema order, or union not named: %s", b)
	}
	again, err := EncodeRequestJSON(in)
	if err != nil || !bytes.Equal(again, b) {
		t.Errorf("second encoding differs:\n%s\n%s", b, again)
	}
	got, err := DecodeRequest(b)
	if err != nil {
		t.Fatalf("decode own JSON: %v\n%s", err, b)
	}
	want := fullRequest(outTime)
	want.Envelope.Principal = in.Envelope.Principal
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if _, err := EncodeRequestJSON(Request{}); err == nil {
		t.Error("EncodeRequestJSON of a request without body succeeded")
	}
}

func TestDecodeRequestJSONErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, message string
	}{
		{"unknown field (a typo)", strings.Replace(handWrittenRequest, `"selector": "kind`, `"selectr": "kind`, 1), `"selectr"`},
		{"required field missing", strings.Replace(handWrittenRequest, `"principal": "bob"`, `"causation_id": ""`, 1), "required field envelope.principal is missing"},
		{"nested required field missing", strings.Replace(handWrittenRequest, `{"kind": "restart"}`, `{"version": "1"}`, 1), "required field body.flotilla.SubmitRollout.spec.operation.kind is missing"},
		{"union member by short name", strings.Replace(handWrittenRequest, `"flotilla.SubmitRollout"`, `"SubmitRollout"`, 1), `"SubmitRollout"`},
		{"wrong type", strings.Replace(handWrittenRequest, `"max_in_flight": 2`, `"max_in_flight": "2"`, 1), "max_in_flight"},
		{"time as a string", strings.Replace(handWrittenRequest, `1767225600000`, `"2026-01-01T00:00:00Z"`, 1), `"time"`},
		{"truncated", handWrittenRequest[:len(handWrittenRequest)-4], "short buffer"},
		{"trailing garbage", handWrittenRequest + " {}", "2 unexpected bytes after the request"},
		{"not json at all", "{envelope}", "cannot decode textual record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeRequest([]byte(tc.in))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tc.message) || !strings.HasPrefix(err.Error(), "decode flotilla.Request: malformed record: avro json: ") {
				t.Errorf("err = %q, want it to say %q", err, tc.message)
			}
		})
	}
}
