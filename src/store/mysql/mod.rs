//! `mysql://` — leases in a MySQL or MariaDB table (feature `mysql`).
//!
//! One row per name holds the fencing counter, the holder and `expires_at`, all times by the
//! server's `UTC_TIMESTAMP(6)`, and the name's last run that ended (`run_*`: its token, holder,
//! end and outcome; the rest in the lease or `prev_*` columns). A row is free for the taking when `expires_at` is past; release
//! sets it to the Unix epoch instead of deleting the row, so the counter and the last run
//! survive. Every operation is one prepared statement in autocommit mode, so it works through
//! a transaction-mode proxy; nothing is session-bound (no `GET_LOCK`).
//!
//! Acquire is one `INSERT … ON DUPLICATE KEY UPDATE` whose assignments each keep the old value
//! unless the row was free, so the server reports 1 affected row for a new row, 2 for a row
//! taken over and 0 when it is held. It hands the new token back in the OK packet through
//! `LAST_INSERT_ID(expr)`, with one bit that says whether the row had an (expired) holder whose
//! run is not on record; it copies the lease it takes over to `prev_*`, where the last run
//! reads it as unknown until a run is recorded.
//! Only a conflict or a take-over of an expired lease costs a second, read-only statement that
//! fetches the holder to report; it never changes the outcome. Finish is one owner-checked
//! `UPDATE` that records the run's end and outcome (its host, pid, label and start stay in the
//! lease columns) and gives the lease back, or, with a hold, keeps it to the hold's end, and
//! says which in the OK packet, through `LAST_INSERT_ID(expr)` too. Only a finish that finds
//! the lease not ours costs a second `UPDATE`, which records the run's end and outcome where
//! it is still ours to record (taken over or force-released meanwhile). See docs/mysql.md.
//!
//! Tables of the previous version, without the `run_*` columns, get them at connect.
//!
//! TLS (`ssl-mode`, `ssl-ca`, `ssl-cert`, `ssl-key`, as the mysql client) is in [`tls`].

mod doctor;
mod statements;
mod tls;

use std::time::{Duration, SystemTime};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Params, Pool, Row, Value};

use super::reconnect::{self, Lent, Reconnecting};
use super::sql::{self, SqlUrl};
use super::{Acquire, Finish, Holder, LastRun, Lease, Released, Store};
use crate::error::{Error, Result};
use statements::Statements;

/// How often acquire tries again when a held lease was released before we could read its
/// holder or InnoDB chose it as a deadlock victim, and how often force-release tries to catch
/// a lease that keeps changing hands. Under many contenders hammering one name both happen
/// often, so the bound is generous; every try is a complete, safe acquisition attempt.
const ATTEMPTS: usize = 50;

/// A random pause before retrying a deadlock victim, so that the contenders that deadlocked do
/// not meet again at once.
fn retry_pause() -> Duration {
    Duration::from_micros(200 + fastrand::u64(0..2_000))
}

/// The server's "Deadlock found when trying to get lock" error.
const ER_LOCK_DEADLOCK: u16 = 1213;

/// The server's "Unknown column" error: a table of the previous version meets a statement
/// that reads the run columns.
const ER_BAD_FIELD_ERROR: u16 = 1054;

/// The server's "Duplicate column name" error: somebody else added the run columns first.
const ER_DUP_FIELDNAME: u16 = 1060;

/// The server's errors that refuse our credentials or our access: access denied for the user
/// (1045), to the database (1044), to a table (1142) or a column (1143), a missing privilege
/// (1227), and a password that must be changed first (1820, 1862).
const REFUSALS: [u16; 7] = [1044, 1045, 1142, 1143, 1227, 1820, 1862];

/// The MySQL/MariaDB store: a connection pool whose connections cache the prepared statements.
pub struct MysqlStore {
    url: SqlUrl,
    /// Replaced by a new pool once a request was abandoned (see `reconnect`), or once its
    /// connections' TLS settings turned out not to fit the server (see [`tls`]).
    pool: Reconnecting<Client>,
    /// The options for the next pool.
    transport: tls::Transport,
    sql: Statements,
}

