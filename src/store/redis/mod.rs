//! `redis://` and `rediss://` (TLS) — leases in a single Redis instance or primary (Redis ≥ 5).
//!
//! Per name there are two keys, told apart by the kind that follows the prefix:
//! - `{prefix}lease:{name}`: the live lease, a string with a millisecond TTL (`PX`), so that
//!   Redis's own clock decides expiry. Its value is the record `token, holder id, pid, host,
//!   label, created (server ms)`, length-prefixed (see `kv.rs`).
//! - `{prefix}fence:{name}`: a hash that never expires, with
//!   - `token`: the fencing counter (`HINCRBY`);
//!   - `last`/`expires`: a copy of the newest lease and its expiry (server ms), so that the
//!     acquire that takes over an expired lease (whose key Redis has already dropped) can report
//!     it and record its run. Finish and force-release clear them when they free the name, so
//!     only an expiry leaves them behind;
//!   - `run`/`ended`/`outcome`: the name's last run ([`LastRun`]): its lease record, its end
//!     (server ms; empty when unknown) and its outcome as text (`exit 3`, `unknown`, ...).
//!     Finish writes it; an acquire that replaces an expired lease, and a force-release, write
//!     the lease they remove as `unknown`, unless `run` is that lease already (a lease kept by a
//!     hold after its run). A `last` copy without a lease key that is not `run` reads as an
//!     unknown run. Data of versions before last runs were kept simply has no `run` yet.
//!
//! Finish and force-release publish on the channel `{prefix}freed:{name}` when they free the
//! name, which waiters subscribe to ([`Store::watch`]).
//!
//! Every operation is ONE Lua script (`scripts.rs`), which Redis runs atomically; renew and
//! finish compare the stored value's leading (token, holder id) fields before touching
//! anything. A finish with a hold keeps the lease until its acquisition (`created`, the
//! server's `TIME` when it was taken) plus the hold by `PEXPIREAT`, on the server's clock.
//! Names only ever become key bytes after the prefix; `list` and `last_runs` SCAN with a
//! pattern built from the (escaped) prefix and kind alone and parse every key strictly.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::socket2::TcpKeepalive;
use redis::{
    Cmd, ConnectionAddr, ErrorKind, FromRedisValue, IntoConnectionInfo, RedisError, RedisResult,
    ScriptInvocation, ServerErrorKind,
};

use self::scripts::{AcquireReply, ReadReply, RunsReply, Scripts};
use super::kv::{self, Fields};
use super::reconnect::{self, Reconnecting};
use crate::store::tls::{self as shared_tls, Mode, Tls};

mod scripts;
mod tls;
use super::{
    Acquire, FencingToken, Finish, Freed, LastRun, Lease, Released, Store, mask_password, redact,
};
use crate::error::{Error, Result};

/// Key prefix unless the URL's `?prefix=` sets another.
pub const DEFAULT_PREFIX: &str = "singleton:";

const LEASE: &str = "lease:";
const FENCE: &str = "fence:";
const BENCH: &str = "bench:";
/// The pub/sub channel on which release tells waiters, not a key.
const FREED: &str = "freed:";

/// How often the connection manager retries one reconnection before the request that needed
/// it fails (it does not retry for ever), and the longest pause between tries.
const RECONNECT_RETRIES: usize = 2;
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);

/// Names read per `list` or `last_runs` script call.
const LIST_BATCH: usize = 256;

