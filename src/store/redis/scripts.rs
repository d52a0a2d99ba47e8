//! The Lua scripts of the Redis store: each store operation is one of them, which Redis runs
//! atomically (sent as `EVALSHA`, loaded on first use).
//!
//! KEYS[1] is always a name's lease key and KEYS[2] its fence hash (see the module above). A
//! lease value and the fence hash's `last` and `run` fields are the same record: token, holder
//! id, pid, host, label, created (server ms), each length-prefixed; its encoding is prefix-free,
//! so "starts with the encoded (token, holder id)" means "is that holder's lease", and two
//! copies of one lease are equal strings.
//!
//! Acquire and finish run on every cycle, and what a script costs the server is mostly its
//! `redis.call`s (each goes through Redis's whole command path: about 1 µs warm, several on a
//! busy host) and the values it builds, not the `EVALSHA` itself: their common paths make five
//! calls each (acquire: `TIME`, one `HMGET` for the counter and the copy, `SET NX`, `PUBLISH`,
//! one `HSET`; finish: `TIME`, `GET`, `DEL`, one `HSET`, `PUBLISH`) and acquire answers with
//! the token alone, not the record the client already knows. A `PUBLISH` that nobody listens
//! to costs the server next to nothing.

use redis::Script;

/// The server time in milliseconds as a decimal string, `now`, from `TIME` (allowed before
/// writes in Redis ≥ 5, which replicates a script's effects, not the script).
const NOW: &str = "
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(t[2] / 1000))
";

/// KEYS: lease, fence. ARGV: TTL in ms (0: never expires), the holder's encoded fields, the
/// name's freed channel. Returns {acquired (0/1), the token if acquired else the lease's value, pttl (-1: never),
/// previous value, previous expiry ms, now}: the client knows the rest of its own record.
///
/// The counter is read with the copy in one `HMGET` and written back with the new copy in one
/// `HSET`, only once the `SET NX` has taken the name (a conflict writes nothing), so it counts
/// exactly as `HINCRBY` did; a counter that is not a number fails the script. A `last` copy
/// that is not `run` means that lease expired unfinished (a finish makes `run` the copy, a
/// force-release clears it): it becomes the last run, with outcome unknown and its expiry as
/// its end, in the same `HSET`, and is returned as the previous lease. A lease without TTL
/// gets an empty `expires`, which reads as an unknown expiry, as a missing one did. Waiters
/// are told `taken:` and the expiry (with `pcall`, as finish tells them of a release), so
/// that those who have not tried yet need not.
const ACQUIRE: &str = "
local f = redis.call('HMGET', KEYS[2], 'token', 'last', 'run', 'expires')
local token = 1
if f[1] then
  token = tonumber(f[1]) + 1
end
token = string.format('%d', token)
local value = #token .. ':' .. token .. ARGV[2] .. #now .. ':' .. now
local ttl = tonumber(ARGV[1])
local taken, expires
if ttl > 0 then
  taken = redis.call('SET', KEYS[1], value, 'NX', 'PX', ttl)
  expires = string.format('%d', now + ttl)
else
  taken = redis.call('SET', KEYS[1], value, 'NX')
  expires = ''
  ttl = -1
end
if not taken then
  return {0, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1]), false, false, now}
end
redis.pcall('PUBLISH', ARGV[3], 'taken:' .. expires)
if f[2] and f[2] ~= f[3] then
  redis.call('HSET', KEYS[2], 'token', token, 'last', value, 'expires', expires,
    'run', f[2], 'ended', f[4] or '', 'outcome', 'unknown')
  return {1, token, ttl, f[2], f[4], now}
end
redis.call('HSET', KEYS[2], 'token', token, 'last', value, 'expires', expires)
return {1, token, ttl, false, false, now}
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
/// kept until that time by `PEXPIREAT` if it is still ahead, else deleted. The `last` copy is
/// left as it is: it equals `run` now, which says that its run is on record (versions before
/// this one deleted it instead; both read the same). Our lease expired but not taken over
/// (its `last` copy is ours and not on record yet): recorded. Neither, but the last run on
/// record is ours (also a finish tried again): only its end and outcome are set. Tells the
/// waiters with `pcall`: a user whom an ACL forbids to publish can still release.
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
  if current or not ours(last[1]) or last[1] == last[2] then
    if ours(last[2]) then
      redis.call('HSET', KEYS[2], 'ended', now, 'outcome', ARGV[2])
    end
    return 0
  end
  current = last[1]
end
redis.call('HSET', KEYS[2], 'run', current, 'ended', now, 'outcome', ARGV[2])
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

/// ACQUIRE's reply: acquired (0/1), the token if acquired else the holder's lease value, pttl,
/// the previous lease's value and expiry, now.
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
