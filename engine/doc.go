// Package engine serves WebSocket connections on gnet event loops: the HTTP
// upgrade, frame parsing, and a batched, bounded write path.
//
// It knows nothing of envelopes, rooms or channels: it hands complete text
// messages up to a Handler and takes encoded frames down. Everything that
// touches a socket runs on the connection's own event loop; other goroutines
// reach a connection only through its loop's inbox (Loop.Deliver, Conn.Send).
package engine
