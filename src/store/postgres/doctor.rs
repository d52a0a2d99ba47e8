//! `singleton doctor` for PostgreSQL: durability, the server's role and replication, its
//! version, a pooler in the way of `LISTEN`, and the lease table's shape and collation.

use std::time::{Duration, SystemTime};

use tokio_postgres::AsyncMessage;

use super::PostgresStore;
use crate::doctor::{Check, Status};
use crate::error::Result;

/// The oldest major version that still gets fixes (13 ended in November 2025).
const OLDEST_SUPPORTED: i32 = 14;

/// How long the pooler check waits for its own notification, which a server delivers within
/// milliseconds; only a pooler that loses it makes doctor wait this long.
const NOTIFY_WAIT: Duration = Duration::from_secs(5);

/// The lease table's columns and their types, as `format_type` names them.
const COLUMNS: [(&str, &str); 16] = [
    ("name", "text"),
    ("token", "bigint"),
    ("holder_id", "text"),
    ("host", "text"),
    ("pid", "bigint"),
    ("label", "text"),
    ("created", "timestamp with time zone"),
    ("expires_at", "timestamp with time zone"),
    ("run_token", "bigint"),
    ("run_holder_id", "text"),
    ("run_host", "text"),
    ("run_pid", "bigint"),
    ("run_label", "text"),
    ("run_started", "timestamp with time zone"),
    ("run_ended", "timestamp with time zone"),
    ("run_outcome", "text"),
];

/// The server's settings, read in one statement (each readable without privileges).
const SETTINGS: &str = "SELECT current_setting('fsync'), current_setting('synchronous_commit'),
        current_setting('full_page_writes'), current_setting('synchronous_standby_names'),
        pg_is_in_recovery(), current_setting('server_version_num')::int,
        current_setting('server_version'), (SELECT count(*) FROM pg_stat_replication)";

/// The lease table's columns with their types and collations, and its primary key.
const TABLE: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
        coalesce(c.collname::text, ''), coalesce(c.collisdeterministic, true)
    FROM pg_attribute AS a LEFT JOIN pg_collation AS c ON c.oid = a.attcollation
    WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped";
const PRIMARY_KEY: &str = "SELECT pg_get_constraintdef(oid) FROM pg_constraint
    WHERE conrelid = $1::text::regclass AND contype = 'p'";

impl PostgresStore {
    /// The checks of [`crate::Store::doctor`].
    pub(super) async fn checks(&self) -> Result<Vec<Check>> {
        let rows = self.rows("doctor", SETTINGS, &[]).await?;
        let read = |e| self.read_error("doctor", e);
        let Some(row) = rows.first() else {
            return Err(crate::Error::store(
                &self.url.masked,
                "doctor",
                "no settings row",
            ));
        };
        let fsync: String = row.try_get(0).map_err(read)?;
        let synchronous_commit: String = row.try_get(1).map_err(read)?;
        let full_page_writes: String = row.try_get(2).map_err(read)?;
        let standby_names: String = row.try_get(3).map_err(read)?;
        let in_recovery: bool = row.try_get(4).map_err(read)?;
        let version_num: i32 = row.try_get(5).map_err(read)?;
        let version: String = row.try_get(6).map_err(read)?;
        let standbys: i64 = row.try_get(7).map_err(read)?;
        let mut checks = vec![
            check_fsync(&fsync),
            check_synchronous_commit(&synchronous_commit, &standby_names),
            check_full_page_writes(&full_page_writes),
            check_role(in_recovery),
            check_replication(standbys, &standby_names),
            check_version(version_num, &version),
        ];
        checks.push(self.listen().await);
        checks.push(self.table().await);
        Ok(checks)
    }

    /// The server's clock now: `clock_timestamp()`, not `now()`, which is the transaction's
    /// start.
    pub(super) async fn clock(&self) -> Result<SystemTime> {
        let rows = self
            .rows("read the clock", "SELECT clock_timestamp()", &[])
            .await?;
        match rows.first() {
            Some(row) => row
                .try_get(0)
                .map_err(|e| self.read_error("read the clock", e)),
            None => Err(crate::Error::store(
                &self.url.masked,
                "read the clock",
                "no row",
            )),
        }
    }