/// A pool and the options its connections are made with.
#[derive(Clone)]
struct Client {
    pool: Pool,
    opts: Opts,
}

impl Client {
    fn new(opts: Opts) -> Self {
        Client {
            pool: Pool::new(opts.clone()),
            opts,
        }
    }
}

/// How many pools one request may try when a connection's TLS settings did not fit the server
/// (see [`tls`]): the first, and one with what its failure taught.
const TRANSPORT_ATTEMPTS: usize = 2;

impl std::fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlStore")
            .field("url", &self.url.masked)
            .field("table", &self.url.table)
            .finish_non_exhaustive()
    }
}

/// What one statement did, from the OK packet.
struct Outcome {
    affected_rows: u64,
    last_insert_id: Option<u64>,
}

/// Refuses the driver's own duration parameters beyond [`MAX_DURATION`](crate::MAX_DURATION):
/// it adds some to the clock unchecked, so `?abs_conn_ttl=18446744073709551615` would panic at
/// the first connection.
fn check_driver_durations(opts: &Opts) -> std::result::Result<(), String> {
    let pool = opts.pool_opts();
    let durations = [
        ("abs_conn_ttl", pool.abs_conn_ttl()),
        ("abs_conn_ttl_jitter", pool.abs_conn_ttl_jitter()),
        ("conn_ttl", opts.conn_ttl()),
        (
            "inactive_connection_ttl",
            Some(pool.inactive_connection_ttl()),
        ),
        ("ttl_check_interval", Some(pool.ttl_check_interval())),
    ];
    match durations
        .iter()
        .find(|(_, value)| value.is_some_and(|value| value > crate::MAX_DURATION))
    {
        Some((param, _)) => Err(format!("?{param}= must be at most a year")),
        None => Ok(()),
    }
}

/// The lease columns: token, holder id, host, pid, label, created and expiry in µs.
type LeaseRow = (
    u64,
    Option<Vec<u8>>,
    Vec<u8>,
    u64,
    Vec<u8>,
    i64,
    Option<i64>,
);

/// A name and its lease columns, as `list` reads them.
type ListRow = (
    Vec<u8>,
    u64,
    Option<Vec<u8>>,
    Vec<u8>,
    u64,
    Vec<u8>,
    i64,
    Option<i64>,
);

/// The previous holder's columns, as `taken_over` reads them.
type PreviousRow = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<u64>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<i64>,
);

/// A name and its last run, as `last_run` reads them: token, holder id, host, pid, label,
/// started and ended in µs, outcome.
type RunRow = (
    Vec<u8>,
    u64,
    Vec<u8>,
    Vec<u8>,
    u64,
    Vec<u8>,
    i64,
    Option<i64>,
    Vec<u8>,
);

