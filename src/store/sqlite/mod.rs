//! `sqlite://PATH[?allow_network_fs=true]` — the embedded default store: one SQLite file shared
//! by every process of one host (`sqlite:///abs/path.db` is absolute, `sqlite://rel/path.db`
//! relative to the working directory).
//!
//! The "store clock" here is the host's `CLOCK_MONOTONIC`, which every process on the host shares
//! and which wall-clock steps (NTP, an operator's `date -s`) cannot move. A lease records the
//! kernel's boot id beside its monotonic expiry; a lease written during an earlier boot has
//! expired, since every process that could hold it is gone. The file must live on a local file
//! system: SQLite's locking does not reach other hosts, and neither does this clock, so opening
//! refuses network and shared file systems (see [`filesystem`]) unless the URL says
//! `?allow_network_fs=true`.
//!
//! Every operation is one `BEGIN IMMEDIATE … COMMIT` transaction, so it takes SQLite's write lock
//! before it reads the clock and the row, and its outcome is known only once the COMMIT succeeded.
//! The connection is used from tokio's blocking pool, never on an async worker.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

mod doctor;
mod filesystem;

use super::{
    Acquire, FencingToken, Finish, Freed, Holder, LastRun, Lease, Outcome, Refusals, Released,
    Store,
};
use crate::error::{BoxError, Error, Result};

/// How long an operation waits for another process's write transaction before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Pages the WAL may grow by before a commit copies it into the database (SQLite's default
/// is 1000): see `try_open_connection`.
const WAL_AUTOCHECKPOINT: i64 = 64;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS singleton_leases (
    name            TEXT PRIMARY KEY,   -- default BINARY collation: compared byte for byte
    last_token      INTEGER NOT NULL,   -- the fencing counter; survives release and expiry
    holder_id       TEXT,               -- NULL while nobody holds the name
    host            TEXT NOT NULL,
    pid             INTEGER NOT NULL,
    label           TEXT NOT NULL,
    created_unix_ms INTEGER NOT NULL,   -- wall clock, for display only
    boot_id         TEXT NOT NULL,      -- the boot during which expires_mono_us was taken
    expires_mono_us INTEGER,            -- CLOCK_MONOTONIC deadline; NULL: never expires
    -- The last ended run (NULL until one ended): its holder, token, times and outcome.
    run_holder_id   TEXT,
    run_host        TEXT,
    run_pid         INTEGER,
    run_label       TEXT,
    run_token       INTEGER,
    run_started_unix_ms INTEGER,
    run_ended_unix_ms   INTEGER,        -- NULL: unknown (the holder died)
    run_outcome     TEXT                -- 'exit 3', 'signal 9', 'lost', 'unknown', 'released'
)";

/// The columns of the last run, added to a table made before they existed.
const RUN_COLUMNS: [(&str, &str); 8] = [
    ("run_holder_id", "TEXT"),
    ("run_host", "TEXT"),
    ("run_pid", "INTEGER"),
    ("run_label", "TEXT"),
    ("run_token", "INTEGER"),
    ("run_started_unix_ms", "INTEGER"),
    ("run_ended_unix_ms", "INTEGER"),
    ("run_outcome", "TEXT"),
];

/// The columns [`Row::from_sql`] reads, in its order.
macro_rules! row_columns {
    () => {
        "last_token, holder_id, host, pid, label, created_unix_ms, boot_id, expires_mono_us,
         run_holder_id, run_host, run_pid, run_label, run_token, run_started_unix_ms,
         run_ended_unix_ms, run_outcome"
    };
}

const SELECT_ROW: &str = concat!(
    "SELECT ",
    row_columns!(),
    " FROM singleton_leases WHERE name = ?1"
);

/// Copies the row's lease into its last run, with outcome ?2 and end ?3 (unix ms or NULL).
const RECORD_RUN: &str = "UPDATE singleton_leases SET
         run_holder_id = holder_id, run_host = host, run_pid = pid, run_label = label,
         run_token = last_token, run_started_unix_ms = created_unix_ms, run_ended_unix_ms = ?3,
         run_outcome = ?2
     WHERE name = ?1";

/// The SQLite store. Cheap to share: one connection, used by one operation at a time.
#[derive(Debug)]
pub struct SqliteStore {
    url: String,
    /// The database file; its write-ahead log is this plus `-wal`.
    path: PathBuf,
    clock: HostClock,
    conn: Arc<Mutex<Db>>,
    /// Whether `benchmark_floor`'s scratch table exists.
    scratch_ready: AtomicBool,
    /// Whether the URL accepted a file system that other hosts can share.
    allow_network_fs: bool,
}