    /// Whether a session of its own hears its own `NOTIFY`, sent from a pooled connection, and
    /// keeps one server process: a pooler in transaction mode breaks both, and waiters then
    /// only poll.
    async fn listen(&self) -> Check {
        const NAME: &str = "listen";
        let channel = format!("singleton_doctor_{}", uuid::Uuid::new_v4().simple());
        let connecting = self.servers.connect_first();
        let (client, mut connection) =
            match tokio::time::timeout(self.url.connect_timeout, connecting).await {
                Ok(Ok(connected)) => connected,
                Ok(Err(err)) => return Check::unreadable(NAME, self.error("doctor", err)),
                Err(_) => return Check::unreadable(NAME, "connecting timed out"),
            };
        let (heard, mut word) = tokio::sync::mpsc::channel(1);
        let wanted = channel.clone();
        let listener = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let AsyncMessage::Notification(notice) = message
                    && notice.channel() == wanted
                {
                    let _ = heard.try_send(());
                }
            }
        }));
        let backend = "SELECT pg_backend_pid()";
        let probing = async {
            let before: i32 = client.query_one(backend, &[]).await?.try_get(0)?;
            client
                .batch_execute(&format!("LISTEN \"{channel}\""))
                .await?;
            Ok::<_, tokio_postgres::Error>(before)
        };
        let before = match tokio::time::timeout(self.url.connect_timeout, probing).await {
            Ok(Ok(before)) => before,
            Ok(Err(err)) => return Check::unreadable(NAME, self.error("doctor", err)),
            Err(_) => return Check::unreadable(NAME, "LISTEN timed out"),
        };
        if let Err(err) = self
            .rows("doctor", "SELECT pg_notify($1, 'probe')", &[&channel])
            .await
        {
            return Check::unreadable(NAME, err);
        }
        let was_heard = tokio::time::timeout(NOTIFY_WAIT, word.recv())
            .await
            .is_ok_and(|word| word.is_some());
        let after: Option<i32> = match client.query_one(backend, &[]).await {
            Ok(row) => row.try_get(0).ok(),
            Err(_) => None,
        };
        drop(listener);
        let same_session = after == Some(before);
        if was_heard && same_session {
            Check::ok(
                NAME,
                "a session of its own hears NOTIFY",
                "waiters (run --wait) hear a release at once",
            )
        } else {
            Check::warn(
                NAME,
                format!(
                    "{}{}",
                    if was_heard {
                        "NOTIFY was heard".to_owned()
                    } else {
                        format!(
                            "NOTIFY did not come back within {}",
                            humantime::format_duration(NOTIFY_WAIT)
                        )
                    },
                    if same_session {
                        ""
                    } else {
                        ", and one connection was served by several server processes: a pooler in transaction mode?"
                    }
                ),
                "leases need no session (every operation is one statement), but waiters listen for releases on a session of their own; through a transaction-mode pooler they only poll, so a freed lease is taken up later",
                "point the URL at the server or at a session-mode pool, if waiting latency matters",
            )
        }
    }

    /// The lease table's columns, types, the name's collation and the primary key.
    async fn table(&self) -> Check {
        const NAME: &str = "table";
        let table = format!("\"{}\"", self.url.table);
        let columns = match self.rows("doctor", TABLE, &[&table]).await {
            Ok(rows) => rows,
            Err(err) => return Check::unreadable(NAME, err),
        };
        let key = match self.rows("doctor", PRIMARY_KEY, &[&table]).await {
            Ok(rows) => rows
                .first()
                .and_then(|row| row.try_get::<_, String>(0).ok())
                .unwrap_or_default(),
            Err(err) => return Check::unreadable(NAME, err),
        };
        let mut wrong = Vec::new();
        let mut collation = (String::new(), true);
        for (column, kind) in COLUMNS {
            let found = columns.iter().find(|row| row.get::<_, String>(0) == column);
            match found {
                None => wrong.push(format!("no column {column}")),
                Some(row) => {
                    let found_kind: String = row.get(1);
                    if found_kind != kind {
                        wrong.push(format!("{column} is {found_kind}, not {kind}"));
                    }
                    if column == "name" {
                        collation = (row.get(2), row.get(3));
                    }
                }
            }
        }
        if key != "PRIMARY KEY (name)" {
            wrong.push(format!(
                "the primary key is {:?}, not (name)",
                if key.is_empty() { "missing" } else { &key }
            ));
        }
        let found = format!("{table}, name collation {:?}", collation.0);
        if !wrong.is_empty() {
            return Check::fail(
                NAME,
                format!("{found}: {}", wrong.join("; ")),
                "every statement relies on these columns, and on one row per name",
                "let singleton create its table (?table= names another), or fix this one to the shape in docs/postgres.md",
            );
        }
        match collation {
            (name, _) if name == "C" || name == "POSIX" => Check::ok(
                NAME,
                found,
                "names compare byte for byte, and no collation update can corrupt the primary key's index",
            ),
            (_, false) => Check::fail(
                NAME,
                found,
                "a nondeterministic collation takes different names (say, `Job` and `job`) for one, so they share one lease and one fencing counter",
                format!(
                    "ALTER TABLE {table} ALTER COLUMN name TYPE text COLLATE \"C\" (when no job runs)"
                ),
            ),
            (_, true) => Check::new(
                Status::Warn,
                NAME,
                found,
                "names still compare byte for byte, but the primary key's index is sorted by the operating system's locale: an upgrade of its collation (glibc 2.28, say) can corrupt the index, and a corrupt index can miss a row, so that a name gets a second row, holder and token",
                Some(format!(
                    "ALTER TABLE {table} ALTER COLUMN name TYPE text COLLATE \"C\" (when no job runs)"
                )),
            ),
        }
    }
}

