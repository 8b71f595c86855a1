package doctor

import (
	"cmp"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// Starting and stopping: fcgiscope as a native sidecar, php-fpm's stop
// signal, process_control_timeout, terminationGracePeriodSeconds and the
// order in which nginx and php-fpm stop.

// checkSidecar checks that fcgiscope runs as a native sidecar, which
// starts before nginx and php-fpm and stops after them.
func (p *k8sPod) checkSidecar() {
	kc := p.fcgiscope
	if kc == nil {
		return
	}
	switch {
	case kc.init && !kc.sidecar:
		p.k.c.add(Finding{ID: "k8s_sidecar", Severity: SeverityError,
			Title:  fmt.Sprintf("fcgiscope is a plain init container of %s: the pod never starts", p.w.name()),
			Detail: "Init containers without restartPolicy: Always must exit before the next one starts; fcgiscope serve runs until it is stopped.",
			K8s:    []*Location{p.doc.loc(kc.at, kc.what())},
			Impact: "The pod stays in Init, and nginx and php-fpm never start.",
			Fix:    fmt.Sprintf("At %s add\n    restartPolicy: Always\nto the fcgiscope init container, which makes it a native sidecar (Kubernetes 1.29 and later).", p.doc.where(kc.at))})
	case !kc.init:
		p.k.c.add(Finding{ID: "k8s_sidecar", Severity: SeverityWarning,
			Title:  fmt.Sprintf("fcgiscope is a regular container of %s, not a native sidecar", p.w.name()),
			Detail: "Regular containers start together and stop together: on every rollout fcgiscope gets SIGTERM at the same moment as nginx and php-fpm, stops taking new connections and drains only the requests in flight (FCGISCOPE_SHUTDOWN_TIMEOUT). A native sidecar (an init container with restartPolicy: Always) starts before the containers and is stopped after all of them have exited.",
			K8s:    []*Location{p.doc.loc(kc.at, kc.what())},
			Impact: "Requests nginx still takes while it drains (its preStop, the seconds until the Service drops the pod) find fcgiscope's socket closed: 502 Bad Gateway. At start, nginx may pass requests before fcgiscope listens.",
			Fix:    fmt.Sprintf("Move the fcgiscope container (%s) from containers to initContainers and add\n    restartPolicy: Always\n(Kubernetes 1.29 and later). Its probes keep working; a startupProbe then holds back nginx and php-fpm until it passes, so give it /healthz, not /readyz.", p.doc.where(kc.at))})
	}
}

// k8sStop is how the kubelet stops php-fpm's container.
type k8sStop struct {
	// signal is the stop signal: SIGQUIT, SIGTERM, ..., or "" when the
	// image decides and the doctor does not know the image.
	signal string
	how    string
	loc    *Location
	// quit is set when preStop itself sends SIGQUIT to php-fpm, and
	// waits is set when it then waits for php-fpm to exit.
	quit, waits bool
	preStop     time.Duration
	preStopLoc  *Location
	// delay is how long php-fpm keeps serving once the pod is told to
	// stop: the whole preStop, or for a preStop that sends SIGQUIT the
	// sleep before it.
	delay time.Duration
}

var (
	sleepCmd = regexp.MustCompile(`(?:^|[\s;&|(])sleep\s+(\d+(?:\.\d+)?)(s?)\b`)
	quitCmd  = regexp.MustCompile(`kill\s+(?:-s\s*)?-?(?:SIG)?QUIT\b|kill\s+-3\b|pkill\s+(?:-s\s*)?-?(?:SIG)?QUIT\b|pkill\s+-3\b|kill\s+-s\s+(?:SIG)?QUIT\b`)
	waitCmd  = regexp.MustCompile(`\bwhile\b|\bsleep\b|\bwait\b|\buntil\b|\btimeout\b`)
	execFPM  = regexp.MustCompile(`\bexec\s+(\S*/)?php-fpm`)
)

// preStop reads a container's preStop hook: how long it sleeps, whether
// it sends SIGQUIT.
func (p *k8sPod) preStop(kc *k8sContainer) (st k8sStop) {
	lc := kc.c.Lifecycle
	if lc == nil || lc.PreStop == nil {
		return st
	}
	at := kc.at + ".lifecycle.preStop"
	switch {
	case lc.PreStop.Sleep != nil:
		st.preStop = time.Duration(lc.PreStop.Sleep.Seconds) * time.Second
		st.preStopLoc = p.doc.loc(at+".sleep.seconds", fmt.Sprintf("preStop sleep %ds  (%s)", lc.PreStop.Sleep.Seconds, kc.what()))
	case lc.PreStop.Exec != nil:
		cmd := strings.Join(lc.PreStop.Exec.Command, " ")
		st.preStopLoc = p.doc.loc(at+".exec.command", fmt.Sprintf("preStop: %s  (%s)", cmd, kc.what()))
		if m := sleepCmd.FindStringSubmatch(cmd); m != nil {
			f, _ := strconv.ParseFloat(m[1], 64)
			st.preStop = time.Duration(f * float64(time.Second))
		}
		st.delay = st.preStop
		if q := quitCmd.FindStringIndex(cmd); q != nil {
			st.quit = true
			st.waits = waitCmd.MatchString(cmd[q[1]:])
			st.delay = 0
			if m := sleepCmd.FindStringSubmatch(cmd[:q[0]]); m != nil {
				f, _ := strconv.ParseFloat(m[1], 64)
				st.delay = time.Duration(f * float64(time.Second))
			}
		}
		return st
	}
	st.delay = st.preStop
	return st
}

// stop works out how the kubelet stops php-fpm.
func (p *k8sPod) stop() k8sStop {
	kc := p.fpm
	st := p.preStop(kc)
	base, tag := imageName(kc.c.Image)
	switch {
	case kc.c.Lifecycle != nil && kc.c.Lifecycle.StopSignal != nil:
		st.signal = string(*kc.c.Lifecycle.StopSignal)
		st.how = "lifecycle.stopSignal"
		st.loc = p.doc.loc(kc.at+".lifecycle.stopSignal", "stopSignal: "+st.signal)
	case base == "php" && strings.Contains(tag, "fpm"):
		st.signal = "SIGQUIT"
		st.how = "the official php:*-fpm images' STOPSIGNAL SIGQUIT"
		st.loc = p.doc.loc(kc.at+".image", "image: "+kc.c.Image)
	}
	return st
}

// shellWithoutExec reports whether a container starts php-fpm under a
// shell that stays its parent, the shell then being PID 1.
func shellWithoutExec(c *corev1.Container) bool {
	args := append(slices.Clone(c.Command), c.Args...)
	if len(args) < 3 {
		return false
	}
	sh := path.Base(args[0])
	if sh != "sh" && sh != "bash" && sh != "ash" && sh != "dash" || args[1] != "-c" {
		return false
	}
	script := strings.Join(args[2:], " ")
	return strings.Contains(script, "php-fpm") && !execFPM.MatchString(script)
}

// checkStopSignal checks the signal that stops php-fpm, and that it
// reaches php-fpm: SIGQUIT lets its workers finish their requests.
func (p *k8sPod) checkStopSignal() {
	kc := p.fpm
	if kc == nil {
		return
	}
	st := p.stop()
	if kc.c.Lifecycle != nil && kc.c.Lifecycle.StopSignal != nil && (p.spec.OS == nil || p.spec.OS.Name == "") {
		p.k.c.add(Finding{ID: "k8s_stop_signal", Severity: SeverityError,
			Title:  "php-fpm's lifecycle.stopSignal needs spec.os.name, which the pod does not set",
			Detail: "Kubernetes accepts a container's stopSignal only in a pod whose spec.os.name says which operating system's signals are meant (ContainerStopSignals, alpha since Kubernetes 1.33).",
			K8s:    []*Location{st.loc},
			Impact: "The API server refuses the object: nothing of it is applied.",
			Fix:    fmt.Sprintf("At %s add\n    os:\n      name: linux\nor drop stopSignal and give the image STOPSIGNAL SIGQUIT.", p.doc.where(p.w.at))})
	}
	if shellWithoutExec(kc.c) {
		p.k.c.add(Finding{ID: "k8s_stop_signal", Severity: SeverityWarning,
			Title:  "php-fpm runs under a shell: the stop signal goes to the shell, not to php-fpm",
			Detail: "The kubelet signals the container's PID 1, here sh -c; a shell that is PID 1 ignores SIGTERM and SIGQUIT and does not pass them on.",
			K8s:    []*Location{p.doc.loc(kc.at+".command", strings.Join(append(slices.Clone(kc.c.Command), kc.c.Args...), " "))},
			Impact: "php-fpm never learns that it should stop: every rollout waits the whole terminationGracePeriodSeconds and then kills php-fpm with SIGKILL, cutting the requests in flight.",
			Fix:    "End the shell's script with exec php-fpm (as in `... && exec php-fpm`), so that php-fpm replaces the shell as PID 1."})
	}
	graceful := st.signal == "SIGQUIT" || (st.quit && st.waits)
	first := ""
	if p.nginx != nil {
		if ng := p.preStop(p.nginx); ng.delay > 0 {
			first = fmt.Sprintf("sleep %d; ", int(ng.delay/time.Second)) // as long as nginx keeps sending
		}
	}
	waitHook := fmt.Sprintf("    lifecycle:\n      preStop:\n        exec:\n          command: [\"sh\", \"-c\", \"%skill -QUIT 1; while kill -0 1 2>/dev/null; do sleep 1; done\"]", first)
	signalFix := fmt.Sprintf("in the image's Dockerfile\n    STOPSIGNAL SIGQUIT\n(images built FROM php:*-fpm inherit it), or, on Kubernetes 1.33 and later with the ContainerStopSignals feature gate, at %s\n    lifecycle:\n      stopSignal: SIGQUIT\nwith spec.os.name: linux", p.doc.where(kc.at))
	hookNote := "(the hook's process ends with php-fpm, and the kubelet may then report FailedPreStopHook)"
	quitFix := fmt.Sprintf("make SIGQUIT php-fpm's stop signal: %s. Failing both, a preStop hook that sends SIGQUIT and waits for php-fpm to exit:\n%s\n%s.", signalFix, waitHook, hookNote)
	switch {
	case st.quit && !st.waits && st.signal != "SIGQUIT":
		p.k.c.add(Finding{ID: "k8s_stop_signal", Severity: SeverityWarning,
			Title:  "php-fpm's preStop sends SIGQUIT but does not wait for php-fpm to finish",
			Detail: fmt.Sprintf("The stop signal (%s) follows as soon as preStop returns; php-fpm then switches from finishing to terminating and sends SIGTERM to its workers.", orDefault(st.signal, "the image's, SIGTERM unless it sets STOPSIGNAL")),
			K8s:    compactLocs([]*Location{st.preStopLoc, st.loc}),
			Impact: "Requests in flight are cut on every rollout: 502 Bad Gateway.",
			Fix:    fmt.Sprintf("Make SIGQUIT php-fpm's stop signal, and drop the kill from the hook: %s. Or let the hook (%s) wait for php-fpm to exit:\n%s\n%s.", signalFix, st.preStopLoc, waitHook, hookNote)})
	case graceful:
	case st.signal != "":
		fix := capitalize(quitFix)
		if st.how == "lifecycle.stopSignal" {
			fix = fmt.Sprintf("At %s set\n    stopSignal: SIGQUIT\nphp-fpm's graceful stop.", st.loc)
		}
		p.k.c.add(Finding{ID: "k8s_stop_signal", Severity: SeverityWarning,
			Title:  fmt.Sprintf("php-fpm is stopped with %s, which makes it stop at once", st.signal),
			Detail: fmt.Sprintf("%s tells php-fpm's master to terminate: it sends SIGTERM to every worker, which dies mid-request. SIGQUIT is php-fpm's graceful stop: workers finish their request first (up to process_control_timeout).", st.signal),
			K8s:    compactLocs([]*Location{st.loc}),
			Impact: "Requests in flight are cut on every rollout and every scale-down: 502 Bad Gateway (fcgiscope: worker_crashed, the worker having died on SIGTERM).",
			Fix:    fix})
	default:
		p.k.c.add(Finding{ID: "k8s_stop_signal", Severity: SeverityInfo,
			Title:  fmt.Sprintf("php-fpm's stop signal is its image's (%s), which the manifest does not show", kc.c.Image),
			Detail: "Without lifecycle.stopSignal the container runtime (containerd, CRI-O) stops the container with the image's STOPSIGNAL, SIGTERM when the image sets none. The official php:*-fpm images, and images built FROM them, set SIGQUIT, php-fpm's graceful stop; with SIGTERM php-fpm kills its workers mid-request.",
			K8s:    []*Location{p.doc.loc(kc.at+".image", "image: "+kc.c.Image)},
			Impact: "If the image does not set STOPSIGNAL SIGQUIT, requests in flight are cut on every rollout.",
			Fix:    fmt.Sprintf("Check with `docker inspect --format '{{.Config.StopSignal}}' %s`; if it is not SIGQUIT, %s", kc.c.Image, quitFix)})
	}
	// With the image's signal unknown, SIGQUIT is likely (images built
	// FROM php:*-fpm), and then process_control_timeout decides.
	if graceful || (st.signal == "" && !st.quit) {
		p.checkProcessControlTimeout(st)
	}
}

// processControlTimeout returns php-fpm's global process_control_timeout
// from the ConfigMaps, the last file that sets it winning.
func (p *k8sPod) processControlTimeout() (time.Duration, fpm.Setting, bool) {
	var d time.Duration
	var s fpm.Setting
	found := false
	for _, cfg := range p.fpmConfs {
		if g, ok := cfg.Global["process_control_timeout"]; ok && g.IsSet() {
			d, s, found = cfg.ProcessControlTimeout, g, true
		}
	}
	return d, s, found
}

// servingPool returns the pool fcgiscope sends requests to, or else the
// pool with the longest request_terminate_timeout.
func (p *k8sPod) servingPool() *fpm.Pool {
	if p.fcgiscope != nil && p.fpm != nil {
		up := p.fcgiscopeSetting("FCGISCOPE_UPSTREAM", "127.0.0.1:9000")
		if a, err := fcgi.ParseAddr(up.value); err == nil {
			for _, pl := range p.pools {
				if !pl.ListenAddr.IsZero() && sameSocket(k8sEnd{kc: p.fpm, addr: pl.ListenAddr}, k8sEnd{kc: p.fcgiscope, addr: a}) {
					return pl
				}
			}
		}
	}
	var best *fpm.Pool
	for _, pl := range p.pools {
		if best == nil || pl.RequestTerminateTimeout > best.RequestTerminateTimeout || pl.RequestTerminateTimeout == 0 && best.RequestTerminateTimeout > 0 {
			best = pl
		}
	}
	return best
}

// checkProcessControlTimeout checks what php-fpm does with SIGQUIT.
//
// php-fpm's master, on SIGQUIT, sends SIGQUIT to every worker (a worker
// then finishes its request and exits) and sets a timer of
// process_control_timeout seconds; when it fires, it sends SIGTERM to the
// workers still running (they die at once), and SIGKILL a second later
// (fpm_pctl_action_next in sapi/fpm/fpm/fpm_process_ctl.c). With the
// default, 0, the timer is due at once: the event loop fires it on its
// next turn, within a second and usually sooner, as soon as the first idle
// worker's exit wakes it. So 0 does not mean "wait forever": it makes
// SIGQUIT almost as abrupt as SIGTERM.
func (p *k8sPod) checkProcessControlTimeout(st k8sStop) {
	if len(p.fpmConfs) == 0 {
		return
	}
	pct, s, set := p.processControlTimeout()
	pool := p.servingPool()
	var term time.Duration
	var termLoc *Location
	if pool != nil {
		term = pool.RequestTerminateTimeout
		termLoc = p.fpmLoc(pool.Settings["request_terminate_timeout"])
	}
	want := term
	if want <= 0 {
		want = 30 * time.Second
	}
	loc := p.fpmLoc(s)
	where := ""
	var globalFile *k8sFile
	for _, cfg := range p.fpmConfs {
		if _, ok := cfg.Global["process_control_timeout"]; ok || globalFile == nil {
			globalFile = p.fpmFiles[cfg.Path]
		}
	}
	if loc != nil {
		where = "At " + loc.String() + " set"
	} else if globalFile != nil {
		where = fmt.Sprintf("In %s (a [global] section may stand in a pool file), add", globalFile.name())
	}
	switch {
	case pct == 0:
		f := Finding{ID: "k8s_process_control_timeout", Severity: SeverityWarning,
			Title:  "process_control_timeout is 0: php-fpm's graceful stop cuts requests in flight anyway",
			Detail: "On SIGQUIT php-fpm's master sends SIGQUIT to its workers (each finishes its request, then exits) and escalates to SIGTERM, which kills a worker mid-request, after process_control_timeout seconds. With 0, php-fpm's default, that timer is due at once: the master sends SIGTERM on the next turn of its event loop, at most about a second later and usually at once, when the first idle worker exits. 0 does not mean to wait without limit.",
			K8s:    compactLocs([]*Location{loc, st.loc, st.preStopLoc, termLoc}),
			Impact: "Every rollout and scale-down cuts the requests running in that pod: 502 Bad Gateway (fcgiscope: worker_crashed).",
			Fix:    fmt.Sprintf("%s\n    process_control_timeout = %s\n(as long as request_terminate_timeout, so that every request may finish), and keep terminationGracePeriodSeconds above it plus php-fpm's preStop.", where, fmtDur(want))}
		if !set {
			f.Detail += " No ConfigMap sets it, and the official images' php-fpm.conf leaves it at 0."
		}
		p.k.c.add(f)
	case term > 0 && pct < term:
		p.k.c.add(Finding{ID: "k8s_process_control_timeout", Severity: SeverityWarning,
			Title:  fmt.Sprintf("process_control_timeout (%s) is shorter than request_terminate_timeout (%s)", fmtDur(pct), fmtDur(term)),
			Detail: fmt.Sprintf("On SIGQUIT php-fpm lets workers finish for %s, then sends SIGTERM; a request may run up to %s.", fmtDur(pct), fmtDur(term)),
			K8s:    compactLocs([]*Location{loc, termLoc}),
			Impact: fmt.Sprintf("Requests running longer than %s when a rollout stops the pod are cut: 502 Bad Gateway.", fmtDur(pct)),
			Fix:    fmt.Sprintf("%s\n    process_control_timeout = %s", where, fmtDur(term))})
	}
}

// k8sGrace is terminationGracePeriodSeconds and where it is said.
func (p *k8sPod) grace() (time.Duration, *Location, string) {
	at := p.w.at + ".terminationGracePeriodSeconds"
	if g := p.spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second, p.doc.loc(at, fmt.Sprintf("terminationGracePeriodSeconds: %d", *g)), "At " + p.doc.where(at) + " set"
	}
	return 30 * time.Second, p.doc.loc(p.w.at, "terminationGracePeriodSeconds not set: 30s"), "At " + p.doc.where(p.w.at) + " add"
}

