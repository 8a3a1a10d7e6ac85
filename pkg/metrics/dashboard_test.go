package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dashboardFile is the Grafana dashboard of Flotilla's metrics.
const dashboardFile = "../../deploy/grafana/flotilla.json"

type dashboardPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"` // of a collapsed row
}

// metricName finds the names of metrics in a PromQL expression: Flotilla
// names its metrics flotilla_*, kprom kgo_*, the Go and process
// collectors go_* and process_*.
var metricName = regexp.MustCompile(`\b(?:flotilla|kgo|go|process)_[a-z0-9_]+\b`)

// TestTheDashboardQueriesWhatFlotillaRegisters parses the Grafana
// dashboard and holds it to the code: every metric its queries use is
// registered by Flotilla's services (a histogram through its _bucket,
// _sum and _count series), and every metric of Flotilla's own has a panel.
func TestTheDashboardQueriesWhatFlotillaRegisters(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID        string           `json:"uid"`
		Title      string           `json:"title"`
		Panels     []dashboardPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("the dashboard has no uid or title")
	}
	hasDatasource := slices.ContainsFunc(d.Templating.List, func(v struct {
		Name  string `json:"name"`
		Type  string `json:"type"`
		Query string `json:"query"`
	}) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	})
	if !hasDatasource {
		t.Errorf("the dashboard has no Prometheus datasource variable named datasource")
	}

	registered := registeredNames(t)
	known := func(name string) bool {
		if registered[name] {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && registered[base] {
				return true
			}
		}
		return false
	}
	used := map[string]bool{}
	ids := map[int]bool{}
	var walk func(ps []dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q does not query the datasource variable", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, target := range p.Targets {
				names := metricName.FindAllString(target.Expr, -1)
				if len(names) == 0 {
					t.Errorf("panel %q: query %q uses no metric", p.Title, target.Expr)
				}
				for _, n := range names {
					if !known(n) {
						t.Errorf("panel %q: query %q uses %s, which no service registers", p.Title, target.Expr, n)
					}
					used[n] = true
					for _, suffix := range []string{"_bucket", "_sum", "_count"} {
						if base, ok := strings.CutSuffix(n, suffix); ok {
							used[base] = true
						}
					}
				}
			}
		}
	}
	walk(d.Panels)
	for name := range registered {
		if strings.HasPrefix(name, "flotilla_") && !used[name] {
			t.Errorf("%s has no panel in %s", name, dashboardFile)
		}
	}
}

// TestTheREADMEListsEveryFlotillaMetric holds the README's table of
// metrics to the code.
func TestTheREADMEListsEveryFlotillaMetric(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range registeredNames(t) {
		if strings.HasPrefix(name, "flotilla_") && !strings.Contains(string(readme), "| `"+name+"` |") {
			t.Errorf("the README's table of metrics does not list %s", name)
		}
	}
}