impl SqliteStore {
    /// Opens (creating if needed) the store named by a `sqlite://PATH[?allow_network_fs=true]`
    /// URL. A `?` always starts the query, so a file name that contains one cannot be named.
    pub async fn open_url(url: &str) -> Result<Self> {
        Self::open_url_as(url, Refusals::Refuse).await
    }

    /// [`open_url`](Self::open_url); with [`Refusals::Report`], a file system that other hosts
    /// can share is opened anyway, for `doctor` to report.
    pub(crate) async fn open_url_as(url: &str, refusals: Refusals) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: super::mask_password(url),
            reason,
        };
        let rest = url.split_once("://").map_or("", |(_, rest)| rest);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(invalid(
                "expected sqlite:///absolute/path.db or sqlite://relative/path.db".into(),
            ));
        }
        let mut allow_network_fs = false;
        for option in query.split('&').filter(|option| !option.is_empty()) {
            match option.split_once('=').unwrap_or((option, "")) {
                ("allow_network_fs", value) => {
                    allow_network_fs = super::flag(url, "allow_network_fs", value)?;
                }
                (key, _) => {
                    return Err(invalid(format!(
                        "unknown option ?{key}; known: allow_network_fs (a `?` starts the options: a file name cannot contain one)"
                    )));
                }
            }
        }
        let mut store = Self::open_checked(
            Path::new(path),
            allow_network_fs || refusals == Refusals::Report,
        )
        .await?;
        store.allow_network_fs = allow_network_fs;
        Ok(store)
    }

    /// Opens (creating if needed) the store in the SQLite file at `path`. The directory must
    /// exist, on a file system of this host: network and shared file systems are refused
    /// ([`Error::InvalidUrl`]).
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_checked(path, false).await
    }

    /// [`open`](Self::open), which skips the file system check if `allow_network_fs`.
    async fn open_checked(path: &Path, allow_network_fs: bool) -> Result<Self> {
        let url = format!("sqlite://{}", path.display());
        let clock = HostClock::new().map_err(|e| Error::store(&url, "connect", e))?;
        let path = path.to_path_buf();
        let opening = path.clone();
        // On the blocking pool like every call: statfs(2) on a dead NFS server blocks too.
        let conn = tokio::task::spawn_blocking(move || {
            if !allow_network_fs {
                refuse_shared_file_system(&opening)?;
            }
            open_connection(&opening).map_err(Refused::Failed)
        })
        .await
        .map_err(|e| Error::store(&url, "connect", e))?
        .map_err(|refused| match refused {
            Refused::SharedFileSystem(reason) => Error::InvalidUrl {
                url: url.clone(),
                reason,
            },
            Refused::Failed(e) => Error::store(&url, "connect", e),
        })?;
        Ok(SqliteStore {
            url,
            path,
            clock,
            conn: Arc::new(Mutex::new(Db { conn, synced: true })),
            scratch_ready: AtomicBool::new(false),
            allow_network_fs,
        })
    }

    /// Runs `op` on the connection in tokio's blocking pool; its commits are fsynced.
    async fn with_conn<T: Send + 'static>(
        &self,
        operation: &'static str,
        op: impl FnOnce(&mut Connection, &HostClock) -> Result<T, BoxError> + Send + 'static,
    ) -> Result<T> {
        self.with_conn_synced(operation, true, op).await
    }

    /// Runs `op` on the connection in tokio's blocking pool, with its commits fsynced
    /// (`synchronous=FULL`) or not (`NORMAL`: only for a release, see [`Store::release`]).
    async fn with_conn_synced<T: Send + 'static>(
        &self,
        operation: &'static str,
        synced: bool,
        op: impl FnOnce(&mut Connection, &HostClock) -> Result<T, BoxError> + Send + 'static,
    ) -> Result<T> {
        let conn = Arc::clone(&self.conn);
        let clock = self.clock.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Switched only when needed: a `singleton run` ends on its release and never pays
            // for switching back. If the switch fails, so does the operation.
            if db.synced != synced {
                let level = if synced { "FULL" } else { "NORMAL" };
                db.conn.pragma_update(None, "synchronous", level)?;
                db.synced = synced;
            }
            op(&mut db.conn, &clock)
        })
        .await
        .map_err(|e| Error::store(&self.url, operation, e))?
        .map_err(|e| Error::store(&self.url, operation, e))
    }
}