// checkGrace compares the pod's grace period with how long php-fpm may
// take to stop: its preStop, then its longest request.
func (p *k8sPod) checkGrace() {
	if p.fpm == nil {
		return
	}
	pool := p.servingPool()
	if pool == nil {
		p.k.c.notChecked("kubernetes: %s: terminationGracePeriodSeconds against request_terminate_timeout: php-fpm's pool is in no ConfigMap given", p.w.name())
		return
	}
	grace, gloc, gwhere := p.grace()
	st := p.stop()
	term := pool.RequestTerminateTimeout
	termLoc := p.fpmLoc(pool.Settings["request_terminate_timeout"])
	if term <= 0 {
		p.k.c.add(Finding{ID: "k8s_termination_grace", Severity: SeverityInfo,
			Title:  fmt.Sprintf("Nothing bounds a PHP request of %s, so no grace period is long enough", p.w.name()),
			Detail: fmt.Sprintf("Pool [%s] has no request_terminate_timeout; the pod's grace period is %s.", pool.Name, fmtDur(grace)),
			K8s:    compactLocs([]*Location{p.poolLoc(pool), gloc}),
			Impact: fmt.Sprintf("A request still running %s after the pod starts to stop is killed with SIGKILL on every rollout.", fmtDur(max(grace-st.delay, 0))),
			Fix:    fmt.Sprintf("%s\n    request_terminate_timeout = %s\nand make terminationGracePeriodSeconds longer than it plus php-fpm's preStop.", p.settingWhere(pool, "request_terminate_timeout"), fmtDur(max(grace-st.delay-10*time.Second, 10*time.Second)))})
		return
	}
	need := st.delay + term
	if grace > need {
		return
	}
	suggest := (need + 10*time.Second).Truncate(time.Second)
	f := Finding{ID: "k8s_termination_grace", Severity: SeverityWarning,
		Title:  fmt.Sprintf("terminationGracePeriodSeconds (%s) is not longer than php-fpm's preStop (%s) plus request_terminate_timeout (%s)", fmtDur(grace), fmtDur(st.delay), fmtDur(term)),
		Detail: fmt.Sprintf("The kubelet kills every container with SIGKILL %s after the pod starts to stop, preStop hooks included. php-fpm starts stopping after its preStop (%s) and may then need up to request_terminate_timeout (%s) for a request to end.", fmtDur(grace), fmtDur(st.delay), fmtDur(term)),
		K8s:    compactLocs([]*Location{gloc, st.preStopLoc, termLoc}),
		Impact: fmt.Sprintf("On every rollout, a request still running %s after the pod starts to stop is killed: 502 Bad Gateway.", fmtDur(max(grace-st.delay, 0))),
		Fix:    fmt.Sprintf("%s\n    terminationGracePeriodSeconds: %d\n(php-fpm's preStop %s + request_terminate_timeout %s + 10s), or lower request_terminate_timeout.", gwhere, int(suggest/time.Second), fmtDur(st.delay), fmtDur(term)),
	}
	p.k.c.add(f)
}

