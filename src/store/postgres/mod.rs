//! `postgres://` and `postgresql://` — leases in a PostgreSQL table (feature `postgres`).
//!
//! One row per name holds the fencing counter, the holder and `expires_at`, all times by the
//! server's `now()`, and the name's last run that ended (`run_*`: its token, holder, start, end
//! and outcome). Release marks the row free (`holder_id IS NULL`) instead of deleting it, so
//! the counter and the last run survive. Every operation is ONE prepared statement in
//! autocommit mode, so it works through a transaction-mode pooler; nothing is session-bound
//! (no advisory locks).
//!
//! Acquire is one statement that locks the name's row (`SELECT … FOR UPDATE`, which in READ
//! COMMITTED returns the newest committed version), takes it over if it is free or expired, or
//! inserts it if it does not exist, and returns both the new lease and the row as it was: the
//! holder on a conflict, or the expired lease that was taken over, whose run it records as
//! unknown unless it was finished already. The common cases are decided first by plain
//! statements that lock nothing: an `UPDATE` that takes a released row, else a read that
//! reports a live lease. Finish is one `UPDATE`, owner-checked, that records the run and gives
//! the lease back or keeps it to the hold's end; or, when the lease was taken over or
//! force-released meanwhile but the run on record is still ours, sets its outcome. A finish
//! without a hold tries a plainer owner-checked `UPDATE` first, which writes the row the same
//! way with no conditions; only when that finds the lease not ours does the general one run.
//! See docs/postgres.md.
//!
//! Tables of the previous version, without the `run_*` columns, get them at connect.
//!
//! TLS follows libpq's `sslmode` and its files (`postgres/tls.rs`). A URL with several hosts
//! (a primary and its standbys) is connected to the first that takes a read-write session, all
//! tried at once (`postgres/servers.rs`).

mod doctor;
mod servers;
mod statements;
mod tls;

use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Row};

use self::servers::Servers;
use self::statements::Statements;
use super::reconnect::{self, Lent, Reconnecting};
use super::sql::{self, SqlUrl};
use super::{Acquire, Finish, Freed, Heard, Holder, LastRun, Lease, Released, Store};
use crate::error::{Error, Result};

/// Connections kept at most; each operation holds one for one round trip.
const POOL_SIZE: usize = 16;

/// How long a waiter's row in the waiters table asks releases to notify; renewed every third of
/// it while the waiter listens. A waiter that died leaves releases notifying for at most this.
const WAIT_REGISTRATION: Duration = Duration::from_secs(600);

/// How often acquire re-runs its statement when it could not decide (two first-ever inserts of
/// one name at once, or a serialization failure under a stricter default isolation level).
const ACQUIRE_ATTEMPTS: usize = 5;

