package bus

import "testing"

func TestResumeKeys(t *testing.T) {
	a := newResumeKeys("", "")
	tok := a.token("alice")
	if !a.valid("alice", tok) || a.valid("bob", tok) || a.valid("alice", "") || a.valid("alice", tok+"x") {
		t.Fatal("a token must verify for its own id only")
	}
	if b := newResumeKeys("", ""); b.valid("alice", tok) {
		t.Fatal("random keys of two processes must differ")
	}
	// Configured secrets give the same key on every node, and are not the JWT secret itself.
	x, y := newResumeKeys("s3cret", ""), newResumeKeys("s3cret", "")
	if x.token("alice") != y.token("alice") || !x.shared {
		t.Fatal("one resume secret must give one key")
	}
	if j := newResumeKeys("", "jwt"); !j.shared || j.token("alice") == sign([]byte("jwt"), "alice") {
		t.Fatal("the key derived from the JWT secret must not be the JWT secret")
	}
	// Adopting the cluster's key keeps honouring tokens made before.
	a.adopt(derive("cluster"))
	if !a.valid("alice", tok) || a.token("alice") == tok {
		t.Fatal("after adopt: old tokens verify, new ones use the cluster key")
	}
	if a.token("alice") != newResumeKeys("cluster", "").token("alice") {
		t.Fatal("the adopted key must sign like every other node's")
	}
}
