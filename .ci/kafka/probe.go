// Command probe is .ci/kafka.sh's helper: it finds free ports for the
// broker and waits until a freshly started broker can serve tests.
//
//	go build -o probe .ci/kafka/probe.go
//	probe ports 2                                  # two free TCP ports on 127.0.0.1
//	probe wait -brokers 127.0.0.1:39092 -pid 1234 -timeout 2m
//
// It lives under .ci/ (which `go ... ./...` skips) and is built from its
// file name, with the module's own franz-go.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe ports N | probe wait -brokers ADDRS [-pid PID] [-timeout D]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "ports":
		err = ports(os.Args[2:])
	case "wait":
		err = wait(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

// ports prints n ports that are free on 127.0.0.1 right now, one a line.
// They are held open together so that they differ.
func ports(args []string) error {
	n := 1
	if len(args) > 0 {
		var err error
		if n, err = strconv.Atoi(args[0]); err != nil || n < 1 {
			return fmt.Errorf("ports: want a count, got %q", args[0])
		}
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
	}
	for _, l := range ls {
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
	}
	return nil
}

// wait polls the broker until it is ready for tests, the broker process
// exits, or the timeout passes.
func wait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	brokers := fs.String("brokers", "", "comma-separated broker addresses")
	pid := fs.Int("pid", 0, "the broker's process ID: stop waiting if it exits")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *brokers == "" {
		return errors.New("wait: -brokers is required")
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*brokers, ",")...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(*timeout)
	var last error
	for {
		if *pid > 0 && syscall.Kill(*pid, 0) != nil {
			return fmt.Errorf("the broker (pid %d) exited before it was ready (last check: %v)", *pid, last)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		last = ready(ctx, adm)
		cancel()
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the broker at %s was not ready within %v: %w", *brokers, *timeout, last)
		}
		time.Sleep(200 * time.Millisecond) // between polls of the condition
	}
}

// ready checks what the tests need at once: a broker in the metadata, an
// active controller (which creating a topic needs), and the group and
// transaction coordinators — asking for them makes the broker create its
// internal topics, which would otherwise happen inside the first test.
func ready(ctx context.Context, adm *kadm.Client) error {
	md, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	if len(md.Brokers) == 0 || md.Controller < 0 {
		return fmt.Errorf("metadata: %d brokers, controller %d", len(md.Brokers), md.Controller)
	}
	created, err := adm.ValidateCreateTopics(ctx, 1, 1, nil, "flotilla-ready-check")
	if err == nil {
		err = created.Error()
	}
	if err != nil {
		return fmt.Errorf("validate creating a topic: %w", err)
	}
	if err := adm.FindGroupCoordinators(ctx, "flotilla-ready-check").Error(); err != nil {
		return fmt.Errorf("find the group coordinator: %w", err)
	}
	if err := adm.FindTxnCoordinators(ctx, "flotilla-ready-check").Error(); err != nil {
		return fmt.Errorf("find the transaction coordinator: %w", err)
	}
	return nil
}