/// The Redis store: one multiplexed connection, re-established on failure, and replaced by a
/// new one once a request on it was abandoned (see `reconnect`: every request queues on the
/// one connection, so a dead one would hold them all).
pub struct RedisStore {
    url: String,
    prefix: String,
    conn: Reconnecting<ConnectionManager>,
    scripts: Scripts,
    /// For the next connection and the pub/sub connection each waiter listens on.
    client: redis::Client,
    config: ConnectionManagerConfig,
    connect_timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `redis://[user:password@]host[:port][/db][?prefix=…&connect_timeout=…]`
    /// (or `rediss://` for TLS). Other query parameters go to the `redis` crate.
    /// Fails after the connect timeout (default 5 s) if the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        let masked = mask_password(url);
        let (base, mut options) = kv::parse_options(url, DEFAULT_PREFIX)?;
        let secure = base
            .get(..9)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"));
        let mut tls = Tls::new(Mode::VerifyFull, &tls::NAMES);
        options
            .other
            .retain(|(key, value)| !tls.take_decoded(key, value));
        if tls.has_files() && !secure {
            return Err(kv::invalid_url(
                url,
                "?cacert=, ?cert= and ?key= are for TLS: write rediss:// instead of redis://",
            ));
        }
        tls.check().map_err(|reason| kv::invalid_url(url, reason))?;
        let driver_url = if options.other.is_empty() {
            base.to_owned()
        } else {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&options.other)
                .finish();
            format!("{base}?{query}")
        };
        if secure {
            shared_tls::ensure_provider();
        }
        let info = driver_url
            .as_str()
            .into_connection_info()
            .map_err(|e| kv::invalid_url(url, redact(&e.to_string(), url)))?;
        // The kernel ends dead connections that no request waits on, such as a waiter's
        // pub/sub connection (see `reconnect`).
        let keepalive = TcpKeepalive::new()
            .with_time(reconnect::KEEPALIVE_IDLE)
            .with_interval(reconnect::KEEPALIVE_INTERVAL)
            .with_retries(reconnect::KEEPALIVE_RETRIES);
        let tcp = info
            .tcp_settings()
            .clone()
            .set_keepalive(keepalive)
            .set_user_timeout(reconnect::TCP_USER_TIMEOUT);
        let info = info.set_tcp_settings(tcp);
        let address = match info.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                Some((host.clone(), *port))
            }
            _ => None,
        };
        let client = if secure {
            // Checked here, before anything goes on the wire, so that an unreadable file is
            // one line that names it.
            let refused = |e| Error::refused(&masked, "connect", e);
            let root_cert = tls.ca_pem().map_err(refused)?;
            let client_tls =
                tls.identity_pem()
                    .map_err(refused)?
                    .map(|identity| redis::ClientTlsConfig {
                        client_cert: identity.cert,
                        client_key: identity.key,
                    });
            let certificates = redis::TlsCertificates {
                client_tls,
                root_cert,
            };
            redis::Client::build_with_tls(info, certificates)
        } else {
            redis::Client::open(info)
        }
        .map_err(|e| kv::invalid_url(url, redact(&e.to_string(), url)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(kv::RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(RECONNECT_MAX_DELAY);
        // The manager retries the first connection too; bound the whole attempt. The PING
        // makes a server that wants a password we did not give fail here, not at first use.
        let connecting = async {
            let mut conn =
                ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            Ok::<_, RedisError>(conn)
        };
        let connected = tokio::time::timeout(options.connect_timeout, connecting)
            .await
            .map_err(|_| Error::Timeout {
                store: masked.clone(),
                operation: "connect",
                after: options.connect_timeout,
            })
            .and_then(|connected| {
                connected.map_err(|e| {
                    let message = redact(&e.to_string(), url);
                    if is_refusal(&e) {
                        Error::refused(&masked, "connect", message)
                    } else if let Some(cause) = secure.then(|| tls.explain(&message)).flatten() {
                        Error::refused(&masked, "connect", cause)
                    } else {
                        Error::store(&masked, "connect", message)
                    }
                })
            });
        let conn = match connected {
            Ok(conn) => conn,
            Err(err @ Error::Refused { .. }) => return Err(err),
            Err(err) => {
                // A TLS server sits silent before a plaintext client's first command, and a
                // plaintext one before a TLS client's hello: say which scheme would work.
                let wrong = match &address {
                    Some((host, port)) => tls::wrong_scheme(host, *port, secure).await,
                    None => None,
                };
                return Err(match wrong {
                    Some(line) => Error::refused(&masked, "connect", line),
                    None => err,
                });
            }
        };
        Ok(RedisStore {
            url: masked,
            prefix: options.prefix,
            conn: Reconnecting::new(conn),
            scripts: Scripts::new(),
            client,
            config,
            connect_timeout: options.connect_timeout,
        })
    }

    /// Sends one request (`send` gets the connection) and maps its error. A request that
    /// timed out, or whose future is dropped, gives the connection up: the next request
    /// connects afresh.
    async fn call<T, F>(
        &self,
        operation: &'static str,
        send: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let conn = self.conn.lend(|| self.reconnect(operation)).await?;
        match send(conn.clone()).await {
            Err(err) if err.is_timeout() => Err(self.error(operation, err)),
            answer => {
                conn.answered();
                answer.map_err(|e| self.error(operation, e))
            }
        }
    }

    /// Runs one script.
    async fn invoke<T: FromRedisValue>(
        &self,
        operation: &'static str,
        script: &ScriptInvocation<'_>,
    ) -> Result<T> {
        self.call(operation, |mut conn| async move {
            script.invoke_async(&mut conn).await
        })
        .await
    }

    /// Runs one command.
    async fn query<T: FromRedisValue>(&self, operation: &'static str, command: &Cmd) -> Result<T> {
        self.call(operation, |mut conn| async move {
            command.query_async(&mut conn).await
        })
        .await
    }

    /// A new connection, within the connect timeout, after the last one was given up.
    async fn reconnect(&self, operation: &'static str) -> Result<ConnectionManager> {
        let connecting =
            ConnectionManager::new_with_config(self.client.clone(), self.config.clone());
        tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| Error::Timeout {
                store: self.url.clone(),
                operation,
                after: self.connect_timeout,
            })?
            .map_err(|e| self.error(operation, e))
    }

    fn key(&self, kind: &str, name: &str) -> Vec<u8> {
        kv::key(&self.prefix, kind, name)
    }

    fn error(&self, operation: &'static str, err: RedisError) -> Error {
        if err.is_timeout() {
            Error::Timeout {
                store: self.url.clone(),
                operation,
                after: kv::RESPONSE_TIMEOUT,
            }
        } else if is_refusal(&err) {
            Error::refused(&self.url, operation, err)
        } else {
            Error::store(&self.url, operation, err)
        }
    }

    fn malformed(&self, operation: &'static str, key: &str) -> Error {
        Error::store(
            &self.url,
            operation,
            format!("the value of {key:?} is not a lease record written by singleton"),
        )
    }

    /// The lease recorded in `value`, with its expiry from the server's `now` and `pttl`.
    fn decode(&self, name: &str, value: &[u8], pttl: i64, now: &str) -> Option<Lease> {
        let now = kv::from_unix_ms(now.parse().ok()?);
        let mut lease = decode_record(name, value)?;
        lease.expires = (pttl >= 0).then(|| now + Duration::from_millis(pttl.unsigned_abs()));
        Some(lease)
    }

    /// The last run recorded in the fence hash's `run`, `ended` (server ms; empty or missing
    /// when unknown) and `outcome`; `None` without a `run` (also data of versions before last
    /// runs were kept).
    fn decode_run(
        &self,
        operation: &'static str,
        name: &str,
        (record, ended, outcome): (Option<Vec<u8>>, Option<String>, Option<String>),
    ) -> Result<Option<LastRun>> {
        let Some(record) = record else {
            return Ok(None);
        };
        let malformed = |what: String| {
            Error::store(
                &self.url,
                operation,
                format!("the last run of {name:?} on record is malformed: {what}"),
            )
        };
        let lease = decode_record(name, &record)
            .ok_or_else(|| malformed("its lease is not a record written by singleton".into()))?;
        let ended = match ended.as_deref() {
            None | Some("") => None,
            Some(ms) => Some(
                ms.parse()
                    .map(kv::from_unix_ms)
                    .map_err(|_| malformed(format!("its end {ms:?} is not a time")))?,
            ),
        };
        let outcome = outcome
            .ok_or_else(|| malformed("it has no outcome".into()))?
            .parse()
            .map_err(malformed)?;
        Ok(Some(LastRun::of(&lease, ended, outcome)))
    }

    /// The last runs of `names`, read in one script call.
    async fn runs(&self, operation: &'static str, names: &[&str]) -> Result<Vec<LastRun>> {
        let mut invocation = self.scripts.runs.prepare_invoke();
        for name in names {
            invocation
                .key(self.key(LEASE, name))
                .key(self.key(FENCE, name));
        }
        let found: RunsReply = self.invoke(operation, &invocation).await?;
        let mut runs = Vec::with_capacity(names.len());
        for (name, found) in names.iter().zip(found) {
            runs.extend(self.decode_run(operation, name, found)?);
        }
        Ok(runs)
    }

    /// The names that have a key of `kind`, in order: SCAN with a pattern of the (escaped)
    /// prefix and kind alone, every key parsed strictly.
    async fn scan_names(&self, operation: &'static str, kind: &str) -> Result<Vec<String>> {
        // SCAN may return a key more than once; a set also orders the names.
        let mut names = BTreeSet::new();
        let pattern = format!("{}{kind}*", glob_escape(&self.prefix));
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, keys): (u64, Vec<Vec<u8>>) = self.query(operation, &scan).await?;
            names.extend(
                keys.iter()
                    .filter_map(|key| kv::name_of_key(key, &self.prefix, kind))
                    .map(str::to_owned),
            );
            if next == 0 {
                return Ok(names.into_iter().collect());
            }
            cursor = next;
        }
    }

    /// The encoded (token, holder id) that renew and finish compare the stored value with.
    fn owner(lease: &Lease) -> Vec<u8> {
        let mut owner = Vec::new();
        kv::push_field(&mut owner, lease.token.0.to_string().as_bytes());
        kv::push_field(&mut owner, lease.holder.id.as_bytes());
        owner
    }
}