/// An inotify instance, for tokio's [`AsyncFd`].
struct Watching(Inotify);

impl std::os::fd::AsRawFd for Watching {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// The connection, and whether its commits are fsynced (`synchronous=FULL`) right now.
#[derive(Debug)]
struct Db {
    conn: Connection,
    synced: bool,
}

/// Why opening failed: the file system is refused, or opening the file failed.
enum Refused {
    SharedFileSystem(String),
    Failed(BoxError),
}

/// Refuses a database on a file system that other hosts can share; see [`filesystem`].
fn refuse_shared_file_system(path: &Path) -> Result<(), Refused> {
    let shown = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let kind = filesystem::shared_kind(path).map_err(|e| {
        Refused::Failed(
            format!(
                "cannot tell which file system holds {}: {e}",
                shown.display()
            )
            .into(),
        )
    })?;
    match kind {
        None => Ok(()),
        Some(kind) => Err(Refused::SharedFileSystem(format!(
            "{} is on {kind}, a file system that other hosts can share: SQLite's locks and this host's clock do not reach other hosts, so two hosts could both hold a lease; use a network store (postgres://, mysql://, redis://, etcd://, mongodb://) or a file on a local disk, or add ?allow_network_fs=true if no other host ever opens this file",
            shown.display()
        ))),
    }
}

fn open_connection(path: &PathBuf) -> Result<Connection, BoxError> {
    // Setting up a new file takes locks for which SQLite does not call the busy handler (the
    // switch to WAL, WAL recovery), so several processes opening one new file at once can get
    // SQLITE_BUSY at once: retry those within the busy timeout.
    let started = std::time::Instant::now();
    loop {
        match try_open_connection(path) {
            Err(OpenError::Sql(err)) if is_busy(&err) && started.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(5 + fastrand::u64(0..20)));
            }
            Err(OpenError::Sql(err)) => return Err(err.into()),
            Err(OpenError::NotWal(mode)) => {
                return Err(format!(
                    "the database refused WAL mode (got {mode:?}); is it on a network file system?"
                )
                .into());
            }
            Ok(conn) => return Ok(conn),
        }
    }
}

enum OpenError {
    Sql(rusqlite::Error),
    NotWal(String),
}

impl From<rusqlite::Error> for OpenError {
    fn from(err: rusqlite::Error) -> Self {
        OpenError::Sql(err)
    }
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn try_open_connection(path: &PathBuf) -> Result<Connection, OpenError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets readers run beside the one writer; the mode is stored in the file, so only the
    // first opener switches it. FULL makes every committed token durable across a power cut,
    // so a token is never issued twice.
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::NotWal(mode));
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    // The lease table is tiny; SQLite's default 2 MB page cache would be most of a
    // supervisor's memory.
    conn.pragma_update(None, "cache_size", -128)?;
    // A short-lived process (`singleton run -- job`) would otherwise checkpoint the WAL into the
    // database and delete it at every exit, only for the next one to create it again: two
    // extra fsyncs and a file creation per run. Committed data is in the WAL either way, and
    // SQLite's automatic checkpoints keep it small.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    conn.file_control(
        Some(rusqlite::MAIN_DB),
        rusqlite::FileControl::PersistWal(&mut 1),
    )?;
    // But the first connection of a process rebuilds the WAL's index by reading and checksumming
    // every frame written since the last checkpoint: with SQLite's default of 1000 pages, up to
    // 4 MB and several milliseconds per `singleton run`. Each run appends two pages, so a
    // checkpoint every WAL_AUTOCHECKPOINT pages (three fsyncs, once per 32 runs) costs far less.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)?;
    conn.execute_batch(SCHEMA)?;
    add_run_columns(&mut conn)?;
    // Fail now, not at the first acquire, if an existing table has another shape.
    conn.prepare_cached(SELECT_ROW)?;
    Ok(conn)
}

