//! Where leases live: the [`Store`] trait (the original package's "persister", made safe) and
//! [`connect`], which picks a backend from a URL.
//!
//! Every method of [`Store`] is ONE atomic operation of the store, judged by the store's own clock.
//! Everything above the trait (events, renewal, lost detection, the CLI) is written once.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::doctor::Check;
use crate::error::{Error, Result};

pub use counted::Counted;
#[cfg(any(feature = "mongodb", feature = "redis"))]
pub(crate) use mask::redact;
pub use mask::{is_secret_key, mask_password};
pub use run::{Finish, Hold, LastRun, Outcome};

mod counted;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(any(feature = "redis", feature = "etcd"))]
mod kv;
mod mask;
pub mod memory;
#[cfg(feature = "mongodb")]
pub mod mongodb;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(
    feature = "postgres",
    feature = "mysql",
    feature = "redis",
    feature = "etcd",
    feature = "mongodb"
))]
// Each store uses a part of it: a build with only some of the stores leaves the rest unused.
#[cfg_attr(
    not(all(
        feature = "postgres",
        feature = "mysql",
        feature = "redis",
        feature = "etcd",
        feature = "mongodb"
    )),
    allow(dead_code, unused_imports)
)]
mod reconnect;
#[cfg(feature = "redis")]
pub mod redis;
mod run;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(feature = "tls")]
// Each store uses a part of it: a build with only some of the stores leaves the rest unused.
#[cfg_attr(
    not(all(
        feature = "postgres",
        feature = "mysql",
        feature = "redis",
        feature = "etcd",
        feature = "mongodb"
    )),
    allow(dead_code, unused_imports)
)]
mod tls;

/// A fencing token: minted by the store at each successful acquisition, strictly greater than
/// every token issued for the same name before, across release and expiry.
///
/// Hand it to whatever the job writes to, so that a stale holder's late writes can be rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who holds (or asks for) a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// Random and unique per acquisition; renew and release match on it.
    pub id: String,
    /// Host name of the holding process.
    pub host: String,
    /// Process id of the holding process.
    pub pid: u32,
    /// Free text, e.g. the command line the CLI runs.
    pub label: String,
}

impl Holder {
    /// A holder for this process with a fresh random id.
    pub fn current(label: impl Into<String>) -> Self {
        Holder {
            id: uuid::Uuid::new_v4().simple().to_string(),
            host: host_name(),
            pid: std::process::id(),
            label: label.into(),
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pid {}", self.host, self.pid)?;
        if !self.label.is_empty() {
            write!(f, " ({})", self.label)?;
        }
        Ok(())
    }
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// A lease as the store reported it: what the holder got from `acquire`/`renew`, and what
/// `status`/`list` show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The singleton's name.
    pub name: String,
    /// Who holds it.
    pub holder: Holder,
    /// The fencing token minted for this acquisition.
    pub token: FencingToken,
    /// When it was acquired, by the store's clock.
    #[serde(with = "rfc3339")]
    pub created: SystemTime,
    /// When it expires, by the store's clock; `None` for a lease that never expires.
    /// Informational only: the holder's safety comes from its own monotonic deadline.
    #[serde(with = "rfc3339_opt")]
    pub expires: Option<SystemTime>,
}

impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "held by {} since {} (token {}",
            self.holder,
            humantime::format_rfc3339_millis(self.created),
            self.token
        )?;
        match self.expires {
            Some(at) => write!(f, ", expires {})", humantime::format_rfc3339_millis(at)),
            None => write!(f, ", never expires)"),
        }
    }
}

/// The outcome of [`Store::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The lease is ours. `took_over` is the expired lease it replaced, if any, unless that
    /// lease's run had been finished (a lease kept after its run by a hold ends as planned).
    Acquired {
        /// The new lease.
        lease: Lease,
        /// The previous holder's lease, which had expired by the store's clock before its
        /// holder finished its run.
        took_over: Option<Lease>,
    },
    /// Somebody else holds a live lease.
    Held(Lease),
}

/// The outcome of [`Store::release`] and [`Store::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Our lease was given back.
    Released,
    /// Our run is over, and its lease stays in the store until `expires` (store clock, as the
    /// store reports it), as the [`Finish::hold`] asked: contenders meet a conflict until then.
    Kept {
        /// When the kept lease expires.
        expires: Option<SystemTime>,
    },
    /// It was not ours any more (expired and taken over, or force-released); no lease was
    /// changed.
    NotHeld,
}

