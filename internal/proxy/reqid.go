package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"
)

// requestIDs makes up ids for requests the web server sent without one: a
// random prefix per process and a counter, unique without a random read per
// request.
type requestIDs struct {
	prefix string
	seq    atomic.Uint64
}

func (g *requestIDs) init() {
	var b [6]byte
	rand.Read(b[:])
	g.prefix = hex.EncodeToString(b[:]) + "-"
}

func (g *requestIDs) next() string {
	return g.prefix + strconv.FormatUint(g.seq.Add(1), 10)
}