/// The lease in a lease record (token, holder, created), without expiry; `None` unless the
/// whole value is such a record.
fn decode_record(name: &str, value: &[u8]) -> Option<Lease> {
    let mut fields = Fields::new(value);
    let token = fields.number()?;
    let holder = fields.holder()?;
    let created = kv::from_unix_ms(fields.number()?);
    fields.is_done().then(|| Lease {
        name: name.to_owned(),
        holder,
        token: FencingToken(token),
        created,
        expires: None,
    })
}

/// Whether the server refused our credentials (a wrong password or user, none given where one
/// is needed) or our access (an ACL that forbids a command or a key): [`Error::Refused`].
fn is_refusal(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm)
    ) || matches!(err.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
}

/// A TTL in whole milliseconds, rounded up: a store lease a little longer than asked is safe,
/// because the holder's own deadline counts from the TTL it asked for.
fn ttl_ms(ttl: Duration) -> Result<u64> {
    let ms = ttl.as_nanos().div_ceil(1_000_000).max(1);
    // Redis refuses expiries whose absolute time overflows; stay far below that.
    u64::try_from(ms)
        .ok()
        .filter(|ms| *ms < 1 << 50)
        .ok_or_else(|| Error::InvalidOptions {
            reason: format!("lease length {ttl:?} is too long for Redis"),
        })
}

