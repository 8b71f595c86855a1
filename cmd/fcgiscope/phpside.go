package main

import (
	"context"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/cgroup"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/phpfpm"
)

// watchPHP gives the classifier what PHP and the kernel say besides
// php-fpm's own log: php.ini's limits, PHP's error log, php-fpm's memory
// cgroup and file system, and the kernel's OOM kills. Its followers run
// until ctx ends. iniPath and logPath override where php.ini and PHP's
// error log are looked for.
func watchPHP(ctx context.Context, c *diagnostics.Classifier, conf *fpm.Config, iniPath, logPath string, log zerolog.Logger) {
	c.PHPIni = loadPHPIni(ctx, conf, iniPath, log)
	master := &fpm.Master{Config: conf}
	if conf != nil {
		c.FPMRoot = master.Root
		w := &cgroup.Watch{Pid: master.Pid}
		if mem, err := w.Baseline(); err != nil {
			log.Info().Err(err).Msg("php-fpm's memory cgroup is not visible from here: a worker the kernel's OOM killer takes is reported as dying on SIGKILL, not as worker_oom_killed")
		} else {
			log.Info().Str("cgroup", mem.Dir).Int64("memory_limit", mem.Limit).Int64("oom_kill", mem.OOMKills).Msg("watching php-fpm's memory cgroup for OOM kills")
		}
		// Kept even when not visible yet: php-fpm may start later.
		c.Memory = w
	}
	k := &cgroup.KernelLog{}
	if err := k.Start(ctx); err == nil {
		c.Kernel = k
	} else {
		log.Debug().Err(err).Msg("not reading the kernel's log for OOM kills")
	}
	if path := phpErrorLog(c.Pool, c.PHPIni, logPath, master, log); path != "" {
		l := &fpm.MessageLog{Path: path}
		go func() {
			if err := l.Run(ctx); err != nil {
				log.Warn().Err(err).Str("php_log", path).Msg("cannot follow PHP's error log")
			}
		}()
		c.PHPLog = l
		log.Info().Str("php_log", path).Msg("reading PHP's error log to explain what PHP reports only there")
	}
}

// loadPHPIni reads the php.ini php-fpm loads: the one named, else the one
// beside php-fpm's configuration, else the one the local php-fpm binary
// says it loads.
func loadPHPIni(ctx context.Context, conf *fpm.Config, path string, log zerolog.Logger) *fpm.PHPIni {
	scan := ""
	if path != "" {
		scan = filepath.Join(filepath.Dir(path), "conf.d")
	} else {
		path, scan = fpm.FindPHPIni(conf)
	}
	if path == "" && scan == "" {
		if bin, err := phpfpm.Find(); err == nil {
			path, scan, _ = phpfpm.IniFiles(ctx, bin)
		}
	}
	if path == "" && scan == "" {
		log.Info().Msg("php.ini not found: PHP's limits are taken as PHP's defaults unless the pool sets them; set FCGISCOPE_PHP_INI")
		return nil
	}
	ini, err := fpm.LoadPHPIni(path, scan)
	if err != nil {
		log.Warn().Err(err).Msg("php.ini not read; set FCGISCOPE_PHP_INI")
		return nil
	}
	log.Info().Strs("files", ini.Files).Msg("read php.ini")
	return ini
}

// phpErrorLog returns the file PHP writes its errors to, when fcgiscope
// can follow it, and says what it finds when that is not a file.
func phpErrorLog(pool *fpm.Pool, ini *fpm.PHPIni, path string, master *fpm.Master, log zerolog.Logger) string {
	if path != "" {
		return path
	}
	s := fpm.PHPSetting(pool, ini, "error_log")
	v := s.Value
	switch {
	case v == "":
		return "" // into each request's FastCGI stderr, which fcgiscope reads
	case v == "syslog":
		log.Warn().Str("error_log", s.Describe("error_log")).Msg("PHP logs its errors to syslog, which fcgiscope does not read: set error_log to a file to have them explained")
		return ""
	case fpm.ToWorkerStderr(v):
		if pool != nil && !pool.CatchWorkersOutput {
			log.Warn().Str("error_log", s.Describe("error_log")).Msg("PHP logs its errors to the workers' standard error, which php-fpm throws away without catch_workers_output = yes in the pool")
		}
		return "" // into php-fpm's own log, which fcgiscope reads
	}
	if !filepath.IsAbs(v) {
		// Relative to the worker's working directory.
		dir := "/"
		if pool != nil && pool.Chdir != "" {
			dir = pool.Chdir
		}
		v = filepath.Join(dir, v)
	}
	if pool != nil && pool.Chroot != "" {
		v = filepath.Join(pool.Chroot, v)
	}
	if fpm.MessageLogReadable(v) {
		return v
	}
	if root := master.Root(); root != "" && fpm.MessageLogReadable(filepath.Join(root, v)) {
		return filepath.Join(root, v)
	}
	log.Warn().Str("error_log", s.Describe("error_log")).Msg("PHP's error log cannot be read from here: PHP errors that never reach the request's stderr (post_max_size, a full disk) go unexplained; set FCGISCOPE_PHP_LOG to where fcgiscope sees that file")
	return ""
}
