//! The Lua scripts of the Redis store: each store operation is one of them, which Redis runs
//! atomically (sent as `EVALSHA`, loaded on first use).
//!
//! KEYS[1] is always a name's lease key and KEYS[2] its fence hash (see the module above). A
//! lease value and the fence hash's `last` and `run` fields are the same record: token, holder
//! id, pid, host, label, created (server ms), each length-prefixed; its encoding is prefix-free,
//! so "starts with the encoded (token, holder id)" means "is that holder's lease", and two
//! copies of one lease are equal strings. Every call a script makes counts, as acquire and
//! finish run on every cycle: the common paths make as few as they can.

use redis::Script;

/// The server time in milliseconds as a decimal string, `now`, from `TIME` (allowed before
/// writes in Redis ≥ 5, which replicates a script's effects, not the script).
const NOW: &str = "
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
";

/// KEYS: lease, fence. ARGV: TTL in ms (0: never expires), the holder's encoded fields.
/// Returns {acquired (0/1), value, pttl (-1: never), previous value, previous expiry ms, now}.
///
/// A `last` copy left behind means that lease expired (finish and force-release clear it);
/// unless its run was finished already (kept by a hold: `run` is the same record), it becomes
/// the last run, with outcome unknown and its expiry as its end, and is returned as the
/// previous lease. A kept lease ended as planned and is not returned.
const ACQUIRE: &str = "
local current = redis.call('GET', KEYS[1])
if current then
  return {0, current, redis.call('PTTL', KEYS[1]), false, false, now}
end
local previous = redis.call('HMGET', KEYS[2], 'last', 'expires')
if previous[1] then
  if redis.call('HGET', KEYS[2], 'run') ~= previous[1] then
    redis.call('HSET', KEYS[2], 'run', previous[1], 'ended', previous[2] or '', 'outcome', 'unknown')
  else
    previous = {false, false}
  end
end
local token = string.format('%d', redis.call('HINCRBY', KEYS[2], 'token', 1))
local value = #token .. ':' .. token .. ARGV[2] .. #now .. ':' .. now
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  redis.call('SET', KEYS[1], value, 'NX', 'PX', ttl)
  redis.call('HSET', KEYS[2], 'last', value, 'expires', string.format('%d', tonumber(now) + ttl))
else
  redis.call('SET', KEYS[1], value, 'NX')
  redis.call('HSET', KEYS[2], 'last', value)
  redis.call('HDEL', KEYS[2], 'expires')
  ttl = -1
end
return {1, value, ttl, previous[1], previous[2], now}
";

/// KEYS: lease, fence. ARGV: the encoded (token, holder id), TTL in ms.
/// Returns nil when the lease is not ours (or gone), else {pttl (-1: never), now}.
const RENEW: &str = "
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, #ARGV[1]) ~= ARGV[1] then
  return false
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl >= 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('HSET', KEYS[2], 'expires', string.format('%d', tonumber(now) + tonumber(ARGV[2])))
  pttl = tonumber(ARGV[2])
end
return {pttl, now}
";

/// KEYS: lease, fence. ARGV: the encoded (token, holder id), the outcome as text, the name's
/// freed channel, the time to keep the lease until in server ms (0: give it back).
/// Returns 2 if kept, 1 if given back, 0 if not ours.
///
/// Our live lease: the run is recorded (`run`, `ended` = now, `outcome`); then the lease is
/// kept until that time by `PEXPIREAT` if it is still ahead, else deleted. Our lease expired
/// but not taken over (its `last` copy is ours): recorded and cleared. Neither, but the last
/// run on record is ours: only its end and outcome are set. Tells the waiters with `pcall`: a
/// user whom an ACL forbids to publish can still release.
const FINISH: &str = "
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, #ARGV[1]) == ARGV[1] then
  if tonumber(ARGV[4]) > tonumber(now) then
    redis.call('PEXPIREAT', KEYS[1], ARGV[4])
    redis.call('HSET', KEYS[2], 'run', current, 'ended', now, 'outcome', ARGV[2], 'expires', ARGV[4])
    return 2
  end
  redis.call('DEL', KEYS[1])