/// Escapes the glob characters of `text` for SCAN's MATCH.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait::async_trait]
impl Store for RedisStore {
    fn describe(&self) -> &str {
        &self.url
    }

    // expiries are the server's TIME plus the key's remaining TTL.
    fn expiry_on_store_clock(&self) -> bool {
        true
    }

    async fn acquire(
        &self,
        name: &str,
        holder: &super::Holder,
        ttl: Option<Duration>,
    ) -> Result<Acquire> {
        let ttl_ms = ttl.map(ttl_ms).transpose()?.unwrap_or(0);
        let mut script = self.scripts.acquire.prepare_invoke();
        script
            .key(self.key(LEASE, name))
            .key(self.key(FENCE, name))
            .arg(ttl_ms)
            .arg(kv::encode_holder(holder));
        let (acquired, value, pttl, previous, previous_expires, now): AcquireReply =
            self.invoke("acquire", &script).await?;
        let lease = self
            .decode(name, &value, pttl, &now)
            .ok_or_else(|| self.malformed("acquire", name))?;
        if acquired == 0 {
            return Ok(Acquire::Held(lease));
        }
        // The copy of the lease that expired; its key is gone, so its TTL is taken from the
        // recorded expiry.
        let took_over = previous.and_then(|value| {
            let mut previous = self.decode(name, &value, -1, &now)?;
            previous.expires = Some(
                previous_expires
                    .and_then(|ms| ms.parse().ok())
                    .map_or_else(SystemTime::now, kv::from_unix_ms),
            );
            Some(previous)
        });
        Ok(Acquire::Acquired { lease, took_over })
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let mut script = self.scripts.renew.prepare_invoke();
        script
            .key(self.key(LEASE, &lease.name))
            .key(self.key(FENCE, &lease.name))
            .arg(Self::owner(lease))
            .arg(ttl_ms(ttl)?);
        let renewed: Option<(i64, String)> = self.invoke("renew", &script).await?;
        let (pttl, now) = renewed.ok_or_else(|| {
            Error::lost(lease, "it expired, was released or another holder has it")
        })?;
        let now = now
            .parse()
            .map(kv::from_unix_ms)
            .map_err(|_| self.malformed("renew", &lease.name))?;
        let mut renewed = lease.clone();
        renewed.expires = (pttl >= 0).then(|| now + Duration::from_millis(pttl.unsigned_abs()));
        Ok(renewed)
    }