fn check_fsync(fsync: &str) -> Check {
    let why = "with fsync off a crash of the server's host (power cut, kernel panic) can lose commits or corrupt the table: a token issued again, a lease forgotten while its holder runs";
    if fsync == "on" {
        Check::ok("fsync", fsync, why)
    } else {
        Check::fail(
            "fsync",
            fsync,
            why,
            "fsync = on in postgresql.conf, then reload (SELECT pg_reload_conf())",
        )
    }
}

fn check_synchronous_commit(value: &str, standby_names: &str) -> Check {
    const NAME: &str = "synchronous_commit";
    match value {
        "off" => Check::fail(
            NAME,
            value,
            "a commit is acknowledged before it reaches the disk: a crash of the server loses the last acquires, and their tokens are issued again",
            "synchronous_commit = on (for the lease table's user alone, if need be: ALTER ROLE … SET synchronous_commit = on)",
        ),
        "local" if !standby_names.is_empty() => Check::warn(
            NAME,
            value,
            "commits do not wait for the synchronous standbys: a failover can lose acquires the primary acknowledged",
            "synchronous_commit = on (or remote_apply)",
        ),
        _ => Check::ok(
            NAME,
            value,
            "a commit is on disk before the lease is acknowledged",
        ),
    }
}

fn check_full_page_writes(value: &str) -> Check {
    let why = "without full-page writes a power cut in the middle of a page write can leave a torn page that recovery cannot repair: the table, its counters and leases damaged";
    if value == "on" {
        Check::ok("full_page_writes", value, why)
    } else {
        Check::warn(
            "full_page_writes",
            value,
            why,
            "full_page_writes = on, unless the file system guarantees atomic page writes (ZFS, say)",
        )
    }
}

fn check_role(in_recovery: bool) -> Check {
    if in_recovery {
        Check::fail(
            "role",
            "standby (in recovery)",
            "a standby refuses writes, so every acquire fails",
            "point the URL at the primary, or list every server (postgres://u@h1,h2/db) to take the one that accepts writes",
        )
    } else {
        Check::ok(
            "role",
            "primary",
            "it takes writes, so leases can be acquired",
        )
    }
}

fn check_replication(standbys: i64, standby_names: &str) -> Check {
    const NAME: &str = "replication";
    let found = format!(
        "{standbys} standby connection{}, synchronous_standby_names = {standby_names:?}",
        if standbys == 1 { "" } else { "s" }
    );
    if standbys > 0 && standby_names.is_empty() {
        Check::warn(
            NAME,
            found,
            "the standbys replicate asynchronously: after a failover the new primary may lack the last acquires, so a token is issued again and a lease held twice",
            "synchronous_standby_names = 'ANY 1 (…)' with synchronous_commit = on, if a standby can be promoted (see docs/postgres.md)",
        )
    } else {
        Check::ok(
            NAME,
            found,
            "a failover cannot lose an acknowledged lease: there is no standby to promote, or commits wait for one",
        )
    }
}

fn check_version(version_num: i32, version: &str) -> Check {
    let major = version_num / 10_000;
    if major < OLDEST_SUPPORTED {
        Check::warn(
            "version",
            version,
            format!(
                "PostgreSQL {major} no longer gets fixes (data-loss and replication bugs included)"
            ),
            format!("upgrade to PostgreSQL {OLDEST_SUPPORTED} or later"),
        )
    } else {
        Check::ok(
            "version",
            version,
            "a supported release; no known bug affects the statements leases use",
        )
    }
}
