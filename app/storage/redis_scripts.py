"""The Lua scripts `RedisCoordinator` runs: each one a step that must be atomic in Redis.

Keys (prefix `cs:` by default; see `app.storage.redis_coordination` for the whole scheme):
`hb:<host>` a process's heartbeat (its value a random nonce of that process's life),
`owner:<sid>` = `<host>:<epoch>`, `epoch:<sid>` the fencing counter, `open` (zset sid → start ms:
calls not finalised), `live` (zset sid → expiry ms: calls held now, refreshed by their host's
beat), `fmt:<sid>` the format choice (hash: format, kbps, v).

Times come from the Redis server's clock (`TIME`), never from the hosts': every host compares
against the same clock. Redis 7 replicates scripts by their effects, so `TIME` before a write is
allowed. The scripts name some keys they build from a prefix (`hb:` + the owner's host), which a
single Redis (or a primary with replicas) accepts; Redis Cluster is not supported.
"""

from __future__ import annotations

__all__ = ["CLAIM", "RELEASE", "UNCLAIM", "BEAT", "IS_LIVE", "ORPHANS", "LIVE_COUNT", "STILL_OWNER"]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Free: no owner; or the owner's host has no heartbeat; or the owner is this host's id in an earlier
# life (ARGV[5] = '1': this process does not hold it, and only one live process has this id).
# A sweep's claim (ARGV[7] = '1') takes only a call still in `open`: one that another sweeper
# finished a moment ago is not claimed again.
# Taken: a new epoch (never below the floor the caller read from disk), the owner record, the call
# in `open` (kept from its first claim) and in `live`. Returns {epoch, format, kbps, v} or {0}.
# KEYS: owner, epoch, open, live, fmt.  ARGV: me, hb prefix, sid, ttl ms, takeover-self, epoch floor, orphan.
CLAIM = _NOW + """
if ARGV[7] == '1' and not redis.call('ZSCORE', KEYS[3], ARGV[3]) then
  return {0}
end
local cur = redis.call('GET', KEYS[1])
if cur then
  local host = string.match(cur, '^(.*):%d+$')
  local previous_life = host == ARGV[1] and ARGV[5] == '1'
  if host and not previous_life and redis.call('EXISTS', ARGV[2] .. host) == 1 then
    return {0}
  end
end
local e = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[6])
if e <= floor then
  e = floor + 1
  redis.call('SET', KEYS[2], e)
end
redis.call('PERSIST', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. e)
redis.call('ZADD', KEYS[3], 'NX', now, ARGV[3])
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[4]), ARGV[3])
local f = redis.call('HMGET', KEYS[5], 'format', 'kbps', 'v')
return {e, f[1], f[2], f[3]}
"""

# Compare-and-delete: only the holder of this epoch lets go (a superseded one changes nothing). A finalised call leaves `open`, and
# its epoch counter expires after ARGV[4] s (the disk's fence file keeps epochs rising after that).
# KEYS: owner, open, live, epoch.  ARGV: owner value, sid, finished ('1'/'0'), epoch keep s.
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[4], tonumber(ARGV[4]))
end
return 1
"""

# Undo a claim whose answer was lost (Redis timed out, then ran it): the owner is this host with an
# epoch it never learnt. `ARGV[3]` = '1': a new call that never started, which leaves `open` too.
# KEYS: owner, open, live.  ARGV: me, sid, forget.
UNCLAIM = """
local cur = redis.call('GET', KEYS[1])
if not cur or string.match(cur, '^(.*):%d+$') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 1
"""

# The heartbeat: renew ours (1), register it when missing (2: first beat, or it expired while Redis
# was out of reach), or say another live process holds this host id (0). Then refresh the `live`
# expiry of the calls this process holds (XX: a call released meanwhile is not re-added) and drop
# expired entries (any host's). KEYS: hb, live.  ARGV: nonce, ttl ms, sid…
BEAT = _NOW + """
local cur = redis.call('GET', KEYS[1])
local status
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  status = 1
elseif not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  status = 2
else
  return 0
end
local ttl = tonumber(ARGV[2])
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[2], 'XX', now + ttl, ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return status
"""

# Someone records or finalises the call: an owner whose host has a heartbeat.  KEYS: owner.  ARGV: hb prefix.
IS_LIVE = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local host = string.match(cur, '^(.*):%d+$')
if host and redis.call('EXISTS', ARGV[1] .. host) == 1 then return 1 end
return 0
"""

# One page of `open` (by rank): the calls with no owner, or whose owner's host has no heartbeat, or
# whose owner has this host's id (the caller drops those it holds: the rest are an earlier life's).
# KEYS: open.  ARGV: owner prefix, hb prefix, me, first rank, last rank.
ORPHANS = """
local out = {}
local sids = redis.call('ZRANGE', KEYS[1], tonumber(ARGV[4]), tonumber(ARGV[5]))
for _, sid in ipairs(sids) do
  local cur = redis.call('GET', ARGV[1] .. sid)
  if not cur then
    table.insert(out, sid)
  else
    local host = string.match(cur, '^(.*):%d+$')
    if (not host) or host == ARGV[3] or redis.call('EXISTS', ARGV[2] .. host) == 0 then
      table.insert(out, sid)
    end
  end
end
return {#sids, out}
"""

# Calls held now, cluster-wide (entries whose host's beat keeps them in the future).  KEYS: live.
LIVE_COUNT = _NOW + """
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""

# Whether this epoch still owns the call: 1 yes, 0 no.  KEYS: owner.  ARGV: owner value.
STILL_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
"""