    async fn finish(&self, lease: &Lease, finish: &Finish) -> Result<Released> {
        // The acquisition's time is the server's TIME it was created at, so the kept lease
        // expires by the server's clock at acquisition + hold.
        let keep_until = match finish.hold {
            Some(hold) => {
                let created = lease
                    .created
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |since| since.as_millis() as u64);
                created + ttl_ms(hold.after_acquisition)?
            }
            None => 0,
        };
        let mut script = self.scripts.finish.prepare_invoke();
        script
            .key(self.key(LEASE, &lease.name))
            .key(self.key(FENCE, &lease.name))
            .arg(Self::owner(lease))
            .arg(finish.outcome.to_string())
            .arg(self.key(FREED, &lease.name))
            .arg(keep_until);
        let finished: i64 = self.invoke("release", &script).await?;
        Ok(match finished {
            2 => Released::Kept {
                expires: Some(kv::from_unix_ms(keep_until)),
            },
            1 => Released::Released,
            _ => Released::NotHeld,
        })
    }

    async fn last_run(&self, name: &str) -> Result<Option<LastRun>> {
        Ok(self.runs("last run", &[name]).await?.pop())
    }

    async fn last_runs(&self) -> Result<Vec<LastRun>> {
        // Every name ever acquired has a fence hash, which keeps its last run.
        let names = self.scan_names("last runs", FENCE).await?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut runs = Vec::new();
        for batch in names.chunks(LIST_BATCH) {
            runs.extend(self.runs("last runs", batch).await?);
        }
        Ok(runs)
    }

    async fn inspect(&self, name: &str) -> Result<Option<Lease>> {
        Ok(self.read("inspect", &[name]).await?.pop())
    }

    async fn list(&self) -> Result<Vec<Lease>> {
        let names = self.scan_names("list", LEASE).await?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut leases = Vec::with_capacity(names.len());
        for batch in names.chunks(LIST_BATCH) {
            leases.extend(self.read("list", batch).await?);
        }
        Ok(leases)
    }

    async fn force_release(&self, name: &str) -> Result<Option<Lease>> {
        let mut script = self.scripts.force_release.prepare_invoke();
        script
            .key(self.key(LEASE, name))
            .key(self.key(FENCE, name))
            .arg(self.key(FREED, name));
        let (value, pttl, now): (Option<Vec<u8>>, i64, String) =
            self.invoke("force-release", &script).await?;
        value
            .map(|value| {
                self.decode(name, &value, pttl, &now)
                    .ok_or_else(|| self.malformed("force-release", name))
            })
            .transpose()
    }

    /// A pub/sub connection of its own, subscribed to the name's channel, on which release and
    /// force-release publish.
    async fn watch(&self, name: &str) -> Result<Option<Freed>> {
        let subscribing = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(self.key(FREED, name)).await?;
            Ok::<_, RedisError>(pubsub.into_on_message())
        };
        let mut messages = tokio::time::timeout(self.connect_timeout, subscribing)
            .await
            .map_err(|_| Error::Timeout {
                store: self.url.clone(),
                operation: "watch",
                after: self.connect_timeout,
            })?
            .map_err(|e| self.error("watch", e))?;
        let (heard, word) = Freed::channel();
        // The stream ends when the connection drops.
        let listener = Freed::listen(async move {
            while messages.next().await.is_some() {
                let _ = heard.try_send(());
            }
        });
        Ok(Some(Freed::new(word, listener)))
    }

    async fn benchmark_floor(&self, scratch_key: &str) -> Result<()> {
        let key = self.key(BENCH, scratch_key);
        let mut set = redis::cmd("SET");
        set.arg(&key).arg("1").arg("NX").arg("PX").arg(60_000);
        let _: Option<String> = self.query("benchmark", &set).await?;
        let _: i64 = self.query("benchmark", redis::cmd("DEL").arg(&key)).await?;
        Ok(())
    }
}

impl RedisStore {
    /// The live leases on `names`, read in one script call.
    async fn read(&self, operation: &'static str, names: &[&str]) -> Result<Vec<Lease>> {
        let mut invocation = self.scripts.read.prepare_invoke();
        for name in names {
            invocation.key(self.key(LEASE, name));
        }
        let (now, found): ReadReply = self.invoke(operation, &invocation).await?;
        let mut leases = Vec::with_capacity(names.len());
        for (name, (value, pttl)) in names.iter().zip(found) {
            if let Some(value) = value {
                leases.push(
                    self.decode(name, &value, pttl, &now)
                        .ok_or_else(|| self.malformed(operation, name))?,
                );
            }
        }
        Ok(leases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_in_the_prefix_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }

    #[test]
    fn ttls_round_up_to_milliseconds() {
        assert_eq!(ttl_ms(Duration::from_micros(1500)).unwrap(), 2);
        assert_eq!(ttl_ms(Duration::from_nanos(1)).unwrap(), 1);
        assert_eq!(ttl_ms(Duration::from_secs(15)).unwrap(), 15_000);
        assert!(ttl_ms(Duration::from_secs(u64::MAX)).is_err());
    }
}
