package codec

import "bytes"

// AppendRouted appends env as the server routes it: every field as the sender
// sent it, and metadata with the server's fields added after the sender's own
// (extra is the inside of an object, such as `"position":"1-0"`, and wins
// over a sender's key of the same name). Unknown top-level fields the sender
// added are not carried: the SPEC ignores them.
func AppendRouted(dst []byte, env *Envelope, extra []byte) []byte {
	dst = append(dst, `{"version":"1.0","id":`...)
	dst = AppendString(dst, env.ID)
	dst = append(dst, `,"type":`...)
	dst = AppendString(dst, env.Type.String())
	dst = append(dst, `,"room":`...)
	dst = AppendString(dst, env.Room)
	dst = append(dst, `,"channel":`...)
	dst = AppendString(dst, env.Channel)
	dst = append(dst, `,"from":`...)
	dst = AppendString(dst, env.From)
	dst = append(dst, `,"timestamp":`...)
	dst = AppendString(dst, env.Timestamp)
	dst = append(dst, `,"payload":`...)
	dst = append(dst, env.Payload...)
	dst = append(dst, `,"metadata":{`...)
	if inner := objectInner(env.Metadata); len(inner) > 0 {
		dst = append(dst, inner...)
		if len(extra) > 0 {
			dst = append(dst, ',')
		}
	}
	dst = append(dst, extra...)
	return append(dst, "}}"...)
}

// objectInner returns what lies between a JSON object's braces, trimmed;
// nil for an empty object or no object.
func objectInner(obj []byte) []byte {
	obj = bytes.TrimSpace(obj)
	if len(obj) < 2 || obj[0] != '{' {
		return nil
	}
	return bytes.TrimSpace(obj[1 : len(obj)-1])
}