// checkShutdownOrder finds php-fpm stopping while nginx still sends it
// requests: nginx's preStop keeps it serving while the Service drops the
// pod, and php-fpm, signalled at the same moment, closes its socket.
func (p *k8sPod) checkShutdownOrder() {
	if p.fpm == nil || p.nginx == nil || p.fpm.init || p.nginx.init {
		return
	}
	ng := p.preStop(p.nginx)
	fp := p.preStop(p.fpm)
	if ng.delay <= 0 || fp.delay >= ng.delay {
		return
	}
	fix := fmt.Sprintf("Give php-fpm the same wait before it stops; at %s add\n    lifecycle:\n      preStop:\n        sleep:\n          seconds: %d\n(or exec [\"sleep\", \"%d\"]), and count it in terminationGracePeriodSeconds.", p.doc.where(p.fpm.at), int(ng.delay/time.Second), int(ng.delay/time.Second))
	if fp.quit {
		fix = fmt.Sprintf("In php-fpm's preStop (%s) wait before sending SIGQUIT: start its command with sleep %d;.", fp.preStopLoc, int(ng.delay/time.Second))
	}
	p.k.c.add(Finding{ID: "k8s_shutdown_order", Severity: SeverityWarning,
		Title:  fmt.Sprintf("php-fpm stops while nginx still takes requests: nginx's preStop waits %s, php-fpm's %s", fmtDur(ng.delay), fmtDur(fp.delay)),
		Detail: "All regular containers of a pod are stopped at the same moment. nginx's preStop keeps it serving while the Service and the ingress stop sending to the pod; php-fpm gets its stop signal after its own preStop, and its workers then take no new request.",
		K8s:    compactLocs([]*Location{ng.preStopLoc, cmp.Or(fp.preStopLoc, p.doc.loc(p.fpm.at, p.fpm.what()+": no preStop"))}),
		Impact: fmt.Sprintf("For up to %s of every rollout, the PHP requests nginx still takes find php-fpm no longer accepting: 502 Bad Gateway (fcgiscope: upstream_socket_stale, or upstream_refused over TCP).", fmtDur(ng.delay-fp.delay)),
		Fix:    fix})
}
