package proxy

import (
	"errors"
	"syscall"
)

// isTemporaryAcceptError reports whether Accept failed for a reason that
// passes, such as running out of file descriptors.
func isTemporaryAcceptError(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}
