package bus

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
)

// claims are the JWT claims the bus reads.
type claims struct {
	Role       string `json:"role"`
	ClientType string `json:"client_type"`
	jwt.RegisteredClaims
}

// Upgrade admits or refuses an upgrade request, and reads the client's
// identity from its query (and token).
func (b *Bus) Upgrade(c *engine.Conn, r *engine.Request) error {
	if len(b.cfg.AllowedOrigins) > 0 {
		if o := r.Header.Get("Origin"); o != "" && !slices.Contains(b.cfg.AllowedOrigins, o) {
			b.stats.authRefused.Add(1)
			return &engine.Reject{Status: http.StatusForbidden, Reason: "origin not allowed"}
		}
	}
	q := r.Query
	s := &session{b: b, conn: c, clientType: TypeHuman, channels: make(map[fanout.Key]*fanout.Channel)}
	id := q.Get("client_id")
	if id != "" && !codec.ValidClientID(id) {
		return &engine.Reject{Status: http.StatusBadRequest, Reason: "client_id must be 1 to 128 characters of [A-Za-z0-9_.:-]"}
	}
	if t := q.Get("client_type"); t != "" {
		if !validClientType(t) {
			return &engine.Reject{Status: http.StatusBadRequest, Reason: "client_type must be one of human, ai-agent, dashboard, service"}
		}
		s.clientType = t
	}
	if b.cfg.JWTSecret != "" {
		cl, err := b.verifyToken(tokenOf(r))
		if err != nil {
			b.stats.authRefused.Add(1)
			return &engine.Reject{Status: http.StatusUnauthorized, Reason: err.Error()}
		}
		if id != "" && id != cl.Subject {
			b.stats.authRefused.Add(1)
			return &engine.Reject{Status: http.StatusUnauthorized, Reason: "client_id does not match the token's sub"}
		}
		id = cl.Subject
		s.admin = cl.Role == "admin"
		if cl.ClientType != "" && validClientType(cl.ClientType) {
			s.clientType = cl.ClientType
		}
	} else if b.cfg.AdminToken != "" && q.Get("admin_token") != "" {
		if subtle.ConstantTimeCompare([]byte(q.Get("admin_token")), []byte(b.cfg.AdminToken)) != 1 {
			b.stats.authRefused.Add(1)
			return &engine.Reject{Status: http.StatusUnauthorized, Reason: "bad admin_token"}
		}
		s.admin = true
	}
	if id == "" {
		id = "arq_client_" + randomHex(8)
		s.claimable = true
	}
	s.setID(id)
	s.screenName = q.Get("screen_name")
	s.avatar = q.Get("avatar")
	s.personality = q.Get("personality")
	s.resumeToken = q.Get("resume_token")
	c.Value = s
	return nil
}

func tokenOf(r *engine.Request) string {
	if t := r.Query.Get("token"); t != "" {
		return t
	}
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// verifyToken checks an HS256 token and its claims.
func (b *Bus) verifyToken(tok string) (*claims, error) {
	if tok == "" {
		return nil, errors.New("a token is required (token query parameter or Authorization: Bearer)")
	}
	var cl claims
	_, err := jwt.ParseWithClaims(tok, &cl, func(*jwt.Token) (any, error) { return []byte(b.cfg.JWTSecret), nil },
		jwt.WithValidMethods([]string{"HS256"}))
	if err != nil {
		return nil, errors.New("invalid token: " + err.Error())
	}
	if cl.Subject == "" || !codec.ValidClientID(cl.Subject) {
		return nil, errors.New("invalid token: sub must be a client id of [A-Za-z0-9_.:-]")
	}
	if cl.Role != "" && cl.Role != "user" && cl.Role != "admin" {
		return nil, errors.New("invalid token: role must be user or admin")
	}
	return &cl, nil
}
