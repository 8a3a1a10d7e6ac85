package dashboard

import (
	"context"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cdpfetch "github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"golang.org/x/crypto/bcrypt"

	"github.com/flotilla-fleet/flotilla/internal/fleettest"
	"github.com/flotilla-fleet/flotilla/pkg/backbone"
	"github.com/flotilla-fleet/flotilla/pkg/records"
	"github.com/flotilla-fleet/flotilla/pkg/rollout"
	"github.com/flotilla-fleet/flotilla/services/planner/decide"
)

// The browser tests drive the dashboard in a real headless Chromium. The
// test command (.ci/run) installs Debian's chromium; elsewhere, set
// FLOTILLA_CHROMIUM to a Chromium or Chrome binary, or
// FLOTILLA_SKIP_BROWSER=1 to skip these tests (they then say so).

func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("FLOTILLA_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("FLOTILLA_SKIP_BROWSER") != "" {
		t.Skip("FLOTILLA_SKIP_BROWSER is set and no Chromium was found: the dashboard's browser tests did not run")
	}
	t.Fatal("no Chromium found for the dashboard's browser tests: install Debian's chromium (apt-get install chromium; .ci/run does), " +
		"set FLOTILLA_CHROMIUM to a Chromium or Chrome binary, or set FLOTILLA_SKIP_BROWSER=1 to skip them")
	return ""
}

// browser returns a headless Chromium tab, closed when the test ends.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // CI runs as root
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 1100),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", chromium(t), err)
	}
	return ctx
}