/// The PostgreSQL store: a connection pool and the prepared statements of its table.
pub struct PostgresStore {
    url: SqlUrl,
    /// Replaced by a new pool once a request was abandoned (see `reconnect`).
    pool: Reconnecting<Pool>,
    sql: Statements,
    /// For the pools' connections and the connection each waiter listens on; the TLS
    /// connector in it is made once, with the TLS files read at connect.
    servers: Servers,
    tls: tls::Settings,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url.masked)
            .field("table", &self.url.table)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the server named by a `postgres://` or `postgresql://` URL, creates the table
    /// (`?table=`, default `singleton_locks`) if missing and prepares the statements. Connecting
    /// gives up after `?connect_timeout=` (default 5 s). TLS is libpq's `?sslmode=` (default
    /// `prefer`), `?sslrootcert=`, `?sslcert=` and `?sslkey=`.
    pub async fn connect(url: &str) -> Result<Self> {
        let mut url = SqlUrl::parse(url)?;
        let tls = tls::Settings::take(&mut url)?;
        // The kernel ends dead connections that no request waits on (see `reconnect`), unless
        // the URL says otherwise; the driver takes seconds.
        let secs = |duration: Duration| duration.as_secs().to_string();
        let (idle, interval) = (
            secs(reconnect::KEEPALIVE_IDLE),
            secs(reconnect::KEEPALIVE_INTERVAL),
        );
        let (retries, user_timeout) = (
            reconnect::KEEPALIVE_RETRIES.to_string(),
            secs(reconnect::TCP_USER_TIMEOUT),
        );
        let driver_url = url.driver_url(&[
            ("keepalives_idle", &idle),
            ("keepalives_interval", &interval),
            ("keepalives_retries", &retries),
            ("tcp_user_timeout", &user_timeout),
        ]);
        // Several hosts, several configurations: the driver alone would try them in turn.
        let one_by_one = ["host", "hostaddr", "port"]
            .iter()
            .any(|key| url.has_driver_param(key));
        let urls = if one_by_one {
            vec![driver_url]
        } else {
            servers::per_host(&driver_url)
        };
        let mut configs = Vec::with_capacity(urls.len());
        for driver_url in &urls {
            let mut config: tokio_postgres::Config =
                driver_url.parse().map_err(|e| Error::InvalidUrl {
                    url: url.masked.clone(),
                    reason: sql::OneLine::of(&e).to_string(),
                })?;
            config.connect_timeout(url.connect_timeout);
            config.ssl_mode(tls.ssl_mode());
            configs.push(config);
        }
        let servers = Servers::new(
            configs,
            url.has_driver_param("target_session_attrs"),
            tls.connector(&url)?,
        );
        let pool = new_pool(&url, &servers)?;
        let sql = Statements::new(&url.table, &url.scratch_table(), &url.waiters_table());
        let store = PostgresStore {
            url,
            pool: Reconnecting::new(pool),
            sql,
            servers,
            tls,
        };
        // Creating the tables and preparing the statements may wait on another session's
        // locks: bounded, as the connection itself is.
        tokio::time::timeout(store.url.connect_timeout, store.set_up())
            .await
            .map_err(|_| store.url.connect_timed_out("connect"))??;
        Ok(store)
    }

    async fn set_up(&self) -> Result<()> {
        let (pool, client) = self.client("connect").await?;
        // CREATE TABLE IF NOT EXISTS is not safe against itself: two sessions creating the
        // same new table can fail with a duplicate; the loser finds the table on retry.
        let mut attempts = 0;
        while let Err(err) = client.batch_execute(&self.sql.create).await {
            attempts += 1;
            let duplicate = matches!(
                err.code(),
                Some(
                    &SqlState::UNIQUE_VIOLATION
                        | &SqlState::DUPLICATE_TABLE
                        // "type … already exists": the table's row type, made by the other.
                        | &SqlState::DUPLICATE_OBJECT
                        // A column of the last run, added by another session at once.
                        | &SqlState::DUPLICATE_COLUMN
                        | &SqlState::T_R_DEADLOCK_DETECTED
                )
            );
            if !duplicate || attempts >= 5 {
                return Err(self.error("create table", err));
            }
        }
        for statement in self.sql.all() {
            client
                .prepare_cached(statement)
                .await
                .map_err(|e| self.error("prepare", e))?;
        }
        pool.answered();
        Ok(())
    }

    /// A pooled connection for one request, and the pool it comes from, lent until the request
    /// says it was answered; a new connection is made within the connect timeout.
    async fn client(&self, operation: &'static str) -> Result<(Lent<'_, Pool>, Object)> {
        let pool = self
            .pool
            .lend(|| std::future::ready(new_pool(&self.url, &self.servers)))
            .await?;
        let client = pool.get().await.map_err(|err| match err {
            PoolError::Timeout(_) => self.url.connect_timed_out(operation),
            PoolError::Backend(err) => self.error(operation, err),
            other => self.url.error(operation, other),
        })?;
        Ok((pool, client))
    }

    /// The driver's `err` as ours: [`Error::Refused`] when the server refused our credentials
    /// or our access, or TLS failed (one line saying why), else [`Error::Store`].
    fn error(&self, operation: &'static str, err: tokio_postgres::Error) -> Error {
        if let Some(cause) = self.tls.explain(&err) {
            return Error::refused(&self.url.masked, operation, cause);
        }
        let refused = matches!(
            err.code(),
            Some(
                &SqlState::INVALID_PASSWORD
                    | &SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                    | &SqlState::INSUFFICIENT_PRIVILEGE
            )
        );
        if refused {
            self.url.refused(operation, err)
        } else {
            self.url.error(operation, err)
        }
    }

    /// Runs one prepared statement and returns its rows.
    async fn query(
        &self,
        operation: &'static str,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, QueryError> {
        let (pool, client) = self.client(operation).await.map_err(QueryError::Other)?;
        let rows = match client.prepare_cached(statement).await {
            Ok(statement) => client.query(&statement, params).await,
            Err(err) => Err(err),
        };
        pool.answered();
        rows.map_err(QueryError::Driver)
    }

    async fn rows(
        &self,
        operation: &'static str,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        self.query(operation, statement, params)
            .await
            .map_err(|e| e.into_error(self, operation))
    }

    /// Runs one prepared statement and returns the number of rows it changed.
    async fn execute(
        &self,
        operation: &'static str,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        let (pool, client) = self.client(operation).await?;
        let changed = match client.prepare_cached(statement).await {
            Ok(statement) => client.execute(&statement, params).await,
            Err(err) => Err(err),
        };
        pool.answered();
        changed.map_err(|e| self.error(operation, e))
    }

    /// Runs `statement`, which tells waiters; if the server refuses the notification (its
    /// queue is full, say), the whole statement failed and so changed nothing, and `quietly`,
    /// the same without the notification, runs instead.
    async fn telling_waiters(
        &self,
        operation: &'static str,
        statement: &str,
        quietly: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        match self.query(operation, statement, params).await {
            Ok(rows) => Ok(rows),
            Err(QueryError::Driver(err)) if err.as_db_error().is_some() => {
                self.rows(operation, quietly, params).await
            }
            Err(err) => Err(err.into_error(self, operation)),
        }
    }

    /// Runs an acquire statement, which tells waiters if it takes the name; if the server
    /// refuses the notification (or the waiters table is gone), the whole statement failed,
    /// and the second one, the same without the notification, runs instead. A failure that
    /// acquire tries again is returned as it is.
    async fn acquiring(
        &self,
        (telling, quietly): (&str, &str),
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, QueryError> {
        match self.query("acquire", telling, params).await {
            Err(err @ QueryError::Driver(_)) if err.is_retryable() => Err(err),
            Err(QueryError::Driver(err)) if err.as_db_error().is_some() => {
                self.query("acquire", quietly, params).await
            }
            other => other,
        }
    }

    /// The live lease on `name`, if any; errors name `operation`.
    async fn live_lease(&self, operation: &'static str, name: &str) -> Result<Option<Lease>> {
        let rows = self.rows(operation, &self.sql.inspect, &[&name]).await?;
        match rows.first() {
            Some(row) => lease_at(name, row, 0).map_err(|e| self.read_error(operation, e)),
            None => Ok(None),
        }
    }

    fn read_error(&self, operation: &'static str, err: tokio_postgres::Error) -> Error {
        self.url.error(operation, err)
    }

    /// The last run in a row of the last-run statements: token, holder id, host, pid, label,
    /// started, ended, outcome, name.
    fn run_of(&self, row: &Row, operation: &'static str) -> Result<LastRun> {
        let read = |e| self.read_error(operation, e);
        let name: String = row.try_get(8).map_err(read)?;
        let outcome: String = row.try_get(7).map_err(read)?;
        let outcome = outcome.parse().map_err(|e| {
            Error::store(
                &self.url.masked,
                operation,
                format!("the last run of {name:?}: {e}"),
            )
        })?;
        Ok(LastRun {
            holder: Holder {
                id: row.try_get(1).map_err(read)?,
                host: row.try_get(2).map_err(read)?,
                pid: sql::pid(row.try_get::<_, i64>(3).map_err(read)?),
                label: row.try_get(4).map_err(read)?,
            },
            token: sql::token(row.try_get::<_, i64>(0).map_err(read)?),
            started: row.try_get(5).map_err(read)?,
            ended: row.try_get(6).map_err(read)?,
            outcome,
            name,
        })
    }
}