else
  local last = redis.call('HMGET', KEYS[2], 'last', 'run')
  local function ours(record)
    return record and string.sub(record, 1, #ARGV[1]) == ARGV[1]
  end
  if current or not ours(last[1]) then
    if ours(last[2]) then
      redis.call('HSET', KEYS[2], 'ended', now, 'outcome', ARGV[2])
    end
    return 0
  end
  current = last[1]
end
redis.call('HSET', KEYS[2], 'run', current, 'ended', now, 'outcome', ARGV[2])
redis.call('HDEL', KEYS[2], 'last', 'expires')
redis.pcall('PUBLISH', ARGV[3], '')
return 1
";

/// KEYS: lease keys. Returns {now, {{value or nil, pttl}, ...}}.
const READ: &str = "
local found = {}
for i, key in ipairs(KEYS) do
  found[i] = {redis.call('GET', key), redis.call('PTTL', key)}
end
return {now, found}
";

/// KEYS: the lease and fence key of each name, in pairs. Returns {{run, ended, outcome}, ...},
/// one per name, each nil if none: the last run on record, or the expired lease that nobody
/// finished or replaced (a `last` copy without lease key that is not `run`) as an unknown run.
const RUNS: &str = "
local found = {}
for i = 2, #KEYS, 2 do
  local f = redis.call('HMGET', KEYS[i], 'last', 'expires', 'run', 'ended', 'outcome')
  if f[1] and f[1] ~= f[3] and redis.call('EXISTS', KEYS[i - 1]) == 0 then
    found[i / 2] = {f[1], f[2], 'unknown'}
  else
    found[i / 2] = {f[3], f[4], f[5]}
  end
end
return found
";

/// KEYS: lease, fence. ARGV: the name's freed channel. Returns {value or nil, pttl, now}; the
/// fencing counter stays. A lease removed whose run was not finished yet is recorded as the
/// last run, unknown, ended now. A name without a live lease is left as it is.
const FORCE_RELEASE: &str = "
local current = redis.call('GET', KEYS[1])
local pttl = redis.call('PTTL', KEYS[1])
if current then
  redis.call('DEL', KEYS[1])
  if redis.call('HGET', KEYS[2], 'run') ~= current then
    redis.call('HSET', KEYS[2], 'run', current, 'ended', now, 'outcome', 'unknown')
  end
  redis.call('HDEL', KEYS[2], 'last', 'expires')
  redis.pcall('PUBLISH', ARGV[1], '')
end
return {current, pttl, now}
";

/// KEYS: lease, fence. ARGV: the encoded (token, holder id), the name's freed channel.
/// Returns 1 if the lease was ours and is gone now, else 0.
///
/// Undoes an acquire whose lease must not be used (too few replicas confirmed it): deletes
/// the lease key and its copy, and tells waiters. The counter keeps the token it handed out,
/// and the last run stays: this lease never ran.
const GIVE_BACK: &str = "
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, #ARGV[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if redis.call('HGET', KEYS[2], 'last') == current then
  redis.call('HDEL', KEYS[2], 'last', 'expires')
end
redis.pcall('PUBLISH', ARGV[2], '')
return 1
";

/// ACQUIRE's reply.
pub(super) type AcquireReply = (i64, Vec<u8>, i64, Option<Vec<u8>>, Option<String>, String);
/// READ's reply: the server time and (value, pttl) per key.
pub(super) type ReadReply = (String, Vec<(Option<Vec<u8>>, i64)>);
/// RUNS's reply: (run record, ended ms or empty, outcome) per name.
pub(super) type RunsReply = Vec<(Option<Vec<u8>>, Option<String>, Option<String>)>;

pub(super) struct Scripts {
    pub acquire: Script,
    pub renew: Script,
    pub finish: Script,
    pub read: Script,
    pub runs: Script,
    pub force_release: Script,
    pub give_back: Script,
}

impl Scripts {
    pub fn new() -> Self {
        let timed = |body: &str| Script::new(&format!("{NOW}{body}"));
        Scripts {
            acquire: timed(ACQUIRE),
            renew: timed(RENEW),
            finish: timed(FINISH),
            read: timed(READ),
            // Reports no time, so it skips the TIME call.
            runs: Script::new(RUNS),
            force_release: timed(FORCE_RELEASE),
            // Reports no time either.
            give_back: Script::new(GIVE_BACK),
        }
    }
}
