package doctor

import (
	"fmt"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// fcgiscope's probes and its admin endpoint.

// fcgiscope's admin paths: the probes, and what else answers there.
var fcgiscopeAdminPaths = []string{"/metrics", "/", "/api/requests", "/api/summary", "/api/events", "/login"}

// checkProbes checks fcgiscope's admin endpoint and its probes: that
// they reach it, ask the right path, and do not fail where they need not.
func (p *k8sPod) checkProbes() {
	kc := p.fcgiscope
	if kc == nil {
		return
	}
	admin := p.fcgiscopeSetting("FCGISCOPE_ADMIN_LISTEN", "127.0.0.1:9180")
	token := p.fcgiscopeSetting("FCGISCOPE_ADMIN_TOKEN", "")
	insecure := p.fcgiscopeSetting("FCGISCOPE_ADMIN_INSECURE", "false")
	insecureOn, _ := strconv.ParseBool(insecure.value)
	host, port, perr := net.SplitHostPort(admin.value)
	adminPort, _ := strconv.Atoi(port)
	hasToken := token.set && (token.value != "" || !token.known)
	exposed := admin.known && admin.value != "" && perr == nil && !isLoopback(host)
	if exposed && !hasToken && !insecureOn && insecure.known {
		p.k.c.add(Finding{ID: "k8s_admin_listen", Severity: SeverityError,
			Title:  fmt.Sprintf("fcgiscope refuses to start: its admin endpoint %s is reachable from other hosts without a token", admin.value),
			Detail: "fcgiscope's admin endpoint shows recent URIs, script paths and php-fpm's stderr; listening beyond loopback it wants FCGISCOPE_ADMIN_TOKEN, or FCGISCOPE_ADMIN_INSECURE=true to accept that.",
			K8s:    []*Location{admin.loc},
			Impact: "fcgiscope exits at start; the container restarts in a loop (CrashLoopBackOff) and every request fails.",
			Fix:    fmt.Sprintf("Next to %s add FCGISCOPE_ADMIN_TOKEN from a Secret:\n    - name: FCGISCOPE_ADMIN_TOKEN\n      valueFrom:\n        secretKeyRef: {name: fcgiscope-admin, key: token}\n(the probes need no token), or FCGISCOPE_ADMIN_INSECURE=\"true\" and a NetworkPolicy.", admin.loc)})
	}
	probes := []struct {
		kind string
		pr   *corev1.Probe
	}{{"livenessProbe", kc.c.LivenessProbe}, {"readinessProbe", kc.c.ReadinessProbe}, {"startupProbe", kc.c.StartupProbe}}
	fpmIsRegular := p.fpm != nil && !p.fpm.init
	for _, pb := range probes {
		if pb.pr == nil {
			continue
		}
		at := kc.at + "." + pb.kind
		loc := p.doc.loc(at, pb.kind)
		h := pb.pr.HTTPGet
		switch {
		case pb.pr.Exec != nil:
			cmd := pb.pr.Exec.Command
			base, _ := imageName(kc.c.Image)
			if len(cmd) > 0 && base == "fcgiscope" && path.Base(cmd[0]) != "fcgiscope" {
				p.k.c.add(Finding{ID: "k8s_probe", Severity: SeverityError,
					Title:  fmt.Sprintf("fcgiscope's %s runs %s, which its image does not have", pb.kind, cmd[0]),
					Detail: "The fcgiscope image is distroless: it holds /fcgiscope and nothing else, no shell, curl or wget.",
					K8s:    []*Location{p.doc.loc(at+".exec.command", strings.Join(cmd, " "))},
					Impact: "The probe always fails: " + probeFailure(pb.kind),
					Fix:    fmt.Sprintf("At %s use the admin port instead:\n    httpGet:\n      path: %s\n      port: %d", p.doc.where(at), probePath(pb.kind), max(adminPort, 9180))})
			}
			continue
		case pb.pr.GRPC != nil:
			p.k.c.add(Finding{ID: "k8s_probe", Severity: SeverityError,
				Title:  fmt.Sprintf("fcgiscope's %s is a gRPC probe; fcgiscope serves no gRPC health service", pb.kind),
				K8s:    []*Location{loc},
				Impact: "The probe always fails: " + probeFailure(pb.kind),
				Fix:    fmt.Sprintf("At %s use\n    httpGet:\n      path: %s\n      port: %d", p.doc.where(at), probePath(pb.kind), max(adminPort, 9180))})
			continue
		case h == nil:
			continue // tcpSocket: it only says that the port is open
		}
		hat := at + ".httpGet"
		// Where the kubelet connects.
		pport, pname := 0, ""
		switch h.Port.Type {
		case intstr.Int:
			pport = int(h.Port.IntVal)
		case intstr.String:
			pname = h.Port.StrVal
			for _, cp := range kc.c.Ports {
				if cp.Name == pname {
					pport = int(cp.ContainerPort)
				}
			}
			if pport == 0 {
				p.k.c.add(Finding{ID: "k8s_probe", Severity: SeverityError,
					Title:  fmt.Sprintf("fcgiscope's %s names port %q, which the container does not declare", pb.kind, pname),
					K8s:    []*Location{p.doc.loc(hat+".port", "port: "+pname)},
					Impact: "The probe always fails: " + probeFailure(pb.kind),
					Fix:    fmt.Sprintf("At %s declare it:\n    ports:\n      - name: %s\n        containerPort: %d", p.doc.where(kc.at), pname, max(adminPort, 9180))})
				continue
			}
		}
		switch {
		case admin.known && admin.value == "":
			p.k.c.add(Finding{ID: "k8s_probe", Severity: SeverityError,
				Title:  fmt.Sprintf("fcgiscope's %s asks its admin endpoint, which FCGISCOPE_ADMIN_LISTEN= turns off", pb.kind),
				K8s:    []*Location{p.doc.loc(hat, pb.kind+" httpGet"), admin.loc},
				Impact: "The probe always fails: " + probeFailure(pb.kind),
				Fix:    fmt.Sprintf("At %s set FCGISCOPE_ADMIN_LISTEN=0.0.0.0:9180 with FCGISCOPE_ADMIN_TOKEN (or FCGISCOPE_ADMIN_INSECURE=true), and probe port 9180.", admin.loc)})
			continue
		case admin.known && perr == nil && pport != adminPort:
			p.k.c.add(Finding{ID: "k8s_probe", Severity: SeverityError,
				Title:  fmt.Sprintf("fcgiscope's %s goes to port %d; its admin endpoint listens on %s", pb.kind, pport, admin.value),
				K8s:    []*Location{p.doc.loc(hat+".port", "port: "+h.Port.String()), admin.loc},
				Impact: "The probe always fails (connection refused): " + probeFailure(pb.kind),
				Fix:    fmt.Sprintf("At %s probe port %d.", p.doc.where(hat+".port"), adminPort)})
			continue
		case admin.known && perr == nil && isLoopback(host):
			p.k.c.add(Finding{ID: "k8s_probe", Severity: SeverityError,
				Title:  fmt.Sprintf("fcgiscope's %s cannot reach the admin endpoint: it listens on %s, loopback only", pb.kind, admin.value),
				Detail: "The kubelet probes from the node, connecting to the pod's IP address; 127.0.0.1 inside the pod is out of its reach.",
				K8s:    []*Location{p.doc.loc(hat, pb.kind+" httpGet"), admin.loc},
				Impact: "The probe always fails (connection refused): " + probeFailure(pb.kind),
				Fix:    fmt.Sprintf("At %s listen on all of the pod's addresses, FCGISCOPE_ADMIN_LISTEN=0.0.0.0:%d, with FCGISCOPE_ADMIN_TOKEN from a Secret (the probes need none) or FCGISCOPE_ADMIN_INSECURE=true behind a NetworkPolicy.", admin.loc, adminPort)})
			continue
		case h.Host != "" && isLoopback(h.Host):
			p.k.c.add(Finding{ID: "k8s_probe", Severity: SeverityError,
				Title:  fmt.Sprintf("fcgiscope's %s sets host %s: the node's loopback, not the pod's", pb.kind, h.Host),
				K8s:    []*Location{p.doc.loc(hat+".host", "host: "+h.Host)},
				Impact: "The probe always fails: " + probeFailure(pb.kind),
				Fix:    fmt.Sprintf("Remove host at %s: the kubelet then uses the pod's IP address.", p.doc.where(hat+".host"))})
			continue
		case h.Scheme == corev1.URISchemeHTTPS:
			p.k.c.add(Finding{ID: "k8s_probe", Severity: SeverityError,
				Title:  fmt.Sprintf("fcgiscope's %s uses HTTPS; the admin endpoint speaks plain HTTP", pb.kind),
				K8s:    []*Location{p.doc.loc(hat+".scheme", "scheme: HTTPS")},
				Impact: "The TLS handshake fails and so does the probe: " + probeFailure(pb.kind),
				Fix:    fmt.Sprintf("Remove scheme: HTTPS at %s.", p.doc.where(hat+".scheme"))})
			continue
		}
		pathV, _, _ := strings.Cut(h.Path, "?")
		ploc := p.doc.loc(hat+".path", "path: "+h.Path)
		switch {
		case pathV == "/healthz" || pathV == "/readyz":
		case slices.Contains(fcgiscopeAdminPaths, pathV):
			p.k.c.add(Finding{ID: "k8s_probe", Severity: SeverityWarning,
				Title:  fmt.Sprintf("fcgiscope's %s asks %s, which is no health check", pb.kind, pathV),
				Detail: fmt.Sprintf("%s answers 200 while fcgiscope runs, but says nothing about php-fpm, and with FCGISCOPE_ADMIN_TOKEN set it answers 401 to the kubelet, which sends no token.", pathV),
				K8s:    []*Location{ploc},
				Impact: "With a token the probe always fails: " + probeFailure(pb.kind),
				Fix:    fmt.Sprintf("At %s use\n    path: %s", p.doc.where(hat+".path"), probePath(pb.kind))})
			continue
		default:
			p.k.c.add(Finding{ID: "k8s_probe", Severity: SeverityError,
				Title:  fmt.Sprintf("fcgiscope's %s asks %s, which fcgiscope answers with 404", pb.kind, orDefault(pathV, `""`)),
				Detail: "fcgiscope's admin endpoint has /healthz (200 while fcgiscope runs) and /readyz (200 while php-fpm accepts FastCGI, else 503 naming the cause); it has no other health path.",
				K8s:    []*Location{ploc},
				Impact: "The probe always fails: " + probeFailure(pb.kind),
				Fix:    fmt.Sprintf("At %s use\n    path: %s", p.doc.where(hat+".path"), probePath(pb.kind))})
			continue
		}
		switch {
		case pb.kind == "livenessProbe" && pathV == "/readyz":
			p.k.c.add(Finding{ID: "k8s_probe", Severity: SeverityWarning,
				Title:  "fcgiscope's livenessProbe asks /readyz, which fails whenever php-fpm is down or busy",
				Detail: "/readyz is answered by a php-fpm worker (GET_VALUES, or ping.path): it fails while php-fpm restarts and while every worker is busy. A failing liveness probe restarts fcgiscope, which fixes neither.",
				K8s:    []*Location{ploc},
				Impact: "Under load, or while php-fpm restarts, the kubelet restarts fcgiscope: the requests it holds are cut (502) and the pod loses its explanations.",
				Fix:    fmt.Sprintf("At %s use\n    path: /healthz\nand keep /readyz for the readinessProbe.", p.doc.where(hat+".path"))})
		case pb.kind == "readinessProbe" && pathV == "/healthz":
			p.k.c.add(Finding{ID: "k8s_probe", Severity: SeverityWarning,
				Title:  "fcgiscope's readinessProbe asks /healthz, which passes with php-fpm down",
				Detail: "/healthz answers 200 while fcgiscope runs; /readyz answers 200 only while php-fpm accepts FastCGI.",
				K8s:    []*Location{ploc},
				Impact: "A pod whose php-fpm is down stays in the Service and answers 502 to its share of the traffic.",
				Fix:    fmt.Sprintf("At %s use\n    path: /readyz", p.doc.where(hat+".path"))})
		case pb.kind == "startupProbe" && pathV == "/readyz" && kc.sidecar && fpmIsRegular:
			p.k.c.add(Finding{ID: "k8s_probe", Severity: SeverityError,
				Title:  "fcgiscope's startupProbe asks /readyz, but as a native sidecar it must pass before php-fpm starts: the pod never starts",
				Detail: fmt.Sprintf("The kubelet starts the regular containers (php-fpm: %s) only after a native sidecar's startupProbe succeeds, and /readyz succeeds only once php-fpm answers.", p.fpm.what()),
				K8s:    []*Location{ploc, p.doc.loc(kc.at, kc.what())},
				Impact: "php-fpm and nginx never start; the startup probe fails until its failureThreshold, the kubelet restarts fcgiscope, and so on.",
				Fix:    fmt.Sprintf("At %s use\n    path: /healthz\n(and /readyz for the readinessProbe).", p.doc.where(hat+".path"))})
		}
	}
	if kc.c.ReadinessProbe == nil {
		p.k.c.add(Finding{ID: "k8s_probe", Severity: SeverityInfo,
			Title:  "fcgiscope has no readinessProbe",
			Detail: "fcgiscope's /readyz answers 200 only while php-fpm accepts FastCGI.",
			K8s:    []*Location{p.doc.loc(kc.at, kc.what())},
			Impact: "A pod whose php-fpm is down stays in the Service, unless another container's readiness probe notices.",
			Fix:    fmt.Sprintf("At %s add\n    readinessProbe:\n      httpGet:\n        path: /readyz\n        port: %d\n      periodSeconds: 5", p.doc.where(kc.at), max(adminPort, 9180))})
	}
}

func probePath(kind string) string {
	if kind == "livenessProbe" {
		return "/healthz"
	}
	return "/readyz"
}

func probeFailure(kind string) string {
	switch kind {
	case "livenessProbe":
		return "the kubelet restarts fcgiscope again and again (CrashLoopBackOff), cutting the requests it holds."
	case "readinessProbe":
		return "the pod never becomes Ready, and the Service sends it no traffic."
	}
	return "the container is restarted before it ever runs, and the pod never becomes Ready."
}
