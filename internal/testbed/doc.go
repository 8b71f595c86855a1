// Package testbed starts real php-fpm and nginx processes (and the fcgiscope
// binary) for integration tests.
//
// Every helper writes its configuration into a fresh, short temporary
// directory, waits until the started process accepts connections, and
// registers a t.Cleanup that stops the process by pid. Nothing touches the
// system services or their directories, so tests can run next to a real
// installation and in parallel with each other.
//
// A typical test looks like this:
//
//	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
//	ngx := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: fpm.Addr, Root: testbed.PHPRoot(t)})
//	resp, err := http.Get(ngx.URL + "/hello.php")
//
// When php-fpm or nginx is not installed, RequireFPM and RequireNginx skip the
// test, unless CI=true, where a missing binary is a failure: in CI a silently
// skipped integration suite would look like a passing one.
package testbed