/// What a waiter hears from the store ([`Freed::next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// The name was just freed (released, force-released or, where the store says so,
    /// expired), and every waiter was told: try to acquire, but others will too.
    Freed,
    /// Something changed that may have freed the name (a store that cannot tell what, such as
    /// SQLite's commits): try to acquire.
    Changed,
    /// Somebody has just acquired the name, and their lease expires at `expires` (by the
    /// store's clock, `None`: not told): trying now would find it held.
    Taken {
        /// When the new lease expires, if the store said.
        expires: Option<SystemTime>,
    },
}

/// The sending end of a [`Freed`] feed, held by the store's listener task. Only the newest
/// word counts: one that was not waited for yet is replaced by the next (a release and then an
/// acquire mean "taken", an acquire and then a release "freed").
#[derive(Debug)]
pub struct Teller(tokio::sync::watch::Sender<Heard>);

impl Teller {
    /// Tells the waiter `heard`.
    pub fn tell(&self, heard: Heard) {
        self.0.send_replace(heard);
    }

    /// Tells the waiter that something changed that may have freed the name.
    pub fn changed(&self) {
        self.tell(Heard::Changed);
    }
}

/// Word from a store of what just happened to a name, from [`Store::watch`]: a waiter that
/// hears it was freed tries to acquire at once instead of at its next poll, and one that
/// hears it was taken need not ask until the new lease could expire.
///
/// It is only a hint, and it never grants anything: the waiter still has to win an acquire. Word
/// may come late, twice, for a release somebody else then won, or not at all (a dropped
/// connection ends it), so waiters keep polling too. Dropping it stops listening.
pub struct Freed {
    heard: tokio::sync::watch::Receiver<Heard>,
    _listening: Box<dyn std::any::Any + Send + Sync>,
}

impl Freed {
    /// Word that `heard` is told ([`Freed::channel`] makes the pair); the feed ends when the
    /// [`Teller`] is dropped. `listening` is kept as long as this is and dropped with it, to
    /// stop listening: say, a `tokio_util::task::AbortOnDropHandle` of the task that tells,
    /// and the connection it listens on. A store that implements [`Store::watch`] builds one.
    pub fn new(heard: FreedReceiver, listening: impl std::any::Any + Send + Sync) -> Self {
        Freed {
            heard: heard.0,
            _listening: Box::new(listening),
        }
    }

    /// Spawns a listener task that is aborted when the handle is dropped, also before it is
    /// handed to [`Freed::new`] (say, when setting up the subscription fails).
    pub(crate) fn listen(
        task: impl Future<Output = ()> + Send + 'static,
    ) -> tokio_util::task::AbortOnDropHandle<()> {
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(task))
    }

    /// The pair a listener tells on and a [`Freed`] hears from.
    pub fn channel() -> (Teller, FreedReceiver) {
        let (teller, mut heard) = tokio::sync::watch::channel(Heard::Freed);
        heard.mark_unchanged();
        (Teller(teller), FreedReceiver(heard))
    }

    /// Waits for the next word: `Some` when it comes (the newest, if several came since the
    /// last), `None` once the store's feed has ended (say, its connection dropped), after
    /// which nothing more will come. Cancel-safe.
    pub async fn next(&mut self) -> Option<Heard> {
        match self.heard.changed().await {
            Ok(()) => Some(*self.heard.borrow_and_update()),
            Err(_) => None,
        }
    }

    /// Forgets word that has come but was not waited for yet: a try about to be sent sees
    /// what it told of, so a waiter need not wake for it again.
    pub fn forget_heard(&mut self) {
        self.heard.mark_unchanged();
    }
}

/// The receiving end of [`Freed::channel`], handed to [`Freed::new`].
#[derive(Debug)]
pub struct FreedReceiver(tokio::sync::watch::Receiver<Heard>);

impl fmt::Debug for Freed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Freed").finish_non_exhaustive()
    }
}

