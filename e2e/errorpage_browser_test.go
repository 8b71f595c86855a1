package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// A person whose request was killed by request_terminate_timeout sees, in a
// real browser, a page that says what happened and what to change.
func TestErrorPageInABrowser(t *testing.T) {
	requireChromium(t)
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{RequestTerminateTimeout: time.Second, SlowlogTimeout: time.Second, StatusPath: "/fpm-status"})
	s := startFailStack(t, "tcp", fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath)
	browser := startBrowser(t)
	if err := chromedp.Do(browser,
		chromedp.Navigate(s.nginx.URL+"/sleep.php?s=3"),
		chromedp.WaitVisible(chromedp.CSS("h1")),
	); err != nil {
		t.Fatalf("opening the failing page: %v", err)
	}
	text, err := chromedp.Run(browser, chromedp.Text(chromedp.CSS("main")))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"worker_timeout_killed", "request_terminate_timeout", "What to change", fpm.ConfigPath, "sleep.php"} {
		if !strings.Contains(strings.ToLower(text), strings.ToLower(want)) {
			t.Errorf("the page does not show %q:\n%s", want, text)
		}
	}
	shot, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	saveScreenshot(t, "error-page.png", shot)
}
