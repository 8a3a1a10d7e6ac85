// Package metricstest scrapes a /metrics endpoint for tests, as
// Prometheus would: over HTTP, in the text exposition format.
package metricstest

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families are the metric families of one scrape, by name.
type Families map[string]*dto.MetricFamily

// Scrape gets url and parses what it serves.
func Scrape(ctx context.Context, url string) (Families, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain") // the text format, not protobuf
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	return fams, nil
}

// Has reports whether the scrape has a family name, with a series or not.
func (f Families) Has(name string) bool {
	_, ok := f[name]
	return ok
}

// Value is the sum over the series of family name that have the labels
// given as name, value pairs: a counter's or gauge's value, a histogram's
// count of observations. It is 0 without such a series.
func (f Families) Value(name string, labels ...string) float64 {
	fam, ok := f[name]
	if !ok {
		return 0
	}
	var sum float64
	for _, m := range fam.GetMetric() {
		if !matches(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum
}

func matches(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Await scrapes url until cond holds of a scrape, and returns that
// scrape; it fails the test, saying what was awaited, if timeout passes
// first. cond returns "" when it holds, else what is still missing.
func Await(t testing.TB, url string, timeout time.Duration, cond func(Families) string) Families {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		fams, err := Scrape(ctx, url)
		cancel()
		missing := fmt.Sprint(err)
		if err == nil {
			if missing = cond(fams); missing == "" {
				return fams
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s, after %v: %s", url, timeout, missing)
			return nil
		}
		time.Sleep(50 * time.Millisecond) // between scrapes, as Prometheus does
	}
}