/// A place where leases live. Implementations must make every method ONE atomic operation of the
/// store, decide expiry by the store's clock, and never change a lease that another holder owns.
///
/// Every request is bounded: the [`Singleton`](crate::Singleton) above abandons a request that
/// takes longer than its request timeout (it drops the future) and tries again while the lease's
/// deadline allows. So a request future dropped before it completes must not leave its
/// connection to be reused: a connection whose peer stopped answering (a half-open socket, a
/// silently dropped packet stream) must not hang the next request too. An abandoned request may
/// still take effect in the store; that is safe, as every write is owner-checked.
///
/// [`crate::conformance`] checks an implementation against this contract.
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The store's URL with any password masked, for messages.
    fn describe(&self) -> &str;

    /// Creates the lease, or takes over one that has expired by the store's clock, in one atomic
    /// step. `ttl: None` asks for a lease that never expires. The new lease's token is greater
    /// than every token issued for `name` before.
    async fn acquire(&self, name: &str, holder: &Holder, ttl: Option<Duration>) -> Result<Acquire>;

    /// Extends a live lease we hold to `ttl` from now (store clock), matching holder id and token.
    /// Returns [`Error::Lost`] when the lease is no longer ours or has already expired.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease>;

    /// Gives back a lease we hold, matching holder id and token, recording the run as ended
    /// with [`Outcome::Released`]: [`finish`](Self::finish) without an outcome or a hold.
    async fn release(&self, lease: &Lease) -> Result<Released> {
        self.finish(lease, &Finish::release(Outcome::Released))
            .await
    }

    /// Ends our run on `lease`, in ONE atomic operation of the store:
    ///
    /// - If the lease is ours (holder id and token match; live, or expired but not yet taken
    ///   over), the run becomes the name's [`LastRun`]: its holder, token, start (the lease's
    ///   acquisition), end (the store's clock now) and `finish.outcome`. Then, if
    ///   [`Finish::hold`] asks for a time that is not over yet and the lease is live, the lease
    ///   stays in the store, unchanged but for its expiry, until that time ([`Hold`] says how
    ///   to reckon it), and [`Released::Kept`] is returned; it is never renewed again.
    ///   Otherwise it is given back and [`Released::Released`] is returned.
    /// - If it is not ours any more but the name's last run on record is ours (same token and
    ///   holder id: the next holder's acquire, or a force-release, recorded it as
    ///   [`Outcome::Unknown`]), that record's outcome becomes `finish.outcome` and its end the
    ///   store's clock now. No lease is changed; [`Released::NotHeld`].
    /// - Otherwise nothing is changed; [`Released::NotHeld`].
    ///
    /// The fencing counter survives, as with every release.
    async fn finish(&self, lease: &Lease, finish: &Finish) -> Result<Released>;

    /// The name's last run on record, if any (also while the name is held again, or free).
    ///
    /// Every ended run is on record, also a run nobody finished: an acquire that takes over an
    /// expired lease, and a force-release, record the lease they replace as a run with
    /// [`Outcome::Unknown`] (unless that run had been finished already), in the same atomic
    /// operation; and an expired lease nobody has replaced yet reads as such a run.
    async fn last_run(&self, name: &str) -> Result<Option<LastRun>>;

    /// The last run of every name that has one, ordered by name (for `list --all`).
    async fn last_runs(&self) -> Result<Vec<LastRun>>;

    /// The live (held and unexpired) lease on `name`, if any.
    async fn inspect(&self, name: &str) -> Result<Option<Lease>>;

    /// All live leases, ordered by name.
    async fn list(&self) -> Result<Vec<Lease>>;

    /// Operator override: frees `name` whoever holds it and returns the lease that was removed.
    /// The fencing counter survives, and the removed lease is recorded as the name's last run,
    /// with [`Outcome::Unknown`] until its holder finishes (see [`finish`](Self::finish)).
    /// Callers should log this.
    async fn force_release(&self, name: &str) -> Result<Option<Lease>>;

    /// Starts listening for word that `name` may have been freed (released, force-released or,
    /// where the store says so, expired), for waiters. When this returns, every later release
    /// will be heard, barring a dropped connection. `Ok(None)`, the default, means the store
    /// cannot tell: waiters then only poll.
    async fn watch(&self, name: &str) -> Result<Option<Freed>> {
        let _ = name;
        Ok(None)
    }

    /// Whether the [`Lease::expires`] of this store's acquire and renew replies is the store's own
    /// clock at the time it handled the request plus the TTL (SQL `now()`, MongoDB `$$NOW`, Redis
    /// `TIME`). Holders then check that the store's clock does not run ahead of theirs (a wall
    /// clock stepped forward on the store's host ends leases early). The default, `false`, is
    /// for stores whose expiries are computed by the client or follow no wall clock.
    fn expiry_on_store_clock(&self) -> bool {
        false
    }

    /// For [`crate::doctor`]: the store's own settings that leases depend on (durability,
    /// eviction, replication, versions with known lease bugs, …), each read and judged. It only
    /// reads: it never writes lease data. The checks every store shares (clock offset, round
    /// trip) are [`crate::doctor::examine`]'s. The default has none.
    async fn doctor(&self) -> Result<Vec<Check>> {
        Ok(Vec::new())
    }

    /// For [`crate::doctor`]: the store's own wall clock now, as it reads it (SQL
    /// `clock_timestamp()`, Redis `TIME`, MongoDB's `hello`), to measure its offset from this
    /// host's. `None`, the default, for a store that keeps no wall clock of its own.
    async fn store_time(&self) -> Result<Option<SystemTime>> {
        Ok(None)
    }

    /// For `singleton bench`: the store's raw equivalent of an acquire+release, the floor we
    /// measure ourselves against. It writes one plain record under `scratch_key` and deletes it
    /// again (e.g. SQL INSERT + DELETE, Redis SET NX + DEL), in two round trips, on the same
    /// connection type acquire and release use, outside the lease data.
    async fn benchmark_floor(&self, scratch_key: &str) -> Result<()> {
        let _ = scratch_key;
        Err(Error::store(
            self.describe(),
            "benchmark",
            "this store has no raw write pair to compare with",
        ))
    }
}

