package doctor

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
)

// php-fpm's memory: its workers' memory_limit against the container's
// limit.

// checkMemory compares php-fpm's memory limit with what its workers may
// take: pm.max_children × memory_limit.
func (p *k8sPod) checkMemory() {
	if p.fpm == nil || len(p.pools) == 0 {
		return
	}
	lim, ok := p.fpm.c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		p.k.c.notChecked("kubernetes: %s: php-fpm's memory: its container has no memory limit (resources.limits.memory)", p.w.name())
		return
	}
	limit := lim.Value()
	limAt := p.fpm.at + ".resources.limits.memory"
	var total int64
	var parts []string
	var locs []*Location
	var biggest *fpm.Pool
	var biggestML int64
	for _, pool := range p.pools {
		if pool.MaxChildren <= 0 {
			continue
		}
		ml, mloc, from := p.poolMemoryLimit(pool)
		if ml < 0 {
			p.k.c.notChecked("kubernetes: %s: pool [%s] has memory_limit = -1: a single request may take all of php-fpm's %s", p.w.name(), pool.Name, lim.String())
			continue
		}
		total += ml * int64(pool.MaxChildren)
		parts = append(parts, fmt.Sprintf("pool [%s]: pm.max_children %d × memory_limit %s (%s) = %s", pool.Name, pool.MaxChildren, fmtBytes(ml), from, fmtBytes(ml*int64(pool.MaxChildren))))
		locs = append(locs, p.fpmLoc(pool.Settings["pm.max_children"]), mloc)
		if biggest == nil || ml*int64(pool.MaxChildren) > biggestML*int64(biggest.MaxChildren) {
			biggest, biggestML = pool, ml
		}
	}
	if biggest == nil || total <= limit {
		return
	}
	fit := max(int((limit*8/10-(total-biggestML*int64(biggest.MaxChildren)))/biggestML), 1)
	raise := (total*5/4 + (1<<20 - 1)) >> 20
	p.k.c.add(Finding{ID: "k8s_memory_limit", Severity: SeverityWarning,
		Title:  fmt.Sprintf("php-fpm's workers may use %s at full load; its container's memory limit is %s", fmtBytes(total), lim.String()),
		Detail: strings.Join(parts, "; ") + ". Each busy worker may grow to memory_limit; the master and opcache's shared memory come on top.",
		K8s:    compactLocs(append([]*Location{p.doc.loc(limAt, "limits.memory: "+lim.String())}, locs...)),
		Impact: "When busy workers together pass the limit, the kernel's OOM killer kills one of them, or the master (then the container restarts): their requests get 502 Bad Gateway (fcgiscope: worker_oom_killed).",
		Fix:    fmt.Sprintf("%s\n    pm.max_children = %d\n(80%% of the limit / memory_limit), or at %s raise the limit to %dMi.", capitalize(p.settingWhere(biggest, "pm.max_children")), fit, p.doc.where(limAt), raise)})
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// poolMemoryLimit returns the memory_limit of a pool's scripts: the pool's
// php_value or php_admin_value, else a php.ini in a ConfigMap, else PHP's
// default.
func (p *k8sPod) poolMemoryLimit(pool *fpm.Pool) (int64, *Location, string) {
	if pool.MemoryLimit != "" {
		v := pool.PHPValues["memory_limit"]
		return parseIniBytes(pool.MemoryLimit), p.fpmLoc(v.Setting), v.Key
	}
	if p.memoryLimit != "" {
		return parseIniBytes(p.memoryLimit), p.memoryLimitLoc, "php.ini"
	}
	return 128 << 20, nil, "PHP's default, unless the image's php.ini sets another"
}
