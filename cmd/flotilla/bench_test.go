package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func benchOptions(t *testing.T, args ...string) (benchFlags, error) {
	t.Helper()
	var f benchFlags
	fs := pflag.NewFlagSet("bench", pflag.ContinueOnError)
	f.bind(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	_, err := f.options()
	return f, err
}

func TestBenchFlags(t *testing.T) {
	f, err := benchOptions(t, "--clusters", "10000,20000", "--clusters", "30000", "--in-flight", "500",
		"--stage", "rollout,reaction", "--timeout", "30s", "--brokers", "a:9092, b:9092", "-o", "json", "--quick")
	if err != nil {
		t.Fatal(err)
	}
	o, _ := f.options()
	if !slices.Equal(o.Clusters, []int{10000, 20000, 30000}) || o.InFlight != 500 || !o.Quick || o.Timeout != 30*time.Second {
		t.Errorf("options %+v", o)
	}
	if !slices.Equal(o.Stages, []string{"rollout", "reaction"}) || !slices.Equal(o.Brokers, []string{"a:9092", "b:9092"}) || o.Exe == "" {
		t.Errorf("options %+v", o)
	}
	f, err = benchOptions(t)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := f.options(); o.Brokers != nil || o.Clusters != nil || o.Stages != nil || f.output != "table" {
		t.Errorf("default options %+v, output %q: want the bench's defaults (embedded broker, every stage)", o, f.output)
	}
}

func TestBenchFlagsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"-o", "yaml"},
		{"--stage", "everything"},
		{"--clusters", "5"},
		{"--log-level", "loud"},
	} {
		if _, err := benchOptions(t, args...); err == nil {
			t.Errorf("%s: accepted", strings.Join(args, " "))
		}
	}
}