/// Runs one store request, abandoning it after `limit` with [`Error::Timeout`]. Stores must not
/// reuse the connection of an abandoned request (see [`Store`]). [`Singleton`](crate::Singleton)
/// bounds every request it makes this way.
pub async fn bounded<T>(
    store: &dyn Store,
    operation: &'static str,
    limit: Duration,
    request: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, request).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            store: store.describe().to_owned(),
            operation,
            after: limit,
        }),
    }
}

/// The stores compiled into this build, by the name of their cargo feature, e.g. `["sqlite",
/// "postgres"]`; [`connect`] refuses the schemes of the others with [`Error::FeatureDisabled`].
///
/// ```
/// println!("stores: {}", singleton_process::store::ENABLED.join(", "));
/// ```
pub const ENABLED: &[&str] = &[
    #[cfg(feature = "sqlite")]
    "sqlite",
    #[cfg(feature = "postgres")]
    "postgres",
    #[cfg(feature = "mysql")]
    "mysql",
    #[cfg(feature = "redis")]
    "redis",
    #[cfg(feature = "mongodb")]
    "mongodb",
    #[cfg(feature = "etcd")]
    "etcd",
];

/// Opens the store named by `url`:
///
/// | URL | store |
/// |---|---|
/// | `sqlite:///abs/path.db`, `sqlite://rel/path.db` | one SQLite file shared by the processes of one host (feature `sqlite`) |
/// | `postgres://user:password@host[:port]/db[?table=…]`, `postgresql://…` | PostgreSQL (feature `postgres`) |
/// | `mysql://user:password@host[:port]/db[?table=…]` | MySQL or MariaDB (feature `mysql`) |
/// | `mongodb://…/db[?collection=…]`, `mongodb+srv://…` | MongoDB (feature `mongodb`) |
/// | `redis://[user:password@]host[:port][/db]`, `rediss://…` | a Redis instance or primary (feature `redis`) |
/// | `redis+sentinel://[user:password@]s1:26379,s2:26379/service[/db]` | the primary that Redis Sentinel names (feature `redis`) |
/// | `etcd://[user:password@]host:port[,host:port…]`, `etcds://…` (TLS) | an etcd v3 cluster (feature `etcd`) |
/// | `memory:` | a fresh in-process store |
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> singleton_process::Result<()> {
/// let store = singleton_process::connect("memory:").await?;
/// assert_eq!(store.describe(), "memory:");
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    connect_as(url, Refusals::Refuse).await
}

/// [`connect`] for [`crate::doctor`]: a store whose setup it would refuse for safety opens
/// anyway, and its own checks report what it would have refused.
pub(crate) async fn connect_for_doctor(url: &str) -> Result<Arc<dyn Store>> {
    connect_as(url, Refusals::Report).await
}

/// What a store does with a setup it knows to be unsafe (an SQLite file on a shared file
/// system, an etcd member with known lease bugs) that its URL did not accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(any(feature = "sqlite", feature = "etcd")), allow(dead_code))]
pub(crate) enum Refusals {
    /// Refuses to open it: for leases.
    Refuse,
    /// Opens it, for `doctor` to report.
    Report,
}

