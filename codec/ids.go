package codec

import (
	"strconv"
	"sync/atomic"
)

// IDGen makes unique ids for the server's own envelopes: "arq_<kind>_<node>_<counter>", the counter in
// base 36. The node keeps ids of different nodes apart; the counter is atomic, so one IDGen is shared by
// every goroutine of a node without locks. Each IDGen owns its counter: no package state.
type IDGen struct {
	prefix string // "_<node>_", precomputed so Append only copies
	n      atomic.Uint64
}

// NewIDGen returns a generator for node. Characters outside [A-Za-z0-9_.:-] are replaced with "_" so
// every id it makes is a valid envelope id that clients can send back (as request_id, for example).
func NewIDGen(node string) *IDGen {
	b := make([]byte, 0, len(node)+2)
	b = append(b, '_')
	for i := 0; i < len(node); i++ {
		c := node[i]
		if !idChar[c] {
			c = '_'
		}
		b = append(b, c)
	}
	b = append(b, '_')
	return &IDGen{prefix: string(b)}
}

// Append appends "arq_"+kind+"_"+node+"_"+base36(counter) to dst.
func (g *IDGen) Append(dst []byte, kind string) []byte {
	dst = append(dst, idPrefix...)
	dst = append(dst, kind...)
	dst = append(dst, g.prefix...)
	return strconv.AppendUint(dst, g.n.Add(1), 36)
}

// Next returns a new id as a string.
func (g *IDGen) Next(kind string) string {
	var buf [64]byte
	return string(g.Append(buf[:0], kind))
}