// do runs browser actions, failing the test on an error, with a bound so
// that a page that never shows what is awaited fails rather than hangs.
func do(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// get runs one browser action that reads something, as do does.
func get[T any](t *testing.T, ctx context.Context, what string, action chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// textOf returns the text of the element a CSS selector picks ("" if
// none), read in one step in the page, so that a live part swapped
// meanwhile cannot leave the test holding a node that is gone.
func textOf(t *testing.T, ctx context.Context, css string) string {
	t.Helper()
	return get(t, ctx, "read "+css, chromedp.Evaluate[string](`(document.querySelector(`+strconv.Quote(css)+`) || {}).innerText || ""`))
}

// pageText returns the page's live part as a person reads it.
func pageText(t *testing.T, ctx context.Context) string {
	t.Helper()
	return textOf(t, ctx, "#live")
}

// TestTheDashboardFollowsALiveRollout loads a rollout's page while it
// runs, and sees it move on without a reload — waves finishing, a gate
// waiting and then opened by a person — then follows a link to one of
// its clusters and finds the operation in its history, and filters the
// fleet with the keyboard alone.
func TestTheDashboardFollowsALiveRollout(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 12})
	srv := serveDashboard(t, f.Backbone)
	ctx := browser(t) // closed first, then the dashboard

	id := f.Submit(rollout.Spec{
		Name:      "browser-upgrade",
		Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"},
		Selector:  "kind=kafka",
		Phases: []rollout.Phase{
			{Name: "canary", Selector: "cloud=aws", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 2}},
			{Name: "rest", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 4}, Approve: rollout.ApproveBefore},
		},
	})
	if w := f.Await(id, 0, time.Minute, "the rollout starts", func(w *decide.Workflow) bool { return w.State != records.WorkflowPending }); w.State != records.WorkflowRunning {
		t.Fatalf("the rollout is %s (%s), not running", w.State, w.Reason)
	}

	do(t, ctx, "load the rollout's page",
		chromedp.Navigate(srv.URL+"/rollouts/"+id),
		chromedp.WaitVisible(chromedp.CSS("#rollout-counts")),
	)
	get(t, ctx, "mark the page", chromedp.Evaluate[string](`window.loadedOnce = "yes"`))
	before := textOf(t, ctx, "#rollout-counts")

	// Operations finish as fake time passes; the page follows by itself.
	if !f.Eventually(time.Second, time.Minute, func() bool {
		now := textOf(t, ctx, "#rollout-counts")
		return now != before && strings.Contains(now, "succeeded")
	}) {
		t.Fatalf("the page did not change from %q as the rollout went on", before)
	}
	// At the gate before "rest", it says so; a person approves, and it
	// shows who, still without a reload.
	if !f.Eventually(time.Second, 2*time.Minute, func() bool {
		return strings.Contains(pageText(t, ctx), "waiting for approval at before:rest")
	}) {
		t.Fatalf("the page never showed the gate; it shows:\n%s", pageText(t, ctx))
	}
	shot := screenshot(t, ctx)
	// Mallory's approval names the wrong phase and the planner refuses it:
	// the page lists who opened the gate as the planner decided, not who
	// asked.
	for _, ask := range []struct{ who, phase string }{{"mallory", "canary"}, {"bob", ""}} {
		f.Control(ask.who, records.ControlWorkflow{WorkflowID: id, Action: records.ActionApprove, Phase: ask.phase, Reason: "canary looks fine"})
	}
	if !f.Eventually(0, time.Minute, func() bool {
		return textOf(t, ctx, "ul.approvals") != "" && !strings.Contains(pageText(t, ctx), "waiting for approval")
	}) {
		t.Fatalf("the page did not show the gate opened; it shows:\n%s", pageText(t, ctx))
	}
	if approvals := textOf(t, ctx, "ul.approvals"); approvals != "before:rest opened by bob" {
		t.Fatalf("the page lists the approvals as %q, want only bob's, which opened before:rest", approvals)
	}
	if text := pageText(t, ctx); !strings.Contains(text, "mallory request asked to approve phase canary") {
		t.Fatalf("the timeline does not show mallory's request; the page shows:\n%s", text)
	}
	loaded := get(t, ctx, "check the page was not reloaded", chromedp.Evaluate[string](`window.loadedOnce || "reloaded"`))
	refreshed := get(t, ctx, "check the page fetched its view", chromedp.AttributeValue(chromedp.CSS("#live"), "data-refreshed")).Value
	if loaded != "yes" || refreshed == "" {
		t.Fatalf("the page was reloaded (%q) or never fetched its view again (refreshed %q)", loaded, refreshed)
	}
	if dir := os.Getenv("FLOTILLA_SCREENSHOT_DIR"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, "dashboard-rollout.png"), shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A cluster that succeeded: its page has the operation, who asked, and
	// the versions before and after.
	cluster := get(t, ctx, "find a cluster that succeeded", chromedp.AttributeValue(chromedp.CSS("a.cell.s-succeeded"), "data-cluster")).Value
	do(t, ctx, "follow a link to a cluster",
		chromedp.Click(chromedp.CSS("a.cell.s-succeeded")),
		chromedp.WaitVisible(chromedp.CSS("table.history")),
	)
	location := get(t, ctx, "read the location", chromedp.Location())
	history := textOf(t, ctx, "table.history tbody")
	if !strings.HasSuffix(location, "/clusters/"+cluster) {
		t.Fatalf("the link led to %s, not the page of %s", location, cluster)
	}
	for _, want := range []string{"browser-upgrade", "alice", "upgrade to 3.9.1", "succeeded", "→ 3.9.1"} {
		if !strings.Contains(history, want) {
			t.Fatalf("the history of %s lacks %q:\n%s", cluster, want, history)
		}
	}

	// The fleet, filtered with the keyboard alone.
	aws := 0
	for _, c := range f.Clusters {
		if c.Labels["cloud"] == "aws" {
			aws++
		}
	}
	do(t, ctx, "filter the fleet from the keyboard",
		chromedp.Navigate(srv.URL+"/fleet?by=cloud"),
		chromedp.WaitVisible(chromedp.CSS("#selector")),
		chromedp.Focus(chromedp.CSS("#selector")),
		chromedp.SendKeys(chromedp.CSS("#selector"), "cloud=aws"+kb.Enter),
		chromedp.WaitVisible(chromedp.CSS("#summary-heading code")),
	)
	heading := textOf(t, ctx, "#summary-heading")
	if want := strconv.Itoa(aws) + " clusters matching cloud=aws"; heading != want {
		t.Fatalf("the fleet filtered by cloud=aws says %q, want %q", heading, want)
	}
}

// serveDashboard runs a dashboard of the backbone on a test server. Its
// requests live in a context that ends before the server closes, as the
// notifier's do (Serve): an event stream still open would hold Close up.
func serveDashboard(t *testing.T, bb backbone.Config) *httptest.Server {
	t.Helper()
	d := New(Config{Backbone: bb})
	srv, ctx := serve(t, d)
	go d.Run(ctx)
	return srv
}

// serve runs d's handler on a test server, and returns it with the
// context its requests live in. It does not read the log into d's
// model: a test that calls it alone feeds the model itself.
func serve(t *testing.T, d *Dashboard) (*httptest.Server, context.Context) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	srv := httptest.NewUnstartedServer(d.Handler())
	srv.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(stop)
	return srv, ctx
}

func screenshot(t *testing.T, ctx context.Context) []byte {
	t.Helper()
	return get(t, ctx, "take a screenshot", chromedp.FullScreenshot(100))
}