#[cfg_attr(
    not(any(feature = "sqlite", feature = "etcd")),
    allow(unused_variables)
)]
async fn connect_as(url: &str, refusals: Refusals) -> Result<Arc<dyn Store>> {
    let scheme = url.split_once(':').map(|(scheme, _)| scheme).unwrap_or("");
    if !mask::is_scheme(scheme) {
        // Never the text itself: it may be a libpq string with a password in it.
        let reason = if url.contains('=') && !url.contains("://") {
            "a keyword=value connection string is not accepted; write it as a URL, e.g. postgres://user:password@host/db"
        } else {
            "expected SCHEME:..., e.g. sqlite:///var/lib/singleton/locks.db"
        };
        return Err(Error::InvalidUrl {
            url: mask_password(url),
            reason: reason.into(),
        });
    }
    match scheme.to_ascii_lowercase().as_str() {
        "memory" => Ok(Arc::new(memory::MemoryStore::new())),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(
            sqlite::SqliteStore::open_url_as(url, refusals).await?,
        )),
        #[cfg(not(feature = "sqlite"))]
        "sqlite" => Err(disabled("sqlite", "sqlite")),
        #[cfg(feature = "mongodb")]
        "mongodb" | "mongodb+srv" => Ok(Arc::new(self::mongodb::MongoStore::open(url).await?)),
        #[cfg(not(feature = "mongodb"))]
        "mongodb" | "mongodb+srv" => Err(disabled(scheme, "mongodb")),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(postgres::PostgresStore::connect(url).await?)),
        #[cfg(not(feature = "postgres"))]
        "postgres" | "postgresql" => Err(disabled(scheme, "postgres")),
        #[cfg(feature = "mysql")]
        "mysql" => Ok(Arc::new(mysql::MysqlStore::connect(url).await?)),
        #[cfg(not(feature = "mysql"))]
        "mysql" => Err(disabled(scheme, "mysql")),
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "redis+sentinel" => {
            Ok(Arc::new(redis::RedisStore::connect(url).await?))
        }
        #[cfg(not(feature = "redis"))]
        "redis" | "rediss" | "redis+sentinel" => Err(disabled(scheme, "redis")),
        #[cfg(feature = "etcd")]
        "etcd" | "etcds" => Ok(Arc::new(etcd::EtcdStore::connect_as(url, refusals).await?)),
        #[cfg(not(feature = "etcd"))]
        "etcd" | "etcds" => Err(disabled(scheme, "etcd")),
        _ => Err(Error::InvalidUrl {
            url: mask_password(url),
            reason: format!(
                "unknown scheme {scheme:?}; known: sqlite, memory, mongodb, postgres, mysql, redis, redis+sentinel, etcd"
            ),
        }),
    }
}

// Unused only when every store is compiled in.
#[cfg(not(all(
    feature = "sqlite",
    feature = "mongodb",
    feature = "postgres",
    feature = "mysql",
    feature = "redis",
    feature = "etcd"
)))]
fn disabled(scheme: &str, feature: &'static str) -> Error {
    Error::FeatureDisabled {
        scheme: scheme.to_owned(),
        feature,
    }
}

/// The value of a boolean URL option `?key=value`: `true` or `false`, nothing else, so that a
/// typo never quietly turns a safety check off (or on).
#[cfg_attr(not(any(feature = "sqlite", feature = "etcd")), allow(dead_code))]
pub(crate) fn flag(url: &str, key: &str, value: &str) -> Result<bool> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::InvalidUrl {
            url: mask_password(url),
            reason: format!("?{key}={value} must be true or false"),
        }),
    }
}

/// Longest name in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Checks that `name` is 1..=255 bytes of UTF-8 without control characters.
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_LEN {
        "it is longer than 255 bytes"
    } else if name.chars().any(char::is_control) {
        "it contains a control character"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: truncate(name, 64),
        reason,
    })
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

mod rfc3339 {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*time))
    }
}

mod rfc3339_opt {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(
        time: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => super::rfc3339::serialize(time, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("nightly").is_ok());
        assert!(validate_name("ü/%*' \"x").is_ok());
        assert!(validate_name(&"a".repeat(255)).is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"a".repeat(256)).is_err());
        assert!(validate_name("a\nb").is_err());
    }

    #[tokio::test]
    async fn unknown_and_missing_schemes_are_refused() {
        let err = connect("bogus://x").await.unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{err}");
        let err = connect("/tmp/x.db").await.unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{err}");
        for libpq in [
            "host=db user=u password=secret dbname=x",
            "host=db password=se:cret",
        ] {
            let err = connect(libpq).await.unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{err}");
            assert!(!err.to_string().contains("secret"), "{err}");
            assert!(!err.to_string().contains("cret"), "{err}");
        }
    }
}
