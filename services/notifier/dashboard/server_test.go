package dashboard

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/inventory"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
)

// fedDashboard is a dashboard whose model the test fills by hand.
func fedDashboard(t *testing.T, ready bool) (*Model, string) {
	t.Helper()
	d := New(Config{Backbone: backbone.Config{}})
	m := d.Model()
	for _, c := range []inventory.Cluster{
		{ID: "k-1", Driver: "kafka", Version: "4.1", Labels: map[string]string{"env": "prod", "kind": "kafka"}},
		{ID: "k-2", Driver: "kafka", Version: "4.1", Labels: map[string]string{"env": "dev", "kind": "kafka"}},
	} {
		m.ApplyCluster(c.ID, &c)
	}
	m.ApplyHealth("k-1", &records.Health{ClusterID: "k-1", Status: records.HealthDegraded, ObservedVersion: "4.1", Reasons: []string{"2 of 3 brokers online"},
		Details: map[string]string{"brokers.online": "2", "brokers.expected": "3", "controller": "1", "partitions.offline": "0", "partitions.under_replicated": "4", "partitions.under_min_isr": "1"},
		Drift:   []records.DriftItem{{Key: "config log.retention.ms", Observed: "100", Desired: "200"}}})
	m.ApplyWorkflowRow("w/1", &records.WorkflowRecord{Workflow: &records.Workflow{ID: "w/1", Spec: rollout.Spec{Name: "slash <b>"},
		State: records.WorkflowRunning, Event: "submitted", Seq: 1, CreatedAt: time.Now(),
		Phases: []records.PhasePlan{{Name: "all", WaveSizes: []int{1}}}}})
	m.ApplyWorkflowRow("w/1/k-1", &records.WorkflowRecord{Target: &records.Target{WorkflowID: "w/1", ClusterID: "k-1", State: records.TargetRunning}})
	if ready {
		m.markReady()
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	return m, srv.URL
}

func fetch(t *testing.T, u string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

func TestEveryPageHasAJSONTwin(t *testing.T) {
	_, base := fedDashboard(t, true)
	for _, path := range []string{"/fleet?by=env", "/clusters/k-1", "/rollouts", "/rollouts/w/1"} {
		status, h, page := fetch(t, base+path)
		if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(page, "<main") {
			t.Fatalf("GET %s: %d %s", path, status, h.Get("Content-Type"))
		}
		status, h, body := fetch(t, base+"/api"+path)
		var v map[string]any
		if status != http.StatusOK || h.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &v) != nil {
			t.Fatalf("GET /api%s: %d %s %q", path, status, h.Get("Content-Type"), body)
		}
		status, _, live := fetch(t, base+path+map[bool]string{true: "&", false: "?"}[strings.Contains(path, "?")]+"fragment=1")
		if status != http.StatusOK || strings.Contains(live, "<html") || strings.TrimSpace(live) == "" {
			t.Fatalf("GET %s fragment: %d, a whole page or nothing: %.80q", path, status, live)
		}
	}
	_, _, page := fetch(t, base+"/clusters/k-1")
	for _, want := range []string{"2/3", "under_min_isr", "log.retention.ms", "drifted"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page of k-1 lacks %q", want)
		}
	}
	if _, _, page := fetch(t, base+"/rollouts/w/1"); strings.Contains(page, "slash <b>") || !strings.Contains(page, "slash &lt;b&gt;") {
		t.Error("a rollout's name is not escaped on its page")
	}
}

func TestBadInputIsToldWhatIsWrong(t *testing.T) {
	_, base := fedDashboard(t, true)
	status, _, page := fetch(t, base+"/fleet?selector="+url.QueryEscape("env in (prod"))
	if status != http.StatusBadRequest || !strings.Contains(page, "selector") || !strings.Contains(page, `role="alert"`) {
		t.Fatalf("a bad selector: %d; want 400 with the parser's message shown", status)
	}
	status, _, body := fetch(t, base+"/api/fleet?selector="+url.QueryEscape("env in (prod"))
	var e apiError
	if status != http.StatusBadRequest || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, "column") {
		t.Fatalf("a bad selector on the API: %d %q; want 400 and an error saying where", status, body)
	}
	for _, path := range []string{"/clusters/nope", "/api/clusters/nope", "/rollouts/nope", "/api/rollouts/nope"} {
		if status, _, body := fetch(t, base+path); status != http.StatusNotFound || !strings.Contains(body, "nope") {
			t.Errorf("GET %s: %d %q; want 404 naming it", path, status, body)
		}
	}
}

func TestAHalfReadLogIsSaidSo(t *testing.T) {
	_, base := fedDashboard(t, false)
	status, h, _ := fetch(t, base+"/api/fleet")
	if status != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
		t.Fatalf("the API before the log is read: %d, Retry-After %q; want 503 and when to ask again", status, h.Get("Retry-After"))
	}
	if status, _, page := fetch(t, base+"/fleet"); status != http.StatusOK || !strings.Contains(page, "not complete yet") {
		t.Fatalf("the fleet page before the log is read: %d; want it shown, saying it is not complete", status)
	}
	if status, _, _ := fetch(t, base+"/clusters/later"); status != http.StatusServiceUnavailable {
		t.Fatalf("a cluster not read yet: %d, want 503 (it may be in the log still to read), not 404", status)
	}
}