/// A pool of connections to the first of `servers` that takes them.
fn new_pool(url: &SqlUrl, servers: &Servers) -> Result<Pool> {
    let manager = Manager::from_connect(servers.first(), servers.clone(), ManagerConfig::default());
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        // Bounds the whole of connecting and authenticating, which the driver's own
        // connect_timeout (TCP only) does not.
        .create_timeout(Some(url.connect_timeout))
        .build()
        .map_err(|e| url.error("connect", e))
}

/// What a notification on the table's channel says of the name `ours` (see `Statements`):
/// the name alone, that it may have been freed; the name, `taken` and the new lease's expiry
/// in microseconds (empty: none), tab-separated, that an acquire just took it. `None`: of
/// another name.
fn word_of(payload: &str, ours: &str) -> Option<Heard> {
    let rest = payload.strip_prefix(ours)?;
    if rest.is_empty() {
        return Some(Heard::Freed);
    }
    let expires = rest.strip_prefix("\ttaken\t")?;
    Some(Heard::Taken {
        expires: expires
            .parse::<u64>()
            .ok()
            .map(|us| SystemTime::UNIX_EPOCH + Duration::from_micros(us)),
    })
}

/// A failed statement: the driver's error (which acquire may retry) or one already mapped.
enum QueryError {
    Driver(tokio_postgres::Error),
    Other(Error),
}

