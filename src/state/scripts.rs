//! Lua scripts run atomically by Redis: each is one round trip and no read-then-write race.

/// A session binding (HSET KEYS[1] ARGV[1] ARGV[2]) decided ARGV[3] ms ago (0: now; a binding
/// written back after an outage is older), unless the one there was decided later (KEYS[2] keeps
/// when each was, by Redis's own clock, so replicas' clocks do not matter); both keys live at
/// least ARGV[4] ms more (a binding written back with what is left of its TTL does not shorten
/// the life of the session's newer bindings of other models). Returns 1 when written.
pub const BIND: &str = r#"
local t = redis.call('TIME')
local decided = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[3])
local at = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local dropped = tonumber(redis.call('HGET', KEYS[2], '') or '0')
if at > decided or dropped > decided then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], tostring(decided))
for _, k in ipairs({KEYS[1], KEYS[2]}) do
  if redis.call('PTTL', k) < tonumber(ARGV[4]) then
    redis.call('PEXPIRE', k, ARGV[4])
  end
end
return 1
"#;

/// A session's bindings dropped (DEL KEYS[1]) ARGV[1] ms ago, the drop's time kept by Redis's
/// clock under the field no model has (`""` in KEYS[2], for ARGV[2] ms), which BIND reads as the
/// earliest decision it takes. Returns how many keys were deleted.
pub const UNBIND: &str = r#"
local t = redis.call('TIME')
local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
local n = redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], '', tostring(at))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return n
"#;

/// Token buckets (KEYS[1] at ARGV[1] per second, KEYS[3] at ARGV[3]; a rate of 0 is no bucket)
/// plus the session binding (HGET KEYS[2] ARGV[2], when ARGV[2] is not empty) and the continued
/// response's (HGET KEYS[4] ARGV[4], likewise). A token is taken from every bucket, or, when one
/// has none, from no bucket. Redis's own clock, so replicas' clocks do not matter. Returns
/// {allowed 0/1, wait ms, binding or nil, response's binding or nil}.
pub const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local buckets = {}
local allowed, wait = 1, 0
for _, i in ipairs({1, 3}) do
  local rate = tonumber(ARGV[i])
  if rate > 0 then
    local b = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
    local tokens = tonumber(b[1]) or rate
    local ts = tonumber(b[2]) or now
    tokens = math.min(rate, tokens + math.max(0, now - ts) * rate / 1000)
    if tokens < 1 then
      allowed = 0
      wait = math.max(wait, math.ceil((1 - tokens) * 1000 / rate))
    end
    table.insert(buckets, {KEYS[i], tokens})
  end
end
for _, b in ipairs(buckets) do
  local tokens = b[2]
  if allowed == 1 then tokens = tokens - 1 end
  redis.call('HSET', b[1], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', b[1], 2000)
end
local binding, pinned = false, false
if ARGV[2] ~= '' then
  binding = redis.call('HGET', KEYS[2], ARGV[2])
end
if ARGV[4] ~= '' then
  pinned = redis.call('HGET', KEYS[4], ARGV[4])
end
return {allowed, wait, binding, pinned}
"#;

/// Appends a context entry to the list KEYS[1], keeps the newest ARGV[2], expires after ARGV[3] ms.
pub const PUSH_CONTEXT: &str = r#"
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// Folds a batch of health deltas (ARGV[1], JSON: [[upstream, delta], ...]) into the hash KEYS[1]
/// with the same arithmetic as `local::fold_health`, and returns the whole hash. Each entry keeps
/// when it last changed (`at`); one no replica has reported on for an hour (an upstream taken out
/// of the configuration) is dropped, so the hash every replica reads does not grow with history.
pub const SYNC_HEALTH: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local batch = cjson.decode(ARGV[1])
local keep = 1 - tonumber(ARGV[2])
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', 600000) then batch = {} end
for _, item in ipairs(batch) do
  local u, d = item[1], item[2]
  local cur = redis.call('HGET', KEYS[1], u)
  local s
  if cur then s = cjson.decode(cur) else s = {latency_ms = -1, error_rate = 0, cooldown_until_ms = 0, open_until_ms = 0} end
  local f, n = math.min(d.failures, 64), math.min(d.successes, 64)
  s.error_rate = 1 - (1 - s.error_rate) * keep ^ f
  s.error_rate = s.error_rate * keep ^ n
  if d.successes > 0 then
    if s.latency_ms < 0 then s.latency_ms = d.latency_ms
    else s.latency_ms = s.latency_ms + (1 - keep ^ n) * (d.latency_ms - s.latency_ms) end
  end
  if d.cooldown_until_ms > s.cooldown_until_ms then s.cooldown_until_ms = d.cooldown_until_ms end
  if d.open_until_ms > 0 then
    if d.open_until_ms > s.open_until_ms then s.open_until_ms = d.open_until_ms end
  elseif d.closed then
    s.open_until_ms = 0
  end
  s.at = now
  redis.call('HSET', KEYS[1], u, cjson.encode(s))
end
redis.call('PEXPIRE', KEYS[1], 86400000)
local all = redis.call('HGETALL', KEYS[1])
local kept = {}
for i = 1, #all, 2 do
  local s = cjson.decode(all[i + 1])
  if s.at == nil then
    s.at = now
    redis.call('HSET', KEYS[1], all[i], cjson.encode(s))
  end
  if now - s.at > 3600000 then
    redis.call('HDEL', KEYS[1], all[i])
  else
    kept[#kept + 1] = all[i]
    kept[#kept + 1] = all[i + 1]
  end
end
return kept
"#;

/// Registers replica ARGV[1] in the sorted set KEYS[1], forgets replicas silent for ARGV[2] ms,
/// returns how many are alive.
pub const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], 60000)
return redis.call('ZCARD', KEYS[1])
"#;