/// Adds the last run's columns to a table made by a version before them, once: in a write
/// transaction that looks again, so that processes opening the file at once add them once.
fn add_run_columns(conn: &mut Connection) -> rusqlite::Result<()> {
    let missing = |conn: &Connection| -> rusqlite::Result<Vec<&'static str>> {
        let mut present = conn.prepare("SELECT name FROM pragma_table_info('singleton_leases')")?;
        let present = present
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(RUN_COLUMNS
            .iter()
            .filter(|(column, _)| !present.iter().any(|p| p == column))
            .map(|(column, _)| *column)
            .collect())
    };
    if missing(conn)?.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for column in missing(&tx)? {
        let kind = RUN_COLUMNS
            .iter()
            .find(|(name, _)| *name == column)
            .map_or("TEXT", |(_, kind)| *kind);
        tx.execute_batch(&format!(
            "ALTER TABLE singleton_leases ADD COLUMN {column} {kind}"
        ))?;
    }
    tx.commit()
}

/// The host clock this store judges expiry by.
#[derive(Debug, Clone)]
struct HostClock {
    boot_id: Arc<str>,
}

impl HostClock {
    fn new() -> std::io::Result<Self> {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
        Ok(HostClock {
            boot_id: boot_id.trim().into(),
        })
    }

    /// Microseconds of `CLOCK_MONOTONIC`.
    fn now_us(&self) -> i64 {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .expect("CLOCK_MONOTONIC is always available on Linux");
        now.tv_sec() * 1_000_000 + now.tv_nsec() / 1_000
    }
}

/// One row as read from the table.
struct Row {
    last_token: i64,
    holder_id: Option<String>,
    host: String,
    pid: i64,
    label: String,
    created_unix_ms: i64,
    boot_id: String,
    expires_mono_us: Option<i64>,
    run: Option<Run>,
}

/// The last ended run of a row.
struct Run {
    holder: Holder,
    token: i64,
    started_unix_ms: i64,
    ended_unix_ms: Option<i64>,
    outcome: String,
}

impl Row {
    fn read(conn: &Connection, name: &str) -> rusqlite::Result<Option<Row>> {
        conn.prepare_cached(SELECT_ROW)?
            .query_row([name], |r| Row::from_sql(r, 0))
            .optional()
    }

    /// The [`row_columns!`] from column `at` on.
    fn from_sql(r: &rusqlite::Row, at: usize) -> rusqlite::Result<Row> {
        let run = match r.get::<_, Option<String>>(at + 8)? {
            Some(id) => Some(Run {
                holder: Holder {
                    id,
                    host: r.get::<_, Option<String>>(at + 9)?.unwrap_or_default(),
                    pid: u32::try_from(r.get::<_, Option<i64>>(at + 10)?.unwrap_or(0)).unwrap_or(0),
                    label: r.get::<_, Option<String>>(at + 11)?.unwrap_or_default(),
                },
                token: r.get::<_, Option<i64>>(at + 12)?.unwrap_or(0),
                started_unix_ms: r.get::<_, Option<i64>>(at + 13)?.unwrap_or(0),
                ended_unix_ms: r.get(at + 14)?,
                outcome: r.get::<_, Option<String>>(at + 15)?.unwrap_or_default(),
            }),
            None => None,
        };
        Ok(Row {
            last_token: r.get(at)?,
            holder_id: r.get(at + 1)?,
            host: r.get(at + 2)?,
            pid: r.get(at + 3)?,
            label: r.get(at + 4)?,
            created_unix_ms: r.get(at + 5)?,
            boot_id: r.get(at + 6)?,
            expires_mono_us: r.get(at + 7)?,
            run,
        })
    }

    /// Whether the row's lease (live or not) is the last run on record: finished, and kept.
    fn recorded(&self) -> bool {
        self.run.as_ref().is_some_and(|run| {
            run.token == self.last_token && Some(&run.holder.id) == self.holder_id.as_ref()
        })
    }

    /// The row's last run: an expired lease nobody finished or replaced is an unknown run.
    fn last_run(
        &self,
        name: &str,
        clock: &HostClock,
        now_us: i64,
    ) -> Result<Option<LastRun>, BoxError> {
        if self.holder_id.is_some() && !self.is_live(clock, now_us) && !self.recorded() {
            let same_boot = *self.boot_id == *clock.boot_id;
            let lease = self.clone_lease(name, now_us);
            let ended = lease.as_ref().and_then(|l| l.expires).filter(|_| same_boot);
            return Ok(lease.map(|lease| LastRun::of(&lease, ended, Outcome::Unknown)));
        }
        let Some(run) = &self.run else {
            return Ok(None);
        };
        let outcome = run
            .outcome
            .parse::<Outcome>()
            .map_err(|e| format!("the last run of {name:?} has an unreadable outcome: {e}"))?;
        Ok(Some(LastRun {
            name: name.to_owned(),
            holder: run.holder.clone(),
            token: FencingToken(u64::try_from(run.token).unwrap_or(0)),
            started: unix_time(run.started_unix_ms),
            ended: run.ended_unix_ms.map(unix_time),
            outcome,
        }))
    }

