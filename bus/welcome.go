package bus

import (
	"time"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/engine"
)

// ShutdownNotice is the system envelope, as a frame, that tells every client
// the server is going away.
func (b *Bus) ShutdownNotice() []byte {
	buf := make([]byte, engine.HeaderRoom, 256)
	buf = codec.AppendEnvelope(buf, codec.Out{
		ID: b.ids.Next("sys"), Type: "system", Room: "*", Channel: "broadcast",
		From: codec.ServerFrom, Timestamp: time.Now(),
	}, []byte(`{"event":"shutdown","message":"server shutting down","node_id":`+quote(b.cfg.NodeID)+`}`), nil)
	return engine.FinishText(buf)
}

// welcome sends the system envelope that opens every connection.
func (b *Bus) welcome(s *session) {
	payload := []byte(`{"event":"welcome","client_id":`)
	payload = codec.AppendString(payload, s.ID())
	payload = append(payload, `,"client_type":`...)
	payload = codec.AppendString(payload, s.clientType)
	payload = append(payload, `,"server_version":"`+Version+`","protocol_version":"`+codec.Version+`","node_id":`...)
	payload = codec.AppendString(payload, b.cfg.NodeID)
	payload = append(payload, `,"resume_token":`...)
	payload = codec.AppendString(payload, b.resume.token(s.ID()))
	payload = append(payload, '}')
	buf := make([]byte, engine.HeaderRoom, 256+len(payload))
	buf = codec.AppendEnvelope(buf, codec.Out{
		ID: b.ids.Next("sys"), Type: "system", Room: "*", Channel: "welcome",
		From: codec.ServerFrom, Timestamp: time.Now(),
	}, payload, nil)
	s.conn.Write(engine.FinishText(buf))
}
