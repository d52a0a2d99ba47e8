//! `redis://` and `rediss://` (TLS) — leases in a single Redis instance or primary (Redis ≥ 5).
//!
//! Per name there are two keys, told apart by the kind that follows the prefix:
//! - `{prefix}lease:{name}`: the live lease, a string with a millisecond TTL (`PX`), so that
//!   Redis's own clock decides expiry. Its value is the record `token, holder id, pid, host,
//!   label, created (server ms)`, length-prefixed (see `kv.rs`).
//! - `{prefix}fence:{name}`: a hash that never expires, with
//!   - `token`: the fencing counter, a decimal integer that only ever grows: acquire reads it
//!     and writes it back one higher in the same script, once it has taken the name;
//!   - `last`/`expires`: a copy of the newest lease and its expiry (server ms; empty for a
//!     lease without TTL), so that the acquire that takes over an expired lease (whose key
//!     Redis has already dropped) can report it and record its run. A finish leaves the copy
//!     equal to `run` (versions before this one deleted it; a force-release still does), so a
//!     copy that is not `run` and has no lease key is an expired lease nobody finished;
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
//!
//! With `?min_replicas=N`, acquire, renew and a finish that keeps the lease (a hold) send
//! `WAIT N timeout` in the same pipeline as their script, so on the same connection right
//! after it: the count it returns is how many replicas have the write. An acquire that reached
//! fewer is given back (owner-checked) and is an error, never a lease; a renew that reached
//! fewer is a failed renew. `redis+sentinel://` finds the primary through Sentinel
//! (`sentinel.rs`) and looks again whenever it gives its connection up.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::socket2::TcpKeepalive;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue, IntoConnectionInfo, RedisError,
    RedisResult, Script, ScriptInvocation, ServerErrorKind, Value,
};

use self::scripts::{AcquireReply, ReadReply, RunsReply, Scripts};
use self::sentinel::{SentinelUrl, Sentinels};
use super::kv::{self, Fields};
use super::reconnect::{self, Reconnecting};
use crate::store::tls::{self as shared_tls, Mode, Tls};

