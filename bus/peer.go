package bus

import (
	"strconv"
)

// peerMsg is what one node of a cluster sends another (to its inbox) or all (on the control topic).
// Which fields a kind uses is said at each kind.
type peerMsg struct {
	kind          string
	from          string // the sending instance
	client        string // the client it is for
	sender        string // the client it comes from
	handler       string // a handler's client id
	name          string // a command name, or a view's kind
	req           string // a request id, query id or table version
	room, channel string
	code          string // an error code
	body          []byte // an envelope, an answer, or an error message
}

// Kinds of peerMsg.
const (
	// To a node's inbox.
	peerPrivate       = "pm"      // client: target; sender, req, room, channel: for an error; body: the envelope
	peerPrivateLost   = "pmlost"  // the target was gone: sender, req, room, channel
	peerCommand       = "cmd"     // client: handler; sender: requester; name, req, room, channel; body: the command
	peerResponse      = "resp"    // client: requester; handler; req; body: the command_response
	peerCommandFailed = "cmdfail" // client: requester; handler; req, room, channel; code; body: message
	peerKick          = "kick"    // client: an id claimed elsewhere with replace-duplicate
	peerAnswer        = "ans"     // req: query id; body: the answer
	// On the control topic.
	peerHandlers = "handlers" // req: table version; body: the sender's handler table
	peerCreated  = "created"  // room, channel
	peerDeleted  = "deleted"  // room, channel
	peerQuery    = "query"    // req: query id; name: view kind; room, channel; body: the view's argument
)

// encode writes m as length-prefixed fields, then the body: client input (command names) may hold any
// byte, so no separator is safe.
func (m *peerMsg) encode() []byte {
	fields := m.fields()
	n := len(m.body)
	for _, f := range fields {
		n += len(*f) + 4
	}
	out := make([]byte, 0, n)
	for _, f := range fields {
		out = strconv.AppendInt(out, int64(len(*f)), 10)
		out = append(out, ':')
		out = append(out, *f...)
	}
	return append(out, m.body...)
}

func (m *peerMsg) fields() [10]*string {
	return [10]*string{&m.kind, &m.from, &m.client, &m.sender, &m.handler, &m.name, &m.req, &m.room, &m.channel, &m.code}
}

// decodePeer reads what encode wrote; body aliases data.
func decodePeer(data []byte) (peerMsg, bool) {
	var m peerMsg
	for _, f := range m.fields() {
		i := 0
		for i < len(data) && i < 8 && data[i] >= '0' && data[i] <= '9' {
			i++
		}
		if i == 0 || i >= len(data) || data[i] != ':' {
			return m, false
		}
		n, err := strconv.Atoi(string(data[:i]))
		data = data[i+1:]
		if err != nil || n > len(data) {
			return m, false
		}
		*f = string(data[:n])
		data = data[n:]
	}
	m.body = data
	return m, true
}
