package bus

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"sync/atomic"
)

// Resume tokens let a reconnecting client take over its own id at once. Without one, a second
// connection with a live id is refused (CONFLICT), and a client whose old socket is half-open (the
// network dropped it, the server has not noticed) would wait for the idle timeout, up to a minute.
//
// The token is an HMAC of the client id under the bus's resume key: any node holding the key can check
// it with no state, which is what a client reconnecting through a load balancer to another node needs.
// The key comes from --resume-secret, or is derived from --jwt-secret, or, in a cluster, is one random
// key kept in Redis for every node; otherwise it is random per process (a restarted node has no old
// connections to take over anyway). A token is as sensitive as the connection it resumes: it is sent
// only to that client, in its welcome.
type resumeKeys struct {
	// keys[0] signs; every key verifies (a node that made tokens with its own key before it could read
	// the cluster's keeps honouring them).
	keys   atomic.Pointer[[][]byte]
	shared bool // the key is configured or derived: nothing to fetch from the cluster
}

// resumeLabel separates resume-token keys derived from a secret from other uses of that secret.
const resumeLabel = "arqonbus resume token v1\x00"

func newResumeKeys(resumeSecret, jwtSecret string) *resumeKeys {
	r := &resumeKeys{}
	var key []byte
	switch {
	case resumeSecret != "":
		key, r.shared = derive(resumeSecret), true
	case jwtSecret != "":
		key, r.shared = derive(jwtSecret), true
	default:
		key = make([]byte, 32)
		_, _ = rand.Read(key) // never fails (crypto/rand: "Read never returns an error")
	}
	r.keys.Store(&[][]byte{key})
	return r
}

func derive(secret string) []byte {
	sum := sha256.Sum256([]byte(resumeLabel + secret))
	return sum[:]
}

// token is id's resume token under the signing key.
func (r *resumeKeys) token(id string) string {
	return sign((*r.keys.Load())[0], id)
}

func sign(key []byte, id string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// valid reports whether tok is id's resume token under any known key.
func (r *resumeKeys) valid(id, tok string) bool {
	if tok == "" {
		return false
	}
	for _, k := range *r.keys.Load() {
		if hmac.Equal([]byte(sign(k, id)), []byte(tok)) {
			return true
		}
	}
	return false
}

// adopt makes key the signing key, keeping the others for verification.
func (r *resumeKeys) adopt(key []byte) {
	old := *r.keys.Load()
	if hmac.Equal(old[0], key) {
		return
	}
	keys := append([][]byte{key}, old...)
	r.keys.Store(&keys)
}

// secretSource is the cluster's store of shared random secrets.
type secretSource interface {
	SharedSecret(ctx context.Context, name string) ([]byte, error)
}

// share adopts the cluster's resume key (made by the first node that asked), unless the key is
// configured. A failure leaves the local key: tokens then resume on this node only, until the next try.
func (r *resumeKeys) share(ctx context.Context, src secretSource) error {
	if r.shared {
		return nil
	}
	key, err := src.SharedSecret(ctx, "resume")
	if err != nil {
		return err
	}
	r.adopt(derive(string(key)))
	return nil
}

// mayReplace reports whether s may take id over from a live connection: replace-duplicate is on, or s
// presented id's resume token.
func (b *Bus) mayReplace(s *session, id string) bool {
	return b.cfg.ReplaceDuplicate || b.resume.valid(id, s.resumeToken)
}