mod doctor;
mod scripts;
mod sentinel;
mod tls;
use super::{
    Acquire, FencingToken, Finish, Freed, Heard, LastRun, Lease, Released, Store, mask_password,
    redact,
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

/// How many of `list`'s batches are in flight at once.
const BATCHES_AT_ONCE: usize = 8;

/// The most replicas `?min_replicas=` may ask for.
const MAX_MIN_REPLICAS: u32 = 100;

/// How long `WAIT` waits for the replicas: a twentieth of the lease (the default request
/// timeout is a ninth of it, so the answer comes back in time), within these bounds.
const WAIT_MIN: Duration = Duration::from_millis(10);
const WAIT_MAX: Duration = Duration::from_secs(1);

/// The Redis store: one multiplexed connection, re-established on failure, and replaced by a
/// new one once a request on it was abandoned (see `reconnect`: every request queues on the
/// one connection, so a dead one would hold them all).
pub struct RedisStore {
    url: String,
    prefix: String,
    conn: Reconnecting<ConnectionManager>,
    scripts: Scripts,
    /// For the next connection and the pub/sub connection each waiter listens on; with
    /// Sentinel, the primary found last.
    client: Mutex<redis::Client>,
    config: ConnectionManagerConfig,
    connect_timeout: Duration,
    /// `?min_replicas=`: 0 sends no `WAIT`.
    min_replicas: u32,
    /// The shortest lease asked for so far in ms (`u64::MAX`: none yet), which bounds the
    /// `WAIT` of a finish.
    shortest_ttl_ms: AtomicU64,
    /// `redis+sentinel://`: where to find the primary again.
    sentinel: Option<Discovery>,
    /// The hashes of the scripts loaded on the server as far as we know, so that a pipeline
    /// with `WAIT` is not sent for nothing (and waited for) only to learn `NOSCRIPT`.
    loaded: Mutex<BTreeSet<String>>,
}

/// What a `redis+sentinel://` store needs to find the primary again.
struct Discovery {
    sentinels: Sentinels,
    /// The driver's query parameters for the data nodes, encoded.
    query: String,
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
    /// (or `rediss://` for TLS, or `redis+sentinel://…/service` for the primary that Sentinel
    /// names), with `?min_replicas=N` optional. Other query parameters go to the `redis` crate.
    /// Fails after the connect timeout (default 5 s) if the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        let masked = mask_password(url);
        let (base, mut options) = kv::parse_options(url, DEFAULT_PREFIX)?;
        let min_replicas = take_min_replicas(url, &mut options.other)?;
        if sentinel::is_sentinel(base) {
            return Self::connect_sentinel(url, masked, base, options, min_replicas).await;
        }
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
        let info = with_keepalive(info);
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
            client: Mutex::new(client),
            config,
            connect_timeout: options.connect_timeout,
            min_replicas,
            shortest_ttl_ms: AtomicU64::new(u64::MAX),
            sentinel: None,
            loaded: Mutex::default(),
        })
    }

    /// Connects through the Sentinels of a `redis+sentinel://` URL: asks them for the
    /// primary, within the connect timeout, and proves it with a `PING`.
    async fn connect_sentinel(
        url: &str,
        masked: String,
        base: &str,
        mut options: kv::UrlOptions,
        min_replicas: u32,
    ) -> Result<Self> {
        let parsed = SentinelUrl::parse(base).map_err(|reason| kv::invalid_url(url, reason))?;
        let mut user = None;
        let mut password = None;
        let mut refused = None;
        options.other.retain(|(key, value)| match key.as_str() {
            "sentinel_user" => {
                user = Some(value.clone());
                false
            }
            "sentinel_password" => {
                password = Some(value.clone());
                false
            }
            "cacert" | "cert" | "key" => {
                refused = Some(key.clone());
                false
            }
            _ => true,
        });
        if let Some(key) = refused {
            return Err(kv::invalid_url(
                url,
                format!("?{key}= is for TLS, which redis+sentinel:// does not support yet"),
            ));
        }
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&options.other)
            .finish();
        // The node URL must parse for any address, so check it once with a placeholder.
        let discovery = Discovery {
            sentinels: Sentinels {
                url: parsed,
                user,
                password,
            },
            query,
        };
        discovery
            .client_for("127.0.0.1", 6379)
            .map_err(|reason| kv::invalid_url(url, redact(&reason, url)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(kv::RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let connecting = async {
            let mut primary = discovery
                .find(options.connect_timeout, &config)
                .await
                .map_err(|reason| Error::store(&masked, "connect", redact(&reason, url)))?;
            redis::cmd("PING")
                .query_async::<()>(&mut primary.conn)
                .await
                .map_err(|e| {
                    let message = redact(&e.to_string(), url);
                    if is_refusal(&e) {
                        Error::refused(&masked, "connect", message)
                    } else {
                        Error::store(&masked, "connect", message)
                    }
                })?;
            Ok::<_, Error>(primary)
        };
        let primary = tokio::time::timeout(options.connect_timeout, connecting)
            .await
            .map_err(|_| Error::Timeout {
                store: masked.clone(),
                operation: "connect",
                after: options.connect_timeout,
            })??;
        tracing::debug!(
            "the Sentinels name {}:{} as the primary",
            primary.address.0,
            primary.address.1
        );
        Ok(RedisStore {
            url: masked,
            prefix: options.prefix,
            conn: Reconnecting::new(primary.conn),
            scripts: Scripts::new(),
            client: Mutex::new(primary.client),
            config,
            connect_timeout: options.connect_timeout,
            min_replicas,
            shortest_ttl_ms: AtomicU64::new(u64::MAX),
            sentinel: Some(discovery),
            loaded: Mutex::default(),
        })
    }

    /// The client of the current server.
    fn client(&self) -> redis::Client {
        self.client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
        self.call_keeping(operation, send, |_| true).await
    }

    /// [`call`](Self::call), which also gives the connection up after an answer that `keep`
    /// says is from a server not to stay with.
    async fn call_keeping<T, F>(
        &self,
        operation: &'static str,
        send: impl FnOnce(ConnectionManager) -> F,
        keep: impl FnOnce(&T) -> bool,
    ) -> Result<T>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let conn = self.conn.lend(|| self.reconnect(operation)).await?;
        match send(conn.clone()).await {
            Err(err) if err.is_timeout() || self.look_again(&err) => {
                Err(self.error(operation, err))
            }
            Ok(answer) if !keep(&answer) => Ok(answer),
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

    /// Whether `err` means that the server may no longer be the primary, so that a
    /// `redis+sentinel://` store gives its connection up and asks the Sentinels again: the
    /// connection failed, or the server refused a write as a replica.
    fn look_again(&self, err: &RedisError) -> bool {
        self.sentinel.is_some()
            && (err.is_io_error()
                || err.is_connection_dropped()
                || err.is_connection_refusal()
                || err.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
                || matches!(err.code(), Some("READONLY" | "MASTERDOWN" | "LOADING")))
    }

    /// A new connection, within the connect timeout, after the last one was given up; with
    /// Sentinel, to the primary the Sentinels name now.
    async fn reconnect(&self, operation: &'static str) -> Result<ConnectionManager> {
        let timed_out = || Error::Timeout {
            store: self.url.clone(),
            operation,
            after: self.connect_timeout,
        };
        let Some(discovery) = &self.sentinel else {
            let connecting = ConnectionManager::new_with_config(self.client(), self.config.clone());
            return tokio::time::timeout(self.connect_timeout, connecting)
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| self.error(operation, e));
        };
        let primary = tokio::time::timeout(
            self.connect_timeout,
            discovery.find(self.connect_timeout, &self.config),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(|reason| Error::store(&self.url, operation, reason))?;
        tracing::debug!(
            "the Sentinels name {}:{} as the primary",
            primary.address.0,
            primary.address.1
        );
        *self.client.lock().unwrap_or_else(PoisonError::into_inner) = primary.client;
        Ok(primary.conn)
    }

    /// Runs `script` (its `EVALSHA` is `eval`) and, if `wait` is given, `WAIT min_replicas
    /// wait` right behind it in one pipeline, on the same connection, so that the count
    /// covers the script's writes. Returns the script's reply and the count.
    async fn run_script<T: FromRedisValue>(
        &self,
        operation: &'static str,
        script: &Script,
        eval: Cmd,
        wait: Option<Duration>,
    ) -> Result<(T, Option<u32>)> {
        let replicas = self.min_replicas;
        let hash = script.get_hash().to_owned();
        let known = || self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let loaded_before = known().contains(&hash);
        // With Sentinel, a write that too few replicas confirmed may have gone to an old
        // primary that has not been turned into a replica yet: the next request asks the
        // Sentinels again.
        let keep = |(_, count): &(T, Option<u32>)| {
            self.sentinel.is_none() || count.is_none_or(|count| count >= replicas)
        };
        self.call_keeping(
            operation,
            |mut conn| async move {
                if wait.is_some() && !loaded_before {
                    script.load_async(&mut conn).await?;
                    known().insert(hash.clone());
                }
                let mut pipe = redis::pipe();
                pipe.add_command(eval);
                if let Some(wait) = wait {
                    pipe.cmd("WAIT")
                        .arg(replicas)
                        .arg(wait.as_millis().max(1) as u64);
                }
                pipe.ignore_errors();
                let mut loaded = false;
                loop {
                    let mut replies: Vec<RedisResult<Value>> = pipe.query_async(&mut conn).await?;
                    let count = match wait {
                        Some(_) => Some(match replies.pop() {
                            Some(Ok(count)) => u32::from_redis_value(count)?,
                            Some(Err(err)) => return Err(err),
                            None => 0,
                        }),
                        None => None,
                    };
                    match replies.pop() {
                        // Nothing ran: load the script and send the pipeline again.
                        Some(Err(err))
                            if !loaded
                                && err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
                        {
                            known().remove(&hash);
                            script.load_async(&mut conn).await?;
                            known().insert(hash.clone());
                            loaded = true;
                        }
                        Some(reply) => return Ok((T::from_redis_value(reply?)?, count)),
                        None => {
                            return Err(RedisError::from((
                                ErrorKind::UnexpectedReturnType,
                                "the server sent no reply to the script",
                            )));
                        }
                    }
                }
            },
            keep,
        )
        .await
    }

    /// How long `WAIT` waits for replicas on a lease of `ttl` (`None`: never expires).
    fn wait_for(&self, ttl: Option<Duration>) -> Option<Duration> {
        (self.min_replicas > 0).then(|| {
            ttl.map_or(WAIT_MAX, |ttl| ttl / 20)
                .clamp(WAIT_MIN, WAIT_MAX)
        })
    }

    /// Remembers the lease length `ttl` asked for, for the `WAIT` of a later finish.
    fn note_ttl(&self, ttl: Option<Duration>) {
        if let Some(ttl) = ttl {
            let ms = ttl.as_millis().min(u64::MAX as u128) as u64;
            self.shortest_ttl_ms.fetch_min(ms, Ordering::Relaxed);
        }
    }

    /// The error for a write that reached `count` of the replicas asked for.
    fn too_few_replicas(
        &self,
        operation: &'static str,
        count: u32,
        wait: Duration,
        what: &str,
    ) -> Error {
        Error::store(
            &self.url,
            operation,
            format!(
                "only {count} of the {} replicas asked for (?min_replicas=) confirmed the {operation} within {}; {what}",
                self.min_replicas,
                humantime::format_duration(wait)
            ),
        )
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
                .arg(10_000);
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

impl Discovery {
    /// The client of the data node at `host:port`.
    fn client_for(&self, host: &str, port: u16) -> std::result::Result<redis::Client, String> {
        let info = self
            .sentinels
            .url
            .node_url(host, port, &self.query)
            .as_str()
            .into_connection_info()
            .map_err(|e| e.to_string())?;
        redis::Client::open(with_keepalive(info)).map_err(|e| e.to_string())
    }

    /// The primary the Sentinels name now, connected.
    async fn find(
        &self,
        timeout: Duration,
        config: &ConnectionManagerConfig,
    ) -> std::result::Result<sentinel::Primary, String> {
        self.sentinels
            .primary(timeout, config, |host, port| self.client_for(host, port))
            .await
    }
}

/// `info` with the TCP keep-alive and user timeout of every store connection: the kernel ends
/// dead connections that no request waits on, such as a waiter's pub/sub connection (see
/// `reconnect`).
fn with_keepalive(info: ConnectionInfo) -> ConnectionInfo {
    let keepalive = TcpKeepalive::new()
        .with_time(reconnect::KEEPALIVE_IDLE)
        .with_interval(reconnect::KEEPALIVE_INTERVAL)
        .with_retries(reconnect::KEEPALIVE_RETRIES);
    let tcp = info
        .tcp_settings()
        .clone()
        .set_keepalive(keepalive)
        .set_user_timeout(reconnect::TCP_USER_TIMEOUT);
    info.set_tcp_settings(tcp)
}

/// Takes `?min_replicas=N` out of the driver's parameters: a whole number up to
/// [`MAX_MIN_REPLICAS`] (0, the default, waits for none).
fn take_min_replicas(url: &str, other: &mut Vec<(String, String)>) -> Result<u32> {
    let mut found = None;
    other.retain(|(key, value)| {
        if key == "min_replicas" {
            found = Some(value.clone());
            false
        } else {
            true
        }
    });
    let Some(value) = found else {
        return Ok(0);
    };
    value
        .parse::<u32>()
        .ok()
        .filter(|n| *n <= MAX_MIN_REPLICAS)
        .ok_or_else(|| {
            kv::invalid_url(
                url,
                format!(
                    "?min_replicas={value} is not a number of replicas from 0 to {MAX_MIN_REPLICAS}, e.g. 1"
                ),
            )
        })
}

/// `EVALSHA` of `script`, to which the caller adds the number of keys, the keys and the
/// arguments.
fn evalsha(script: &Script) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash());
    cmd
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
/// What a message on a name's freed channel says: `taken:` and the new lease's expiry in
/// server ms (empty: none) from an acquire; anything else, such as the empty message of a
/// release, may mean the name was freed.
fn word_of(message: &[u8]) -> Heard {
    match message.strip_prefix(b"taken:") {
        Some(expires) => Heard::Taken {
            expires: std::str::from_utf8(expires)
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map(kv::from_unix_ms),
        },
        None => Heard::Freed,
    }
}

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
        self.note_ttl(ttl);
        let ttl_ms = ttl.map(ttl_ms).transpose()?.unwrap_or(0);
        let mut eval = evalsha(&self.scripts.acquire);
        eval.arg(2)
            .arg(self.key(LEASE, name))
            .arg(self.key(FENCE, name))
            .arg(ttl_ms)
            .arg(kv::encode_holder(holder))
            .arg(self.key(FREED, name));
        let wait = self.wait_for(ttl);
        let ((acquired, value, pttl, previous, previous_expires, now), replicated): (
            AcquireReply,
            _,
        ) = self
            .run_script("acquire", &self.scripts.acquire, eval, wait)
            .await?;
        if acquired == 0 {
            return self
                .decode(name, &value, pttl, &now)
                .map(Acquire::Held)
                .ok_or_else(|| self.malformed("acquire", name));
        }
        // Our own record: the script answers with the token and the time it wrote into it.
        let lease = std::str::from_utf8(&value)
            .ok()
            .and_then(|token| token.parse().ok())
            .zip(now.parse().ok())
            .map(|(token, created)| {
                let created = kv::from_unix_ms(created);
                Lease {
                    name: name.to_owned(),
                    holder: holder.clone(),
                    token: FencingToken(token),
                    created,
                    expires: (pttl >= 0)
                        .then(|| created + Duration::from_millis(pttl.unsigned_abs())),
                }
            })
            .ok_or_else(|| self.malformed("acquire", name))?;
        if let (Some(count), Some(wait)) = (replicated, wait) {
            if count < self.min_replicas {
                // A failover now could lose this lease: it must never be used. Giving it back
                // is owner-checked; should that fail too, the lease simply expires.
                let given_back = match self.give_back(&lease).await {
                    Ok(()) => "the lease was given back".to_owned(),
                    Err(err) => format!("giving the lease back failed too ({err}); it expires"),
                };
                return Err(self.too_few_replicas("acquire", count, wait, &given_back));
            }
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
        self.note_ttl(Some(ttl));
        let mut eval = evalsha(&self.scripts.renew);
        eval.arg(2)
            .arg(self.key(LEASE, &lease.name))
            .arg(self.key(FENCE, &lease.name))
            .arg(Self::owner(lease))
            .arg(ttl_ms(ttl)?);
        let wait = self.wait_for(Some(ttl));
        let (renewed, replicated): (Option<(i64, String)>, _) = self
            .run_script("renew", &self.scripts.renew, eval, wait)
            .await?;
        let (pttl, now) = renewed.ok_or_else(|| {
            Error::lost(lease, "it expired, was released or another holder has it")
        })?;
        if let (Some(count), Some(wait)) = (replicated, wait) {
            if count < self.min_replicas {
                // The primary has the new expiry, its replicas may not: a renewal that a
                // failover could undo does not count.
                return Err(self.too_few_replicas(
                    "renew",
                    count,
                    wait,
                    "the renewal does not count",
                ));
            }
        }
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
        let mut eval = evalsha(&self.scripts.finish);
        eval.arg(2)
            .arg(self.key(LEASE, &lease.name))
            .arg(self.key(FENCE, &lease.name))
            .arg(Self::owner(lease))
            .arg(finish.outcome.to_string())
            .arg(self.key(FREED, &lease.name))
            .arg(keep_until);
        // Only a kept lease needs its replicas: a release that a failover loses leaves a
        // lease that expires, which is safe.
        let wait = match finish.hold {
            Some(_) => {
                let shortest = self.shortest_ttl_ms.load(Ordering::Relaxed);
                self.wait_for((shortest != u64::MAX).then(|| Duration::from_millis(shortest)))
            }
            None => None,
        };
        let (finished, replicated): (i64, _) = self
            .run_script("release", &self.scripts.finish, eval, wait)
            .await?;
        if let (2, Some(count), Some(wait)) = (finished, replicated, wait) {
            if count < self.min_replicas {
                return Err(self.too_few_replicas(
                    "release",
                    count,
                    wait,
                    "the lease kept for the hold may end early after a failover",
                ));
            }
        }
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
        // A few batches at once: each is a round trip, and a long list has hundreds.
        use futures_util::StreamExt as _;
        let asking: Vec<_> = names
            .chunks(LIST_BATCH)
            .map(|batch| self.read("list", batch))
            .collect();
        let batches: Vec<Result<Vec<Lease>>> = futures_util::stream::iter(asking)
            .buffered(BATCHES_AT_ONCE)
            .collect()
            .await;
        let mut leases = Vec::with_capacity(names.len());
        for batch in batches {
            leases.extend(batch?);
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
            let mut pubsub = self.client().get_async_pubsub().await?;
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
            while let Some(message) = messages.next().await {
                heard.tell(word_of(message.get_payload_bytes()));
            }
        });
        Ok(Some(Freed::new(word, listener)))
    }

    async fn doctor(&self) -> Result<Vec<crate::doctor::Check>> {
        self.checks().await
    }

    async fn store_time(&self) -> Result<Option<SystemTime>> {
        self.clock().await.map(Some)
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
    /// Gives back `lease`, just acquired but not to be used, if it is still ours: deletes the
    /// lease key and its copy and tells waiters; the fencing counter and the last run stay.
    async fn give_back(&self, lease: &Lease) -> Result<()> {
        let mut invocation = self.scripts.give_back.prepare_invoke();
        invocation
            .key(self.key(LEASE, &lease.name))
            .key(self.key(FENCE, &lease.name))
            .arg(Self::owner(lease))
            .arg(self.key(FREED, &lease.name));
        let _: i64 = self.invoke("acquire", &invocation).await?;
        Ok(())
    }

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
