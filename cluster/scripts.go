package cluster

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"

	"github.com/redis/rueidis"
)

// script is a Lua script run with EVALSHA, loaded on every node when Redis says NOSCRIPT (after a
// restart or a failover). rueidis.Lua's ExecMulti loads the script on every node before each batch:
// one round trip per node more than a publish needs.
type script struct {
	src string
	sha string
}

func newScript(src string) *script {
	sum := sha1.Sum([]byte(src))
	return &script{src: src, sha: hex.EncodeToString(sum[:])}
}

// cmd builds one EVALSHA; rueidis recycles it once sent.
func (s *script) cmd(c rueidis.Client, keys []string, args ...string) rueidis.Completed {
	return c.B().Evalsha().Sha1(s.sha).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()
}

// load puts the script on every node of c (replicas included: one that is down makes load fail, but
// the masters have it).
func (s *script) load(ctx context.Context, c rueidis.Client) error {
	var errs []error
	for _, n := range c.Nodes() {
		if err := n.Do(ctx, n.B().ScriptLoad().Script(s.src).Build()).Error(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// do runs the script once, loading it first if Redis does not have it.
func (s *script) do(ctx context.Context, c rueidis.Client, keys []string, args ...string) rueidis.RedisResult {
	res := c.Do(ctx, s.cmd(c, keys, args...))
	if isNoScript(res.Error()) {
		_ = s.load(ctx, c)
		res = c.Do(ctx, s.cmd(c, keys, args...))
	}
	return res
}

func isNoScript(err error) bool {
	re, ok := rueidis.IsRedisErr(err)
	return ok && re.IsNoScript()
}

// Redis's clock in milliseconds, as every script below reads it.
const luaNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// publishScript appends one event to a channel's stream and publishes it to the nodes, atomically, and
// returns its position. The position continues the stream: Redis's clock in ms, or the top's ms with the
// next sequence when the clock has not passed it, exactly as XADD * would pick, but known before the
// append, because the stored envelope carries it (ARGV[2] .. position .. ARGV[3]).
//
//	KEYS[1] stream, KEYS[2] shard channel; ARGV[1] MAXLEN (approximate), ARGV[2] head, ARGV[3] tail.
//
// The message published is "<position> <envelope>".
var publishScript = newScript(luaNow + `
local ms, seq = now, 0
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if top[1] then
  local id = top[1][1]
  local dash = string.find(id, '-', 1, true)
  local tms = tonumber(string.sub(id, 1, dash - 1))
  if tms >= ms then
    ms = tms
    seq = tonumber(string.sub(id, dash + 1)) + 1
  end
end
local pos = string.format('%.0f-%.0f', ms, seq)
local data = ARGV[2] .. pos .. ARGV[3]
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], pos, 'e', data)
redis.call('SPUBLISH', KEYS[2], pos .. ' ' .. data)
return pos
`)

// heartbeatScript records this instance as alive with its info, forgets instances unseen for a
// minute (and the client ids they held), and returns the live instances with their info.
//
//	KEYS[1] nodes, KEYS[2] info, KEYS[3] clients; ARGV[1] instance, ARGV[2] info JSON, ARGV[3] TTL ms,
//	ARGV[4] owned-set prefix.
var heartbeatScript = newScript(luaNow + `
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
for _, g in ipairs(gone) do
  local owned = ARGV[4] .. g
  for _, id in ipairs(redis.call('SMEMBERS', owned)) do
    if redis.call('HGET', KEYS[3], id) == g then redis.call('HDEL', KEYS[3], id) end
  end
  redis.call('DEL', owned)
  redis.call('HDEL', KEYS[2], g)
  redis.call('ZREM', KEYS[1], g)
end
local out = {}
for _, l in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[3]), '+inf')) do
  out[#out + 1] = l
  out[#out + 1] = redis.call('HGET', KEYS[2], l) or ''
end
return out
`)

// leaveScript removes an instance from the registry (a clean shutdown): its client ids are free at once.
//
//	KEYS[1] nodes, KEYS[2] info, KEYS[3] clients, KEYS[4] owned set; ARGV[1] instance.
var leaveScript = newScript(`
for _, id in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  if redis.call('HGET', KEYS[3], id) == ARGV[1] then redis.call('HDEL', KEYS[3], id) end
end
redis.call('DEL', KEYS[4])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
`)

// claimScript binds a client id to an instance unless a live instance holds it; with ARGV[4] = "1" it
// takes the id from a live holder. Returns {1, replaced holder or ""} or {0, live holder}.
//
//	KEYS[1] clients, KEYS[2] nodes, KEYS[3] owned set; ARGV[1] id, ARGV[2] instance, ARGV[3] TTL ms,
//	ARGV[4] replace.
var claimScript = newScript(luaNow + `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local replaced = ''
if cur and cur ~= ARGV[2] then
  local seen = redis.call('ZSCORE', KEYS[2], cur)
  if seen and tonumber(seen) >= now - tonumber(ARGV[3]) then
    if ARGV[4] ~= '1' then return {0, cur} end
    replaced = cur
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return {1, replaced}
`)

// releaseScript unbinds a client id if this instance holds it.
//
//	KEYS[1] clients, KEYS[2] owned set; ARGV[1] id, ARGV[2] instance.
var releaseScript = newScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('SREM', KEYS[2], ARGV[1])
return 1
`)

// sendToClientScript publishes a message to the inbox of the live instance holding a client id.
// Returns the instance, or false when no live instance holds it (or its inbox has no subscriber).
//
//	KEYS[1] clients, KEYS[2] nodes; ARGV[1] id, ARGV[2] TTL ms, ARGV[3] inbox prefix, ARGV[4] message.
var sendToClientScript = newScript(luaNow + `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return false end
local seen = redis.call('ZSCORE', KEYS[2], cur)
if not seen or tonumber(seen) < now - tonumber(ARGV[2]) then return false end
if redis.call('SPUBLISH', ARGV[3] .. cur, ARGV[4]) == 0 then return false end
return cur
`)
