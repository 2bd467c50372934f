//! The Lua scripts behind the region's shared coordination state (`coordination.rs`). Each runs
//! atomically in Redis: that is what makes a task claim exclusive across instances (a
//! compare-and-set on the task's version) and what lets a load read the state together with
//! the stream position it is current at.
//!
//! Keys, per region and tenant (`P` = `ruvector:coord:{region}:{tenant}:`):
//! `P v` (hash: object key → version), `P o` (hash: object key → JSON; tasks `t/<id>`, memory
//! `m/<namespace>/<key>`), `P clock` (the tenant's version counter: versions only grow, also
//! across a delete and a re-create), `P seq` (hash: topic → last sequence), `P p:<topic>` (list:
//! the last messages, `"<seq> <json>"`, newest first), `P topics` (set), `P agents` (hash: id →
//! JSON), `P beats` (sorted set: online agent → last heartbeat ms), `P gone` (sorted set:
//! offline agent → when). Every change is also appended to the region's coordination stream
//! `ruvector:coordlog:{region}` (fields t tenant, i instance, k kind, key, v version, s seq, o JSON).

/// KEYS: stream, versions, objects, seqs, clock. ARGV: maxlen, instance, tenant, history,
/// prefix, first_of (0/1), n, then n × (kind `t|m|f|p`, key, expect `*` or a version, JSON).
/// All changes apply if every expectation holds; with first_of only the first whose
/// expectation holds. Answers `{"ok", chosen (0-based, -1: all), v1, s1, …}` or
/// `{"stale", key1, version1, json1 | false, …}` for every expectation that failed.
pub const COMMIT: &str = r#"
local maxlen, instance, tenant = ARGV[1], ARGV[2], ARGV[3]
local history, prefix = tonumber(ARGV[4]), ARGV[5]
local first_of, n = ARGV[6] == '1', tonumber(ARGV[7])
local function holds(i)
  local key, expect = ARGV[9 + i * 4], ARGV[10 + i * 4]
  if expect == '*' then return true end
  return tonumber(redis.call('HGET', KEYS[2], key) or '0') == tonumber(expect)
end
local chosen = -1
local stale = {'stale'}
for i = 0, n - 1 do
  if holds(i) then
    if first_of then chosen = i break end
  else
    local key = ARGV[9 + i * 4]
    table.insert(stale, key)
    table.insert(stale, tonumber(redis.call('HGET', KEYS[2], key) or '0'))
    table.insert(stale, redis.call('HGET', KEYS[3], key))
    if not first_of then return stale end
  end
end
if first_of and chosen < 0 then return stale end
local out = {'ok', chosen}
local from, to = 0, n - 1
if chosen >= 0 then from, to = chosen, chosen end
for i = from, to do
  local kind, key, json = ARGV[8 + i * 4], ARGV[9 + i * 4], ARGV[11 + i * 4]
  local version, seq = 0, 0
  if kind == 'p' then
    seq = redis.call('HINCRBY', KEYS[4], key, 1)
    local list = prefix .. 'p:' .. key
    redis.call('LPUSH', list, seq .. ' ' .. json)
    redis.call('LTRIM', list, 0, history - 1)
    redis.call('SADD', prefix .. 'topics', key)
  else
    version = redis.call('INCR', KEYS[5])
    if kind == 'f' then
      redis.call('HDEL', KEYS[2], key)
      redis.call('HDEL', KEYS[3], key)
    else
      redis.call('HSET', KEYS[2], key, version)
      redis.call('HSET', KEYS[3], key, json)
    end
  end
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 't', tenant, 'i', instance,
    'k', kind, 'key', key, 'v', version, 's', seq, 'o', json)
  table.insert(out, version)
  table.insert(out, seq)
end
return out
"#;

/// KEYS: versions, objects. ARGV: key. Answers {version, json | false}.
pub const FETCH: &str = r#"
return {tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0'), redis.call('HGET', KEYS[2], ARGV[1])}
"#;

/// KEYS: stream. ARGV: prefix. Answers {position, objects, versions, messages, agents, beats}.
pub const LOAD: &str = r#"
local p = ARGV[1]
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local pos = '0-0'
if #last > 0 then pos = last[1][1] end
local messages = {}
for _, t in ipairs(redis.call('SMEMBERS', p .. 'topics')) do
  for _, m in ipairs(redis.call('LRANGE', p .. 'p:' .. t, 0, -1)) do
    table.insert(messages, m)
  end
end
return {pos, redis.call('HGETALL', p .. 'o'), redis.call('HGETALL', p .. 'v'), messages,
  redis.call('HGETALL', p .. 'agents'), redis.call('ZRANGE', p .. 'beats', 0, -1, 'WITHSCORES')}
"#;

/// KEYS: stream, agents, beats, gone. ARGV: maxlen, instance, tenant, id, JSON, now.
pub const REGISTER: &str = r#"
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[4])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 't', ARGV[3], 'i', ARGV[2],
  'k', 'a', 'key', ARGV[4], 'v', 0, 's', 0, 'o', ARGV[5])
return 1
"#;

/// KEYS: beats. ARGV: id, now. 1 when the agent is online (its heartbeat recorded), else 0.
pub const HEARTBEAT: &str = r#"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  return 1
end
return 0
"#;

/// KEYS: stream, agents, beats, gone. ARGV: maxlen, instance, tenant, cutoff, now,
/// forget_before. Takes agents silent since before `cutoff` offline (each once, to this
/// caller) and forgets agents offline since before `forget_before`.
pub const REAP: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[4], 'LIMIT', 0, 256)
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[4], ARGV[5], id)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 't', ARGV[3], 'i', ARGV[2],
    'k', 'l', 'key', id, 'v', 0, 's', 0, 'o', '')
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[6], 'LIMIT', 0, 256)) do
  redis.call('ZREM', KEYS[4], id)
  redis.call('HDEL', KEYS[2], id)
end
return ids
"#;