/// Microseconds since the Unix epoch, as the statements read times, as a time.
fn from_unix_micros(micros: i64) -> SystemTime {
    let delta = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        SystemTime::UNIX_EPOCH
            .checked_add(delta)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(delta)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// Named parameters, for a statement that reads some in several places.
fn named<const N: usize>(params: [(&str, Value); N]) -> Params {
    Params::Named(
        params
            .into_iter()
            .map(|(name, value)| (name.as_bytes().to_vec(), value))
            .collect(),
    )
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn lease_of(name: &str, row: LeaseRow) -> Option<Lease> {
    let (token, id, host, pid, label, created, expires) = row;
    Some(Lease {
        name: name.to_owned(),
        holder: Holder {
            id: text(id?),
            host: text(host),
            pid: sql::pid(pid),
            label: text(label),
        },
        token: sql::token(token),
        created: from_unix_micros(created),
        expires: expires.map(from_unix_micros),
    })
}

impl MysqlStore {
    /// Connects to the server named by a `mysql://` URL, creates the table (`?table=`, default
    /// `singleton_locks`) if missing and prepares the statements. Connecting gives up after
    /// `?connect_timeout=` (default 5 s).
    pub async fn connect(url: &str) -> Result<Self> {
        let mut url = SqlUrl::parse(url)?;
        let tls = tls::parse(&mut url).map_err(|reason| Error::InvalidUrl {
            url: url.masked.clone(),
            reason,
        })?;
        // The driver builds its own rustls configuration, with the process's provider.
        crate::store::tls::ensure_provider();
        // Over TCP as the URL says, rather than switching to the server's unix socket when the
        // host is local; keep prepared statements when a connection goes back to the pool; let
        // the kernel end dead connections that no request waits on (see `reconnect`: the
        // driver sets only the idle time, in ms, and leaves the probes to the system).
        let keepalive = reconnect::KEEPALIVE_IDLE.as_millis().to_string();
        let driver_url = url.driver_url(&[
            ("prefer_socket", "false"),
            ("reset_connection", "false"),
            ("tcp_keepalive", &keepalive),
        ]);
        let opts = Opts::from_url(&driver_url).map_err(|e| Error::InvalidUrl {
            url: url.masked.clone(),
            reason: sql::OneLine::of(&e).to_string(),
        })?;
        check_driver_durations(&opts).map_err(|reason| Error::InvalidUrl {
            url: url.masked.clone(),
            reason,
        })?;
        // Affected rows must say 0 for an unchanged row: that is how acquire tells "held".
        let opts: Opts = OptsBuilder::from_opts(opts).client_found_rows(false).into();
        let transport = tls::Transport::new(tls, opts)
            .map_err(|e| Error::refused(&url.masked, "connect", e))?;
        let sql = Statements::new(&url.table, &url.scratch_table());
        let store = MysqlStore {
            url,
            pool: Reconnecting::new(Client::new(transport.opts())),
            transport,
            sql,
        };
        // Creating the tables and preparing the statements may wait on another session's
        // locks: bounded, as the connection itself is.
        tokio::time::timeout(store.url.connect_timeout, store.set_up())
            .await
            .map_err(|_| store.url.connect_timed_out("connect"))??;
        Ok(store)
    }

    async fn set_up(&self) -> Result<()> {
        let (pool, mut conn) = self.conn("connect").await?;
        for create in [&self.sql.create, &self.sql.create_scratch] {
            conn.query_drop(create.as_str())
                .await
                .map_err(|e| self.error("create table", e))?;
        }
        // A table of another shape fails here, before anything is added to it.
        for statement in self.sql.of_the_lease_columns() {
            conn.prep(statement)
                .await
                .map_err(|e| self.error("prepare", e))?;
        }
        let mut added = false;
        for statement in self.sql.of_the_run_columns() {
            match conn.prep(statement).await {
                Ok(_) => {}
                // A table of the previous version, without the run columns: add them, once.
                Err(mysql_async::Error::Server(err))
                    if err.code == ER_BAD_FIELD_ERROR && !added =>
                {
                    added = true;
                    match conn.query_drop(self.sql.add_run_columns.as_str()).await {
                        Ok(()) => {}
                        // Another process added them at the same time.
                        Err(mysql_async::Error::Server(err)) if err.code == ER_DUP_FIELDNAME => {}
                        Err(err) => return Err(self.error("add the last-run columns", err)),
                    }
                    conn.prep(statement)
                        .await
                        .map_err(|e| self.error("prepare", e))?;
                }
                Err(err) => return Err(self.error("prepare", err)),
            }
        }
        pool.answered();
        Ok(())
    }

    /// A pooled connection for one request, and the pool it comes from, lent until the request
    /// says it was answered; a new connection is made within the connect timeout.
    async fn conn(&self, operation: &'static str) -> Result<(Lent<'_, Client>, Conn)> {
        let new_pool = || std::future::ready(Ok::<_, Error>(Client::new(self.transport.opts())));
        let mut attempts = 0;
        loop {
            attempts += 1;
            // A failed attempt gives its pool up (it is never `answered`), so the next one
            // gets a pool with the options its failure taught.
            let client = self.pool.lend(new_pool).await?;
            match tokio::time::timeout(self.url.connect_timeout, client.pool.get_conn()).await {
                Ok(Ok(conn)) => return Ok((client, conn)),
                Ok(Err(err))
                    if attempts < TRANSPORT_ATTEMPTS
                        && self.transport.learn(&client.opts, &err) => {}
                Ok(Err(err)) => return Err(self.error(operation, err)),
                Err(_) => return Err(self.url.connect_timed_out(operation)),
            }
        }
    }

    /// The driver's `err` as ours: [`Error::Refused`] when the server refused our credentials,
    /// our access or our TLS settings, else [`Error::Store`].
    fn error(&self, operation: &'static str, err: mysql_async::Error) -> Error {
        if let Some(cause) = self.transport.explain(&err) {
            return Error::refused(&self.url.masked, operation, cause);
        }
        match &err {
            mysql_async::Error::Server(server) if REFUSALS.contains(&server.code) => {
                self.url.refused(operation, err)
            }
            _ => self.url.error(operation, err),
        }
    }

    /// Runs one prepared statement that returns no rows.
    async fn execute(
        &self,
        operation: &'static str,
        statement: &str,
        params: Params,
    ) -> Result<Outcome> {
        self.try_execute(operation, statement, params)
            .await?
            .map_err(|e| self.error(operation, e))
    }

    /// Like [`Self::execute`], but hands back the server's own error so that the caller can
    /// decide to try again.
    async fn try_execute(
        &self,
        operation: &'static str,
        statement: &str,
        params: Params,
    ) -> Result<Result<Outcome, mysql_async::Error>> {
        let (pool, mut conn) = self.conn(operation).await?;
        let outcome = conn.exec_drop(statement, params).await.map(|()| Outcome {
            affected_rows: conn.affected_rows(),
            last_insert_id: conn.last_insert_id(),
        });
        pool.answered();
        Ok(outcome)
    }

    /// Runs one prepared statement and converts its rows (an unexpected column type is an
    /// error, not a panic).
    async fn rows<T: mysql_async::prelude::FromRow>(
        &self,
        operation: &'static str,
        statement: &str,
        params: Params,
    ) -> Result<Vec<T>> {
        let (pool, mut conn) = self.conn(operation).await?;
        let rows = conn.exec(statement, params).await;
        pool.answered();
        let rows: Vec<Row> = rows.map_err(|e| self.error(operation, e))?;
        rows.into_iter()
            .map(|row| {
                mysql_async::from_row_opt::<T>(row).map_err(|e| self.url.error(operation, e))
            })
            .collect()
    }

    /// The last run in a row of the last-run statements.
    fn run_of(&self, row: RunRow, operation: &'static str) -> Result<LastRun> {
        let (name, token, id, host, pid, label, started, ended, outcome) = row;
        let name = text(name);
        let outcome = text(outcome).parse().map_err(|e| {
            Error::store(
                &self.url.masked,
                operation,
                format!("the last run of {name:?}: {e}"),
            )
        })?;
        Ok(LastRun {
            name,
            holder: Holder {
                id: text(id),
                host: text(host),
                pid: sql::pid(pid),
                label: text(label),
            },
            token: sql::token(token),
            started: from_unix_micros(started),
            ended: ended.map(from_unix_micros),
            outcome,
        })
    }

    /// The lease that an acquire with `token` took over, read after the fact for reporting.
    async fn taken_over(&self, name: &str, token: u64) -> Result<Option<Lease>> {
        let rows: Vec<PreviousRow> = self
            .rows(
                "acquire",
                &self.sql.taken_over,
                Params::Positional(vec![name.into(), token.into()]),
            )
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|(id, host, pid, label, created, expires)| {
                lease_of(
                    name,
                    (
                        token.saturating_sub(1),
                        id,
                        host.unwrap_or_default(),
                        pid.unwrap_or(0),
                        label.unwrap_or_default(),
                        created.unwrap_or(0),
                        expires,
                    ),
                )
            }))
    }
}

