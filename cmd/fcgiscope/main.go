// Command fcgiscope is a FastCGI sidecar that relays between a web server
// and php-fpm and explains every failed request.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:]))
}
