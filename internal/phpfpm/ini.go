package phpfpm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// IniFiles asks the php-fpm binary bin which php.ini it loads and which
// directory it scans for more .ini files, as its -i output says ("Loaded
// Configuration File", "Scan this dir for additional .ini files"). Either
// is "" when php-fpm has none.
func IniFiles(ctx context.Context, bin string) (ini, scanDir string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-i").Output()
	if err != nil {
		return "", "", fmt.Errorf("running %s -i to find its php.ini: %w", bin, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " => ")
		if !ok || v == "(none)" {
			continue
		}
		switch k {
		case "Loaded Configuration File":
			ini = v
		case "Scan this dir for additional .ini files":
			scanDir = v
		}
	}
	return ini, scanDir, nil
}