    fn clone_lease(&self, name: &str, now_us: i64) -> Option<Lease> {
        Some(Lease {
            name: name.to_owned(),
            holder: Holder {
                id: self.holder_id.clone()?,
                host: self.host.clone(),
                pid: u32::try_from(self.pid).unwrap_or(0),
                label: self.label.clone(),
            },
            token: FencingToken(u64::try_from(self.last_token).unwrap_or(0)),
            created: unix_time(self.created_unix_ms),
            expires: self.expires_mono_us.map(|at| wall_time_of(at, now_us)),
        })
    }

    fn is_live(&self, clock: &HostClock, now_us: i64) -> bool {
        self.holder_id.is_some()
            && *self.boot_id == *clock.boot_id
            && self.expires_mono_us.is_none_or(|at| at > now_us)
    }

    /// The lease this row records, if somebody holds it (live or expired).
    fn lease(self, name: &str, now_us: i64) -> Option<Lease> {
        self.clone_lease(name, now_us)
    }
}

fn unix_time(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Every row that matches `filter` (SQL), with its name, ordered by name.
fn all_rows(conn: &Connection, filter: &str) -> Result<Vec<(String, Row)>, BoxError> {
    let mut stmt = conn.prepare_cached(&format!(
        concat!(
            "SELECT name, ",
            row_columns!(),
            " FROM singleton_leases WHERE {} ORDER BY name"
        ),
        filter
    ))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, Row::from_sql(r, 1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The wall-clock time at which the monotonic clock will read `at_us`, for display.
fn wall_time_of(at_us: i64, now_us: i64) -> SystemTime {
    let now = SystemTime::now();
    let delta = Duration::from_micros(at_us.abs_diff(now_us));
    if at_us >= now_us {
        now + delta
    } else {
        now.checked_sub(delta).unwrap_or(now)
    }
}

fn micros(ttl: Duration) -> Result<i64, BoxError> {
    i64::try_from(ttl.as_micros()).map_err(|_| format!("lease length {ttl:?} is too large").into())
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> &str {
        &self.url
    }

    async fn acquire(&self, name: &str, holder: &Holder, ttl: Option<Duration>) -> Result<Acquire> {
        let name = name.to_owned();
        let holder = holder.clone();
        let ttl_us = ttl
            .map(micros)
            .transpose()
            .map_err(|e| Error::store(&self.url, "acquire", e))?;
        self.with_conn("acquire", move |conn, clock| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now_us = clock.now_us();
            let (last_token, previous) = match Row::read(&tx, &name)? {
                Some(row) => {
                    let live = row.is_live(clock, now_us);
                    let last_token = row.last_token;
                    let unfinished = !row.recorded();
                    let same_boot = *row.boot_id == *clock.boot_id;
                    match row.lease(&name, now_us) {
                        Some(held) if live => {
                            tx.commit()?;
                            return Ok(Acquire::Held(held));
                        }
                        // Kept after its run: it ended as planned.
                        Some(_) if !unfinished => (last_token, None),
                        Some(expired) => {
                            // Its holder died: the run is on record as unknown.
                            let ended = expired.expires.filter(|_| same_boot).map(unix_ms);
                            tx.prepare_cached(RECORD_RUN)?.execute(params![
                                name,
                                Outcome::Unknown.to_string(),
                                ended
                            ])?;
                            (last_token, Some(expired))
                        }
                        None => (last_token, None),
                    }
                }
                None => (0, None),
            };
            let token = last_token + 1;
            let created = SystemTime::now();
            let expires_us = ttl_us.map(|ttl| now_us.saturating_add(ttl));
            tx.prepare_cached(
                "INSERT INTO singleton_leases
                     (name, last_token, holder_id, host, pid, label, created_unix_ms, boot_id, expires_mono_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (name) DO UPDATE SET
                     last_token = excluded.last_token, holder_id = excluded.holder_id,
                     host = excluded.host, pid = excluded.pid, label = excluded.label,
                     created_unix_ms = excluded.created_unix_ms, boot_id = excluded.boot_id,
                     expires_mono_us = excluded.expires_mono_us",
            )?
            .execute(params![
                name,
                token,
                holder.id,
                holder.host,
                holder.pid,
                holder.label,
                unix_ms(created),
                &*clock.boot_id,
                expires_us,
            ])?;
            tx.commit()?;
            let lease = Lease {
                name,
                holder,
                token: FencingToken(u64::try_from(token).unwrap_or(0)),
                created,
                expires: expires_us.map(|at| wall_time_of(at, now_us)),
            };
            Ok(Acquire::Acquired {
                lease,
                took_over: previous,
            })
        })
        .await
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let mut renewed = lease.clone();
        let ttl_us = micros(ttl).map_err(|e| Error::store(&self.url, "renew", e))?;
        let expires = self
            .with_conn("renew", move |conn, clock| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now_us = clock.now_us();
                let expires_us = now_us.saturating_add(ttl_us);
                let changed = tx
                    .prepare_cached(
                        "UPDATE singleton_leases
                         SET expires_mono_us = CASE WHEN expires_mono_us IS NULL THEN NULL ELSE ?1 END
                         WHERE name = ?2 AND holder_id = ?3 AND last_token = ?4 AND boot_id = ?5
                           AND (expires_mono_us IS NULL OR expires_mono_us > ?6)",
                    )?
                    .execute(params![
                        expires_us,
                        renewed.name,
                        renewed.holder.id,
                        renewed.token.0 as i64,
                        &*clock.boot_id,
                        now_us
                    ])?;
                tx.commit()?;
                Ok((changed == 1).then(|| {
                    renewed.expires = renewed.expires.map(|_| wall_time_of(expires_us, now_us));
                    renewed
                }))
            })
            .await?;
        expires.ok_or_else(|| Error::lost(lease, Error::NOT_OURS))
    }

    /// The one commit that is not fsynced (`synchronous=NORMAL`): it reaches the WAL, so every
    /// process sees it at once and it survives a crash of this process, and the next fsynced
    /// commit of any process makes it durable along with its own frames.
    ///
    /// Losing it takes a power cut or an OS crash, hence a reboot. The row it would have freed
    /// (or kept) then names the boot before, so it is expired whatever it says, and its
    /// `last_token` is the acquire's, whose commit was fsynced. A lost finish can therefore
    /// neither keep a name held nor let a fencing token be issued twice (its run then reads as
    /// unknown); it saves an fsync on every `singleton run`.
    ///
    /// A kept lease stays until [`Hold::remaining`](super::Hold) from now on this host's
    /// monotonic clock, which the holder measured from the acquire's answer.
    async fn finish(&self, lease: &Lease, finish: &Finish) -> Result<Released> {
        let lease = lease.clone();
        let finish = *finish;
        self.with_conn_synced("release", false, move |conn, clock| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now_us = clock.now_us();
            let ended = unix_ms(SystemTime::now());
            let outcome = finish.outcome.to_string();
            let row = Row::read(&tx, &lease.name)?;
            let ours = row.as_ref().is_some_and(|row| {
                row.holder_id.as_deref() == Some(lease.holder.id.as_str())
                    && row.last_token == lease.token.0 as i64
            });
            if !ours {
                // A late word of a run that is on record already (taken over, force-released).
                tx.prepare_cached(
                    "UPDATE singleton_leases SET run_outcome = ?2, run_ended_unix_ms = ?3
                     WHERE name = ?1 AND run_holder_id = ?4 AND run_token = ?5",
                )?
                .execute(params![
                    lease.name,
                    outcome,
                    ended,
                    lease.holder.id,
                    lease.token.0 as i64
                ])?;
                tx.commit()?;
                return Ok(Released::NotHeld);
            }
            let live = row.is_some_and(|row| row.is_live(clock, now_us));
            tx.prepare_cached(RECORD_RUN)?
                .execute(params![lease.name, outcome, ended])?;
            let kept = match finish.hold {
                Some(hold) if live && !hold.remaining.is_zero() => {
                    Some(now_us.saturating_add(micros(hold.remaining)?))
                }
                _ => None,
            };
            match kept {
                Some(expires_us) => tx
                    .prepare_cached("UPDATE singleton_leases SET expires_mono_us = ?2 WHERE name = ?1")?
                    .execute(params![lease.name, expires_us])?,
                None => tx
                    .prepare_cached(
                        "UPDATE singleton_leases SET holder_id = NULL, expires_mono_us = NULL WHERE name = ?1",
                    )?
                    .execute([&lease.name])?,
            };
            tx.commit()?;
            Ok(match kept {
                Some(expires_us) => Released::Kept {
                    expires: Some(wall_time_of(expires_us, now_us)),
                },
                None => Released::Released,
            })
        })
        .await
    }

    async fn last_run(&self, name: &str) -> Result<Option<LastRun>> {
        let name = name.to_owned();
        self.with_conn("last run", move |conn, clock| {
            let now_us = clock.now_us();
            match Row::read(conn, &name)? {
                Some(row) => row.last_run(&name, clock, now_us),
                None => Ok(None),
            }
        })
        .await
    }

    async fn last_runs(&self) -> Result<Vec<LastRun>> {
        self.with_conn("last runs", move |conn, clock| {
            let now_us = clock.now_us();
            let mut runs = Vec::new();
            for (name, row) in all_rows(conn, "run_holder_id IS NOT NULL OR holder_id IS NOT NULL")?
            {
                runs.extend(row.last_run(&name, clock, now_us)?);
            }
            Ok(runs)
        })
        .await
    }

    async fn inspect(&self, name: &str) -> Result<Option<Lease>> {
        let name = name.to_owned();
        self.with_conn("inspect", move |conn, clock| {
            let row = Row::read(conn, &name)?;
            let now_us = clock.now_us();
            Ok(row
                .filter(|row| row.is_live(clock, now_us))
                .and_then(|row| row.lease(&name, now_us)))
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Lease>> {
        self.with_conn("list", move |conn, clock| {
            let now_us = clock.now_us();
            let mut leases = Vec::new();
            for (name, row) in all_rows(conn, "holder_id IS NOT NULL")? {
                if row.is_live(clock, now_us) {
                    leases.extend(row.lease(&name, now_us));
                }
            }
            Ok(leases)
        })
        .await
    }

    /// Word of every commit to the database: inotify on its write-ahead log, which every
    /// commit (of any process on this host) appends to. So a waiter also wakes for renewals
    /// and other names' changes, and just tries again; an attempt that finds the name held
    /// commits no change, so waiters never wake each other. The log exists as long as a
    /// connection is open, and this store keeps one.
    async fn watch(&self, name: &str) -> Result<Option<Freed>> {
        let _ = name;
        let error = |e: nix::Error| Error::store(&self.url, "watch", e);
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(error)?;
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        inotify
            .add_watch(Path::new(&wal), AddWatchFlags::IN_MODIFY)
            .map_err(error)?;
        // SAFETY: `Watching` owns the inotify descriptor and always returns that one; it is
        // closed only when the `AsyncFd` drops it.
        let inotify =
            unsafe { AsyncFd::register_with_interest(Watching(inotify), Interest::READABLE) }
                .map_err(|e| Error::store(&self.url, "watch", e.to_string()))?;
        let (heard, word) = Freed::channel();
        let listener = Freed::listen(async move {
            loop {
                let Ok(mut ready) = inotify.readable().await else {
                    return;
                };
                match ready.try_io(|inotify| Ok(inotify.get_ref().0.read_events()?)) {
                    Ok(Ok(events)) => {
                        // The log was deleted or its file system unmounted: nothing more
                        // will come.
                        if events
                            .iter()
                            .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                        {
                            return;
                        }
                        heard.changed();
                    }
                    Ok(Err(_)) => return,
                    Err(_would_block) => {}
                }
            }
        });
        Ok(Some(Freed::new(word, listener)))
    }

    async fn doctor(&self) -> Result<Vec<crate::doctor::Check>> {
        self.checks().await
    }

    async fn benchmark_floor(&self, scratch_key: &str) -> Result<()> {
        if !self.scratch_ready.load(Ordering::Relaxed) {
            self.with_conn("benchmark", |conn, _clock| {
                conn.execute_batch(
                    "CREATE TABLE IF NOT EXISTS singleton_benchmark_scratch (key TEXT PRIMARY KEY, value TEXT)",
                )?;
                Ok(())
            })
            .await?;
            self.scratch_ready.store(true, Ordering::Relaxed);
        }
        // Two write transactions through the blocking pool, as an acquire and a release are,
        // fsynced as they are.
        for (sql, synced) in [
            (
                "INSERT INTO singleton_benchmark_scratch (key, value) VALUES (?1, 'x')",
                true,
            ),
            (
                "DELETE FROM singleton_benchmark_scratch WHERE key = ?1",
                false,
            ),
        ] {
            let key = scratch_key.to_owned();
            self.with_conn_synced("benchmark", synced, move |conn, _clock| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.prepare_cached(sql)?.execute([&key])?;
                tx.commit()?;
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    async fn force_release(&self, name: &str) -> Result<Option<Lease>> {
        let name = name.to_owned();
        self.with_conn("force-release", move |conn, clock| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now_us = clock.now_us();
            let Some(row) = Row::read(&tx, &name)? else {
                return Ok(None);
            };
            let live = row.is_live(clock, now_us);
            if live && !row.recorded() {
                // Its holder has not said how the run went, and may never: unknown until it does.
                tx.prepare_cached(RECORD_RUN)?.execute(params![
                    name,
                    Outcome::Unknown.to_string(),
                    unix_ms(SystemTime::now())
                ])?;
            }
            tx.prepare_cached(
                "UPDATE singleton_leases SET holder_id = NULL, expires_mono_us = NULL WHERE name = ?1",
            )?
            .execute([&name])?;
            tx.commit()?;
            Ok(if live { row.lease(&name, now_us) } else { None })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a release skips the fsync; the operations after it are fsynced again.
    #[tokio::test]
    async fn only_releases_skip_the_fsync() {
        const FULL: i64 = 2;
        const NORMAL: i64 = 1;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("locks.db"))
            .await
            .unwrap();
        let probe = |store: &SqliteStore| {
            let db = store.conn.lock().unwrap();
            (
                db.synced,
                db.conn
                    .query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0)),
            )
        };
        assert_eq!(probe(&store).1.unwrap(), FULL);
        let holder = Holder::current("test");
        let ttl = Some(Duration::from_secs(30));
        let Acquire::Acquired { lease, .. } = store.acquire("n", &holder, ttl).await.unwrap()
        else {
            panic!("n should be free");
        };
        assert_eq!(probe(&store).1.unwrap(), FULL);
        assert_eq!(store.release(&lease).await.unwrap(), Released::Released);
        let (synced, level) = probe(&store);
        assert!(!synced);
        assert_eq!(level.unwrap(), NORMAL);
        let Acquire::Acquired { lease, .. } = store.acquire("n", &holder, ttl).await.unwrap()
        else {
            panic!("n should be free again");
        };
        assert_eq!(lease.token, FencingToken(2));
        assert_eq!(probe(&store).1.unwrap(), FULL);
    }

    #[tokio::test]
    async fn keeps_last_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("locks.db"))
            .await
            .unwrap();
        crate::conformance::Suite::new(Arc::new(store))
            .run_last_run_checks()
            .await;
    }

    /// A file made before the last run was kept: its table gains the columns, and its live
    /// lease stays held and can be finished.
    #[tokio::test]
    async fn a_table_from_before_last_runs_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks.db");
        let holder = Holder::current("old");
        let clock = HostClock::new().unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE singleton_leases (
                    name TEXT PRIMARY KEY, last_token INTEGER NOT NULL, holder_id TEXT,
                    host TEXT NOT NULL, pid INTEGER NOT NULL, label TEXT NOT NULL,
                    created_unix_ms INTEGER NOT NULL, boot_id TEXT NOT NULL, expires_mono_us INTEGER)",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO singleton_leases VALUES ('old', 7, ?1, ?2, ?3, 'old', ?4, ?5, ?6)",
                params![
                    holder.id,
                    holder.host,
                    holder.pid,
                    unix_ms(SystemTime::now()),
                    &*clock.boot_id,
                    clock.now_us() + 60_000_000
                ],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.last_run("old").await.unwrap(), None);
        let Acquire::Held(lease) = store
            .acquire("old", &Holder::current("new"), None)
            .await
            .unwrap()
        else {
            panic!("the old file's lease must still be held");
        };
        assert_eq!(lease.token, FencingToken(7));
        let done = Finish::release(Outcome::Exit(4));
        assert_eq!(
            store.finish(&lease, &done).await.unwrap(),
            Released::Released
        );
        let run = store.last_run("old").await.unwrap().expect("a last run");
        assert_eq!(
            (run.token, run.outcome),
            (FencingToken(7), Outcome::Exit(4))
        );
        // A second process opening the migrated file changes nothing.
        let again = SqliteStore::open(&path).await.unwrap();
        assert_eq!(again.last_run("old").await.unwrap(), Some(run));
    }
}
