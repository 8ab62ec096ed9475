"""The counting rules (`algorithm`) as Lua, run atomically by Redis: one round trip a check.

RESERVE checks every counter that binds the request and charges all of them only if all pass.
KEYS: one per counter (a budget's key carries its window). ARGV: the time in ms ("" for the
server's clock: every sidecar then counts on one clock), the lease id, the lease's length in ms,
then four per counter: kind (r bucket, c concurrency, b budget), limit, cost, window end in ms.
Reply: allowed (1/0), then four per counter: ok, remaining, ms until reset, ms until it would pass.

SETTLE adjusts each counter by (actual - reserved) and returns the concurrency lease.
ARGV: the time in ms (or ""), the lease id, then three per counter: kind, limit, delta.

Levels are written with %.17g, so a float read back is the float written, as in the process.
"""

from __future__ import annotations

import hashlib

_PRELUDE = """
local MINUTE, EPS = 60000, 1e-6
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ceil_ms(x) return math.ceil(x - EPS) end
local function level_of(key, limit)
  local s = redis.call('HMGET', key, 'u', 't')
  local used, at = tonumber(s[1]) or 0, tonumber(s[2]) or now
  local elapsed = now - at
  if elapsed < 0 then elapsed = 0 end
  local level = used - elapsed * limit / MINUTE
  if level < 0 then level = 0 end
  return level
end
local function set_level(key, level, limit)
  redis.call('HSET', key, 'u', string.format('%.17g', level), 't', string.format('%.17g', now))
  redis.call('PEXPIRE', key, ceil_ms(level * MINUTE / limit) + 1000)
end
"""

RESERVE = (
    _PRELUDE
    + """
local lease, lease_ms = ARGV[2], tonumber(ARGV[3])
local levels, charged, uncharged, allowed = {}, {}, {}, 1
for i = 1, #KEYS do
  local a = 3 + (i - 1) * 4
  local kind, limit, cost, stop = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  -- {ok, remaining, ms until reset, ms until it would pass}, if charged and if not
  local yes, no
  if kind == 'r' then
    local level = level_of(KEYS[i], limit)
    levels[i] = level
    local ok, retry
    if cost > limit then
      ok, retry = level <= EPS, level * MINUTE / limit
    elseif level + cost <= limit + EPS then
      ok, retry = true, 0
    else
      ok, retry = false, (level + cost - limit) * MINUTE / limit
    end
    no = {ok, math.floor(limit - level + EPS), level * MINUTE / limit, retry}
    if ok then
      yes = {true, math.floor(limit - level - cost + EPS), (level + cost) * MINUTE / limit, 0}
    else
      yes = no
    end
  elseif kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    local active = redis.call('ZCARD', KEYS[i])
    if active < limit then
      yes, no = {true, limit - active - 1, 0, 0}, {true, limit - active, 0, 0}
    else
      yes = {false, 0, 0, 1000}
      no = yes
    end
  else
    local spent = tonumber(redis.call('GET', KEYS[i])) or 0
    if spent + cost <= limit or (limit > 0 and cost > limit and spent <= 0) then
      yes, no = {true, limit - spent - cost, stop - now, 0}, {true, limit - spent, stop - now, 0}
    else
      yes = {false, limit - spent, stop - now, stop - now}
      no = yes
    end
  end
  if not yes[1] then allowed = 0 end
  charged[i], uncharged[i] = yes, no
end
local out = {allowed}
for i = 1, #KEYS do
  local s = uncharged[i]
  if allowed == 1 then s = charged[i] end
  local remaining = s[2]
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = s[1] and 1 or 0
  out[#out + 1] = remaining
  out[#out + 1] = ceil_ms(s[3])
  out[#out + 1] = ceil_ms(s[4])
end
if allowed == 1 then
  for i = 1, #KEYS do
    local a = 3 + (i - 1) * 4
    local kind, limit, cost, stop = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
    if kind == 'r' then
      set_level(KEYS[i], levels[i] + cost, limit)
    elseif kind == 'c' then
      redis.call('ZADD', KEYS[i], now + lease_ms, lease)
      if redis.call('PTTL', KEYS[i]) < lease_ms + MINUTE then redis.call('PEXPIRE', KEYS[i], lease_ms + MINUTE) end
    else
      redis.call('INCRBY', KEYS[i], cost)
      redis.call('PEXPIRE', KEYS[i], ceil_ms(stop - now) + 86400000)
    end
  end
end
return out
"""
)

SETTLE = (
    _PRELUDE
    + """
local lease = ARGV[2]
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 3
  local kind, limit, delta = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  if kind == 'c' then
    redis.call('ZREM', KEYS[i], lease)
  elseif kind == 'b' then
    if delta ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then
      if redis.call('INCRBY', KEYS[i], delta) < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
    end
  elseif delta ~= 0 then
    local level = level_of(KEYS[i], limit) + delta
    if level < 0 then level = 0 end
    set_level(KEYS[i], level, limit)
  end
end
return 1
"""
)


def sha1(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
