package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/web"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// chromiumPath is Debian's chromium; CI installs it with apt-get.
const chromiumPath = "/usr/bin/chromium"

// requireChromium skips the test when chromium is missing, or fails it when
// CI=true, as testbed does for php-fpm and nginx.
func requireChromium(t *testing.T) string {
	t.Helper()
	if fi, err := os.Stat(chromiumPath); err == nil && fi.Mode()&0o111 != 0 {
		return chromiumPath
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("the dashboard test needs %s; install it with `apt-get install chromium` (failing instead of skipping because CI=true)", chromiumPath)
	}
	t.Skipf("SKIPPING browser test: %s not found (apt-get install chromium); set CI=true to make this a failure", chromiumPath)
	return ""
}

// startBrowser starts a headless chromium that lives until the test ends.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	bin := requireChromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1000),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
	})
	return ctx
}

// A person opens the dashboard, a worker is killed, the request appears in
// the table by itself with its cause, and a click shows its timeline and
// what to do about it.
func TestAdminDashboardShowsAKilledWorkerLive(t *testing.T) {
	requireChromium(t)
	s := startAdminStack(t, testbed.FPMConfig{StatusPath: "/fpm-status", MaxChildren: 5})
	browser := startBrowser(t)

	// Some ordinary traffic first, so that the page has something to show.
	traffic := 2 * time.Second
	if os.Getenv("FCGISCOPE_UPDATE_SCREENSHOTS") == "1" {
		traffic = 40 * time.Second // a few buckets of the latency chart
	}
	background(t, s, traffic)

	if err := chromedp.Do(browser,
		chromedp.Navigate(s.adminURL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#live.good")),
		chromedp.WaitVisible(chromedp.CSS("#rows tr")),
	); err != nil {
		t.Fatalf("opening the dashboard: %v", err)
	}
	failedRows, err := chromedp.Run(browser, chromedp.Evaluate[int](`document.querySelectorAll("#rows tr.failed").length`))
	if err != nil {
		t.Fatal(err)
	}

	// A worker dies while the page is open; nothing reloads the page.
	if code := s.get(t, "/crash.php?sig=9"); code != 502 {
		t.Fatalf("crash.php?sig=9: %d, want 502", code)
	}
	row := `Array.from(document.querySelectorAll("#rows tr.failed")).find(tr => tr.textContent.includes("worker_crashed"))`
	if _, err := chromedp.Run(browser, chromedp.Poll[chromedp.Void](row+" !== undefined", chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("the killed worker's request did not appear in the table: %v", err)
	}
	text, err := chromedp.Run(browser, chromedp.Evaluate[string](row+".textContent"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "/crash.php?sig=9") || !strings.Contains(text, "502") {
		t.Errorf("the row says %q", text)
	}
	if n, _ := chromedp.Run(browser, chromedp.Evaluate[int](`document.querySelectorAll("#rows tr.failed").length`)); n != failedRows+1 {
		t.Errorf("%d failed rows, want %d", n, failedRows+1)
	}
	// The summary picks it up too: the causes table and the error rate.
	if _, err := chromedp.Run(browser, chromedp.Poll[chromedp.Void](
		`document.querySelector("#causes").textContent.includes("worker_crashed")`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Errorf("the causes table does not show worker_crashed: %v", err)
	}
	if os.Getenv("FCGISCOPE_UPDATE_SCREENSHOTS") == "1" {
		// A slow request keeps a worker busy in the pool's list.
		go func() {
			if resp, err := http.Get(s.nginx.URL + "/sleep.php?s=4"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
		time.Sleep(2500 * time.Millisecond)
	}
	overview, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	saveScreenshot(t, "dashboard.png", overview)

	// One click shows the request in full.
	id, err := chromedp.Run(browser, chromedp.Evaluate[string](row+".dataset.id"))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(browser,
		chromedp.Click(chromedp.CSS(`#rows tr[data-id="`+id+`"]`)),
		chromedp.WaitVisible(chromedp.CSS("#drawer .timeline svg rect")),
		chromedp.WaitVisible(chromedp.CSS("#drawer .hints li")),
	); err != nil {
		t.Fatalf("opening the request: %v", err)
	}
	title, _ := chromedp.Run(browser, chromedp.Text(chromedp.CSS("#d-title")))
	kicker, _ := chromedp.Run(browser, chromedp.Text(chromedp.CSS("#d-kicker")))
	hints, _ := chromedp.Run(browser, chromedp.Text(chromedp.CSS("#drawer .hints")))
	steps, _ := chromedp.Run(browser, chromedp.Text(chromedp.CSS("#drawer .steps")))
	evidence, _ := chromedp.Run(browser, chromedp.Text(chromedp.CSS("#drawer .kv")))
	if !strings.Contains(title, "crashed") || !strings.Contains(kicker, "worker_crashed") {
		t.Errorf("drawer title %q, kicker %q", title, kicker)
	}
	if !strings.Contains(hints, "SIGKILL") {
		t.Errorf("hint %q does not explain SIGKILL", hints)
	}
	if !strings.Contains(steps, "connected") || !strings.Contains(steps, "failed: worker_crashed") {
		t.Errorf("timeline steps: %q", steps)
	}
	if !strings.Contains(evidence, "SIGKILL") || !strings.Contains(evidence, "exited on signal 9") {
		t.Errorf("evidence: %q", evidence)
	}
	// The command that sends it again, to copy, by the request id.
	replayCmd, _ := chromedp.Run(browser, chromedp.Text(chromedp.CSS("#drawer pre.replay")))
	_, body := fetch(t, s.adminURL+"/api/requests/"+id)
	var q web.RequestDetail
	json.Unmarshal(body, &q)
	rid := q.RequestID
	if want := "fcgiscope request --replay " + rid + " --admin " + strings.TrimPrefix(s.adminURL, "http://"); rid == "" || replayCmd != want {
		t.Errorf("the replay command shown is %q, want %q", replayCmd, want)
	}
	// The drawer is fixed to the window: a shot of the window shows it
	// as a person sees it.
	detail, err := chromedp.Run(browser, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	saveScreenshot(t, "dashboard-detail.png", detail)
}

// background sends ordinary requests through nginx for d: most succeed,
// some are slower, an occasional one hits a missing script.
func background(t *testing.T, s *adminStack, d time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for w := range 3 {
		wg.Go(func() {
			for i := 0; time.Now().Before(stop); i++ {
				path := "/hello.php"
				switch {
				case i%17 == 5:
					path = "/missing.php"
				case i%7 == 3:
					path = fmt.Sprintf("/sleep.php?s=0.%d", 1+(i+w)%4)
				case i%5 == 1:
					path = "/big.php?mb=1"
				}
				if resp, err := http.Get(s.nginx.URL + path); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				time.Sleep(40 * time.Millisecond)
			}
		})
	}
	wg.Wait()
}

// saveScreenshot writes a PNG into the test's temp dir and, with
// FCGISCOPE_UPDATE_SCREENSHOTS=1, into docs/ for the README.
func saveScreenshot(t *testing.T, name string, png []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	if os.Getenv("FCGISCOPE_UPDATE_SCREENSHOTS") != "1" {
		return
	}
	docs := filepath.Join("..", "docs")
	if err := os.MkdirAll(docs, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(docs, name)
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(out)
	t.Logf("screenshot updated: %s", abs)
}

// A request php-fpm's slowlog caught completed normally; its view in the
// dashboard shows the stack, frame by frame, where the time went.
func TestAdminDashboardShowsTheSlowlogStack(t *testing.T) {
	requireChromium(t)
	s := startAdminStack(t, testbed.FPMConfig{SlowlogTimeout: time.Second, RequestTerminateTimeout: 10 * time.Second})
	browser := startBrowser(t)
	if code := s.get(t, "/sleep.php?s=1.6"); code != 200 {
		t.Fatalf("sleep.php: %d, want 200", code)
	}
	if err := chromedp.Do(browser,
		chromedp.Navigate(s.adminURL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#rows tr")),
	); err != nil {
		t.Fatalf("opening the dashboard: %v", err)
	}
	row := `Array.from(document.querySelectorAll("#rows tr")).find(tr => tr.textContent.includes("slow_request"))`
	if _, err := chromedp.Run(browser, chromedp.Poll[chromedp.Void](row+" !== undefined", chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("the slow request is not in the table as slow_request: %v", err)
	}
	id, err := chromedp.Run(browser, chromedp.Evaluate[string](row+".dataset.id"))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(browser,
		chromedp.Click(chromedp.CSS(`#rows tr[data-id="`+id+`"]`)),
		chromedp.WaitVisible(chromedp.CSS("#drawer ol.stack li")),
	); err != nil {
		t.Fatalf("opening the request: %v", err)
	}
	stack, _ := chromedp.Run(browser, chromedp.Text(chromedp.CSS("#drawer ol.stack")))
	if !strings.Contains(stack, "usleep()") || !strings.Contains(stack, "sleep.php:") {
		t.Errorf("the stack shown is %q, want usleep() in sleep.php", stack)
	}
}