// TestTheDashboardBehindAPasswordStaysLive serves the dashboard to one
// user (--web-config) and opens a rollout's page as her in Chromium: the
// page's own requests — its event stream and the fetches of its live part
// — carry her credentials, so the page follows the rollout without a
// reload, as it does without a password.
func TestTheDashboardBehindAPasswordStaysLive(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Clusters: 6})
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(webConfig, []byte("basic_auth_users:\n  alice: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	bound := make(chan net.Addr, 1)
	served := make(chan error, 1)
	go func() {
		served <- ListenAndRun(ctx, Config{Backbone: f.Backbone, WebConfig: webConfig}, "127.0.0.1:0", func(a net.Addr) { bound <- a })
	}()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("the dashboard stopped with: %v", err)
		}
	})
	addr := (<-bound).String()
	tab := browser(t) // closed first, then the dashboard
	asked := answerAuth(t, tab, "alice", "s3cret")

	// The rollout waits at a gate until the page is open, so that all it
	// does after that reaches the page live, however fast it would run.
	id := f.Submit(rollout.Spec{Name: "behind-a-password", Operation: rollout.Operation{Kind: rollout.Upgrade, Version: "3.9.1"},
		Selector: "kind=kafka", Phases: []rollout.Phase{{Name: "all", Waves: rollout.Waves{Mode: rollout.WaveCount, Value: 3}, Approve: rollout.ApproveBefore}}})
	f.Await(id, 0, time.Minute, "the rollout waits at its gate", func(w *decide.Workflow) bool { return w.State != records.WorkflowPending })
	do(t, tab, "load the rollout's page as alice",
		chromedp.Navigate("http://"+addr+"/rollouts/"+id),
		chromedp.WaitVisible(chromedp.CSS("#rollout-counts")),
	)
	get(t, tab, "mark the page", chromedp.Evaluate[string](`window.loadedOnce = "yes"`))
	// Live: its event stream is open, as alice too.
	if !f.Eventually(0, time.Minute, func() bool {
		return textOf(t, tab, "#status") == "live" && strings.Contains(pageText(t, tab), "waiting for approval at before:all")
	}) {
		t.Fatalf("the page never went live at the gate; it says %q and shows:\n%s", textOf(t, tab, "#status"), pageText(t, tab))
	}
	f.Control("bob", records.ControlWorkflow{WorkflowID: id, Action: records.ActionApprove, Reason: "go"})
	if !f.Eventually(time.Second, time.Minute, func() bool {
		return strings.Contains(textOf(t, tab, "#rollout-state"), "succeeded")
	}) {
		t.Fatalf("the page did not follow the rollout to its end; it shows:\n%s", pageText(t, tab))
	}
	// The notifier writes the rollout's notifications after the rows the
	// page shows: wait for the last one.
	if !f.Eventually(0, time.Minute, func() bool { return strings.Contains(textOf(t, tab, "#feed"), "workflow.succeeded") }) {
		t.Fatalf("the page listed no workflow.succeeded notification from its event stream; it lists:\n%s", textOf(t, tab, "#feed"))
	}
	loaded := get(t, tab, "check the page was not reloaded", chromedp.Evaluate[string](`window.loadedOnce || "reloaded"`))
	if loaded != "yes" || asked.Load() == 0 {
		t.Fatalf("the page was reloaded (%q), or was never asked for a password (%d)", loaded, asked.Load())
	}
}

// answerAuth answers every request for a password in tab as a person
// would at the browser's prompt, with user's, and counts them: the
// browser then holds the credentials for the origin.
func answerAuth(t *testing.T, tab context.Context, user, password string) *atomic.Int32 {
	t.Helper()
	var asked atomic.Int32
	events := make(chan any, 256)
	ctx, stop := context.WithCancel(tab)
	t.Cleanup(stop)
	// Listen's callback may not run commands: it hands the events over.
	if err := chromedp.Listen(ctx, func(ev any) {
		switch ev.(type) {
		case *cdpfetch.EventRequestPaused, *cdpfetch.EventAuthRequired:
			select {
			case events <- ev:
			case <-ctx.Done():
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			var ev any
			select {
			case ev = <-events:
			case <-ctx.Done():
				return
			}
			switch e := ev.(type) {
			case *cdpfetch.EventRequestPaused:
				_, _ = chromedp.Call(ctx, cdpfetch.ContinueRequest, cdpfetch.ContinueRequestParams{RequestID: e.RequestID})
			case *cdpfetch.EventAuthRequired:
				asked.Add(1)
				_, _ = chromedp.Call(ctx, cdpfetch.ContinueWithAuth, cdpfetch.ContinueWithAuthParams{RequestID: e.RequestID,
					AuthChallengeResponse: &cdpfetch.AuthChallengeResponse{Response: cdpfetch.AuthChallengeResponseResponseProvideCredentials, Username: user, Password: password}})
			}
		}
	}()
	handle := true
	if _, err := chromedp.Call(tab, cdpfetch.Enable, cdpfetch.EnableParams{HandleAuthRequests: &handle}); err != nil {
		t.Fatalf("enable answering passwords: %v", err)
	}
	return &asked
}