#[async_trait::async_trait]
impl Store for MysqlStore {
    fn describe(&self) -> &str {
        &self.url.masked
    }

    async fn acquire(&self, name: &str, holder: &Holder, ttl: Option<Duration>) -> Result<Acquire> {
        super::validate_name(name)?;
        let ttl_us = ttl
            .map(sql::micros)
            .transpose()
            .map_err(|e| Error::store(&self.url.masked, "acquire", e))?;
        let new_values = || -> [Value; 5] {
            [
                holder.id.as_str().into(),
                holder.host.as_str().into(),
                holder.pid.into(),
                holder.label.as_str().into(),
                ttl_us.into(),
            ]
        };
        let mut params = vec![Value::from(name)];
        params.extend(new_values());
        params.extend(new_values());
        for _ in 0..ATTEMPTS {
            // Times as this host sees them: display only (the holder's safety comes from its
            // monotonic deadline); the server's own values are in the table.
            let created = SystemTime::now();
            let outcome = match self
                .try_execute(
                    "acquire",
                    &self.sql.acquire,
                    Params::Positional(params.clone()),
                )
                .await?
            {
                Ok(outcome) => outcome,
                // InnoDB may pick concurrent upserts of one new name as deadlock victims; the
                // victim's statement changed nothing, so running it again is safe.
                Err(mysql_async::Error::Server(err)) if err.code == ER_LOCK_DEADLOCK => {
                    tokio::time::sleep(retry_pause()).await;
                    continue;
                }
                Err(err) => return Err(self.error("acquire", err)),
            };
            let lease = |token| Lease {
                name: name.to_owned(),
                holder: holder.clone(),
                token: sql::token(token),
                created,
                expires: ttl.and_then(|ttl| created.checked_add(ttl)),
            };
            match (outcome.affected_rows, outcome.last_insert_id) {
                (1, _) => {
                    return Ok(Acquire::Acquired {
                        lease: lease(1u64),
                        took_over: None,
                    });
                }
                (2, Some(packed)) => {
                    let token = packed / 2;
                    let had_holder = packed % 2 == 1;
                    let took_over = if had_holder {
                        self.taken_over(name, token).await?
                    } else {
                        None
                    };
                    return Ok(Acquire::Acquired {
                        lease: lease(token),
                        took_over,
                    });
                }
                (0, _) => {
                    // Held when the statement ran. The holder is read separately, for the
                    // report only; if it let go meanwhile, try again.
                    if let Some(held) = self.inspect(name).await? {
                        return Ok(Acquire::Held(held));
                    }
                }
                (rows, id) => {
                    return Err(Error::store(
                        &self.url.masked,
                        "acquire",
                        format!(
                            "unexpected answer from the server: {rows} affected rows, insert id {id:?}"
                        ),
                    ));
                }
            }
        }
        Err(Error::store(
            &self.url.masked,
            "acquire",
            "the lease changed hands under every attempt; try again",
        ))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let ttl_us = sql::micros(ttl).map_err(|e| Error::store(&self.url.masked, "renew", e))?;
        let sent = SystemTime::now();
        let outcome = self
            .execute(
                "renew",
                &self.sql.renew,
                Params::Positional(vec![
                    ttl_us.into(),
                    lease.name.as_str().into(),
                    lease.holder.id.as_str().into(),
                    lease.token.0.into(),
                ]),
            )
            .await?;
        // The renewed row sets LAST_INSERT_ID to its token even when nothing changed (a lease
        // that never expires), which affected rows would not show.
        if outcome.last_insert_id != Some(lease.token.0) {
            return Err(Error::lost(lease, Error::NOT_OURS));
        }
        Ok(Lease {
            expires: lease.expires.and_then(|_| sent.checked_add(ttl)),
            ..lease.clone()
        })
    }