impl QueryError {
    fn into_error(self, store: &PostgresStore, operation: &'static str) -> Error {
        match self {
            QueryError::Driver(err) => store.error(operation, err),
            QueryError::Other(err) => err,
        }
    }

    /// Whether running the statement again may succeed: the transaction lost a race that a
    /// stricter isolation level than READ COMMITTED turns into an error.
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            QueryError::Driver(err) if matches!(
                err.code(),
                Some(&SqlState::T_R_SERIALIZATION_FAILURE | &SqlState::T_R_DEADLOCK_DETECTED)
            )
        )
    }
}

/// The lease an acquire statement made for `holder`, from its first three columns (token,
/// created, expires_at), if it made one.
fn new_lease(
    name: &str,
    holder: &Holder,
    row: &Row,
) -> Result<Option<Lease>, tokio_postgres::Error> {
    let Some(token) = row.try_get::<_, Option<i64>>(0)? else {
        return Ok(None);
    };
    Ok(Some(Lease {
        name: name.to_owned(),
        holder: holder.clone(),
        token: sql::token(token),
        created: row.try_get(1)?,
        expires: row.try_get(2)?,
    }))
}

/// The lease in the seven lease columns starting at `at`, if somebody holds the row.
fn lease_at(name: &str, row: &Row, at: usize) -> Result<Option<Lease>, tokio_postgres::Error> {
    let Some(id) = row.try_get::<_, Option<String>>(at + 1)? else {
        return Ok(None);
    };
    Ok(Some(Lease {
        name: name.to_owned(),
        holder: Holder {
            id,
            host: row.try_get(at + 2)?,
            pid: sql::pid(row.try_get::<_, i64>(at + 3)?),
            label: row.try_get(at + 4)?,
        },
        token: sql::token(row.try_get::<_, i64>(at)?),
        created: row.try_get(at + 5)?,
        expires: row.try_get(at + 6)?,
    }))
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    fn describe(&self) -> &str {
        &self.url.masked
    }

    // expires_at is the server's now() plus the TTL.
    fn expiry_on_store_clock(&self) -> bool {
        true
    }

    async fn acquire(&self, name: &str, holder: &Holder, ttl: Option<Duration>) -> Result<Acquire> {
        super::validate_name(name)?;
        let ttl_us = ttl
            .map(sql::micros)
            .transpose()
            .map_err(|e| Error::store(&self.url.masked, "acquire", e))?;
        let pid = i64::from(holder.pid);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &name,
            &holder.id,
            &holder.host,
            &pid,
            &holder.label,
            &ttl_us,
        ];
        // The common cases first, each one plain statement that locks nothing: take a
        // released row, or else report a live lease.
        let acquire_free = (&*self.sql.acquire_free, &*self.sql.acquire_free_quietly);
        match self.acquiring(acquire_free, &params).await {
            Ok(rows) => {
                let taken = match rows.first() {
                    Some(row) => {
                        new_lease(name, holder, row).map_err(|e| self.read_error("acquire", e))?
                    }
                    None => None,
                };
                if let Some(lease) = taken {
                    // The row had no holder: there is no expired lease to report.
                    return Ok(Acquire::Acquired {
                        lease,
                        took_over: None,
                    });
                }
                if let Some(held) = self.live_lease("acquire", name).await? {
                    return Ok(Acquire::Held(held));
                }
            }
            Err(err) if err.is_retryable() => {}
            Err(err) => return Err(err.into_error(self, "acquire")),
        }
        // Not decided: the lease expired, the name was never used, or the row changed between
        // the two statements. The locking statement decides.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let acquire = (&*self.sql.acquire, &*self.sql.acquire_quietly);
            let rows = match self.acquiring(acquire, &params).await {
                Err(err) if err.is_retryable() && attempt < ACQUIRE_ATTEMPTS => continue,
                other => other.map_err(|e| e.into_error(self, "acquire"))?,
            };
            let Some(row) = rows.first() else {
                return Err(Error::store(&self.url.masked, "acquire", "no result row"));
            };
            let read = |e| self.read_error("acquire", e);
            let old = lease_at(name, row, 3).map_err(read)?;
            if let Some(lease) = new_lease(name, holder, row).map_err(read)? {
                // A row we took over was free or expired; only an expired one had a holder,
                // and only one whose run was not finished (kept by a hold) is reported.
                let unfinished = row.try_get::<_, Option<bool>>(11).map_err(read)?;
                return Ok(Acquire::Acquired {
                    lease,
                    took_over: old.filter(|_| unfinished == Some(true)),
                });
            }
            let live = row.try_get::<_, Option<bool>>(10).map_err(read)?;
            match old {
                Some(held) if live == Some(true) => return Ok(Acquire::Held(held)),
                // Another session inserted the name's first row after this statement's
                // snapshot; the next run sees it.
                _ if attempt < ACQUIRE_ATTEMPTS => continue,
                _ => {
                    return Err(Error::store(
                        &self.url.masked,
                        "acquire",
                        "the lease row changed under every attempt; try again",
                    ));
                }
            }
        }
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let ttl_us = sql::micros(ttl).map_err(|e| Error::store(&self.url.masked, "renew", e))?;
        let token = i64::try_from(lease.token.0).unwrap_or(i64::MAX);
        let rows = self
            .rows(
                "renew",
                &self.sql.renew,
                &[&lease.name, &lease.holder.id, &token, &ttl_us],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Err(Error::lost(lease, Error::NOT_OURS));
        };
        let expires: Option<SystemTime> =
            row.try_get(0).map_err(|e| self.read_error("renew", e))?;
        Ok(Lease {
            expires,
            ..lease.clone()
        })
    }

    async fn finish(&self, lease: &Lease, finish: &Finish) -> Result<Released> {
        let token = i64::try_from(lease.token.0).unwrap_or(i64::MAX);
        let outcome = finish.outcome.to_string();
        let hold_us = finish
            .hold
            .map(|hold| sql::micros(hold.after_acquisition))
            .transpose()
            .map_err(|e| Error::store(&self.url.masked, "release", e))?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&lease.name, &lease.holder.id, &token, &outcome, &hold_us];
        if hold_us.is_none() {
            let released = self
                .telling_waiters(
                    "release",
                    &self.sql.release,
                    &self.sql.release_quietly,
                    &params[..4],
                )
                .await?;
            if !released.is_empty() {
                return Ok(Released::Released);
            }
        }
        // With a hold, or a lease not ours: `finish` keeps it, or records a late outcome.
        let rows = self
            .telling_waiters(
                "release",
                &self.sql.finish,
                &self.sql.finish_quietly,
                &params,
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(Released::NotHeld);
        };
        let read = |e| self.read_error("release", e);
        let done: &str = row.try_get(0).map_err(read)?;
        Ok(match done {
            "released" => Released::Released,
            "kept" => Released::Kept {
                expires: row.try_get(1).map_err(read)?,
            },
            _ => Released::NotHeld,
        })
    }

    async fn last_run(&self, name: &str) -> Result<Option<LastRun>> {
        let rows = self.rows("last-run", &self.sql.last_run, &[&name]).await?;
        rows.first()
            .map(|row| self.run_of(row, "last-run"))
            .transpose()
    }

    async fn last_runs(&self) -> Result<Vec<LastRun>> {
        let rows = self.rows("last-runs", &self.sql.last_runs, &[]).await?;
        rows.iter()
            .map(|row| self.run_of(row, "last-runs"))
            .collect()
    }

    async fn inspect(&self, name: &str) -> Result<Option<Lease>> {
        self.live_lease("inspect", name).await
    }

    async fn list(&self) -> Result<Vec<Lease>> {
        let rows = self.rows("list", &self.sql.list, &[]).await?;
        let mut leases = Vec::with_capacity(rows.len());
        for row in &rows {
            let read = |e| self.read_error("list", e);
            let name: String = row.try_get(7).map_err(read)?;
            leases.extend(lease_at(&name, row, 0).map_err(read)?);
        }
        Ok(leases)
    }

    async fn force_release(&self, name: &str) -> Result<Option<Lease>> {
        let rows = self
            .telling_waiters(
                "force-release",
                &self.sql.force_release,
                &self.sql.force_release_quietly,
                &[&name],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let read = |e| self.read_error("force-release", e);
        // An expired lease is cleared too, but nobody held it any more: report nothing.
        let live: Option<bool> = row.try_get(7).map_err(read)?;
        if live == Some(true) {
            lease_at(name, row, 0).map_err(read)
        } else {
            Ok(None)
        }
    }

    /// A connection of its own that `LISTEN`s on the table's channel, and a row in the
    /// waiters table that asks release and force-release to notify the name (`pg_notify`, sent
    /// when they commit) for the next 10 minutes, renewed while listening.
    async fn watch(&self, name: &str) -> Result<Option<Freed>> {
        let error = |e| self.error("watch", e);
        let timed_out = |_| self.url.connect_timed_out("watch");
        let connecting = self.servers.connect_first();
        let (client, mut connection) = tokio::time::timeout(self.url.connect_timeout, connecting)
            .await
            .map_err(timed_out)?
            .map_err(error)?;
        let (heard, word) = Freed::channel();
        let listening_for = name.to_owned();
        // Drives the connection, which also carries the statements below, until it drops.
        let listener = Freed::listen(async move {
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let AsyncMessage::Notification(notice) = message {
                    if let Some(word) = word_of(notice.payload(), &listening_for) {
                        heard.tell(word);
                    }
                }
            }
        });
        let listen = format!("LISTEN \"{}\"", self.url.table);
        let registration = sql::micros(WAIT_REGISTRATION)
            .map_err(|e| Error::store(&self.url.masked, "watch", e))?;
        let setting_up = async {
            client.batch_execute(&listen).await?;
            client
                .execute(self.sql.wait.as_str(), &[&name, &registration])
                .await
        };
        tokio::time::timeout(self.url.connect_timeout, setting_up)
            .await
            .map_err(timed_out)?
            .map_err(error)?;
        let client = std::sync::Arc::new(client);
        let renewing = std::sync::Arc::clone(&client);
        let (wait, name) = (self.sql.wait.clone(), name.to_owned());
        // Should a renewal fail, the row runs out and releases stop notifying: waiters poll.
        let renewer = Freed::listen(async move {
            loop {
                tokio::time::sleep(WAIT_REGISTRATION / 3).await;
                if renewing
                    .execute(wait.as_str(), &[&name, &registration])
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Some(Freed::new(word, (listener, client, renewer))))
    }

    async fn doctor(&self) -> Result<Vec<crate::doctor::Check>> {
        self.checks().await
    }

    async fn store_time(&self) -> Result<Option<SystemTime>> {
        self.clock().await.map(Some)
    }

    async fn benchmark_floor(&self, scratch_key: &str) -> Result<()> {
        self.execute(
            "benchmark",
            &self.sql.floor_insert,
            &[&scratch_key, &"holder"],
        )
        .await?;
        self.execute("benchmark", &self.sql.floor_delete, &[&scratch_key])
            .await?;
        Ok(())
    }
}