    async fn finish(&self, lease: &Lease, finish: &Finish) -> Result<Released> {
        let hold_us = finish
            .hold
            .map(|hold| sql::micros(hold.after_acquisition))
            .transpose()
            .map_err(|e| Error::store(&self.url.masked, "release", e))?;
        let outcome_text = finish.outcome.to_string();
        let (name, id, token) = (lease.name.as_str(), lease.holder.id.as_str(), lease.token.0);
        // What happened, from the OK packet: see the statements.
        let released = match hold_us {
            None => {
                let done = self
                    .execute(
                        "release",
                        &self.sql.release,
                        Params::Positional(vec![
                            outcome_text.as_str().into(),
                            name.into(),
                            id.into(),
                            token.into(),
                        ]),
                    )
                    .await?;
                if done.last_insert_id == Some(token) {
                    Released::Released
                } else {
                    Released::NotHeld
                }
            }
            Some(hold_us) => {
                let done = self
                    .execute(
                        "release",
                        &self.sql.finish_kept,
                        Params::Positional(vec![
                            outcome_text.as_str().into(),
                            hold_us.into(),
                            hold_us.into(),
                            hold_us.into(),
                            name.into(),
                            id.into(),
                            token.into(),
                        ]),
                    )
                    .await?
                    .last_insert_id
                    .unwrap_or(0);
                match done % 4 {
                    1 => Released::Released,
                    2 => Released::Kept {
                        expires: Some(from_unix_micros(
                            i64::try_from(done / 4).unwrap_or(i64::MAX),
                        )),
                    },
                    _ => Released::NotHeld,
                }
            }
        };
        if released == Released::NotHeld {
            // Not our lease any more: record our run's outcome where it is still ours to record.
            self.execute(
                "release",
                &self.sql.record_late,
                named([
                    ("name", name.into()),
                    ("holder_id", id.into()),
                    ("token", token.into()),
                    ("outcome", outcome_text.into()),
                ]),
            )
            .await?;
        }
        Ok(released)
    }

    async fn last_run(&self, name: &str) -> Result<Option<LastRun>> {
        let rows: Vec<RunRow> = self
            .rows(
                "last-run",
                &self.sql.last_run,
                Params::Positional(vec![name.into()]),
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|row| self.run_of(row, "last-run"))
            .transpose()
    }

    async fn last_runs(&self) -> Result<Vec<LastRun>> {
        let rows: Vec<RunRow> = self
            .rows("last-runs", &self.sql.last_runs, Params::Empty)
            .await?;
        rows.into_iter()
            .map(|row| self.run_of(row, "last-runs"))
            .collect()
    }

    async fn inspect(&self, name: &str) -> Result<Option<Lease>> {
        let rows: Vec<LeaseRow> = self
            .rows(
                "inspect",
                &self.sql.inspect,
                Params::Positional(vec![name.into()]),
            )
            .await?;
        Ok(rows.into_iter().next().and_then(|row| lease_of(name, row)))
    }

    async fn list(&self) -> Result<Vec<Lease>> {
        let rows: Vec<ListRow> = self.rows("list", &self.sql.list, Params::Empty).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, token, id, host, pid, label, created, expires)| {
                lease_of(&text(name), (token, id, host, pid, label, created, expires))
            })
            .collect())
    }

    async fn force_release(&self, name: &str) -> Result<Option<Lease>> {
        // Read the live lease, then free exactly that one (holder id and token), recording its
        // run: if it changed hands in between, nothing is changed and we look again.
        for _ in 0..ATTEMPTS {
            let Some(lease) = self.inspect(name).await? else {
                return Ok(None);
            };
            let outcome = self
                .execute(
                    "force-release",
                    &self.sql.force_release,
                    Params::Positional(vec![
                        name.into(),
                        lease.holder.id.as_str().into(),
                        lease.token.0.into(),
                    ]),
                )
                .await?;
            if outcome.affected_rows == 1 {
                return Ok(Some(lease));
            }
        }
        Err(Error::store(
            &self.url.masked,
            "force-release",
            "the lease changed hands under every attempt; try again",
        ))
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
            Params::Positional(vec![scratch_key.into(), "holder".into()]),
        )
        .await?;
        self.execute(
            "benchmark",
            &self.sql.floor_delete,
            Params::Positional(vec![scratch_key.into()]),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn driver_durations_beyond_a_year_are_refused() {
        for param in ["abs_conn_ttl", "conn_ttl", "inactive_connection_ttl"] {
            let url = format!("mysql://u:pw@127.0.0.1:1/db?{param}=18446744073709551615");
            match MysqlStore::connect(&url).await {
                Err(Error::InvalidUrl { reason, .. }) => {
                    assert!(reason.contains(param), "{reason}")
                }
                other => panic!("{param}: {other:?}"),
            }
        }
    }
}
