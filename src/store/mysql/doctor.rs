//! `singleton doctor` for MySQL and MariaDB: InnoDB's redo log and the binary log on disk,
//! `read_only`, and the lease table's engine and the name's collation.

use std::time::SystemTime;

use mysql_async::Params;

use super::{MysqlStore, from_unix_micros};
use crate::doctor::Check;
use crate::error::{Error, Result};

/// The server's settings, each as text (NULL where the server has no such variable).
const SETTINGS: &str = "SELECT CONCAT(@@innodb_flush_log_at_trx_commit), CONCAT(@@sync_binlog),
        CONCAT(@@log_bin), CONCAT(@@read_only), @@version, @@version_comment";

/// MySQL's `super_read_only`, which MariaDB does not have.
const SUPER_READ_ONLY: &str = "SELECT CONCAT(@@super_read_only)";

/// The lease table's engine and collation, and the `name` column's type and collation.
const TABLE: &str = "SELECT t.ENGINE, t.TABLE_COLLATION, c.COLUMN_TYPE, c.COLLATION_NAME
    FROM information_schema.TABLES AS t
    LEFT JOIN information_schema.COLUMNS AS c
      ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME AND c.COLUMN_NAME = 'name'
    WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_NAME = ?";

type Settings = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
);

impl MysqlStore {
    /// The checks of [`crate::Store::doctor`].
    pub(super) async fn checks(&self) -> Result<Vec<Check>> {
        let rows: Vec<Settings> = self.rows("doctor", SETTINGS, Params::Empty).await?;
        let Some((flush, sync_binlog, log_bin, read_only, version, comment)) =
            rows.into_iter().next()
        else {
            return Err(Error::store(&self.url.masked, "doctor", "no settings row"));
        };
        let super_read_only = self
            .rows::<(Option<String>,)>("doctor", SUPER_READ_ONLY, Params::Empty)
            .await
            .ok()
            .and_then(|rows| rows.into_iter().next())
            .and_then(|(value,)| value);
        let text = |value: &Option<String>| value.clone().unwrap_or_else(|| "unknown".into());
        let mut checks = vec![
            redo_log(&text(&flush)),
            binary_log(&text(&log_bin), &text(&sync_binlog)),
            writable(&text(&read_only), super_read_only.as_deref()),
            Check::ok(
                "version",
                match comment {
                    Some(comment) => format!("{version} ({comment})"),
                    None => version,
                },
                "no known bug of the server affects the statements leases use",
            ),
        ];
        checks.push(self.table().await);
        Ok(checks)
    }

    /// The server's clock now, as the lease statements read it (`UTC_TIMESTAMP(6)`).
    pub(super) async fn clock(&self) -> Result<SystemTime> {
        let rows: Vec<(i64,)> = self
            .rows(
                "read the clock",
                "SELECT TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6))",
                Params::Empty,
            )
            .await?;
        match rows.first() {
            Some((micros,)) => Ok(from_unix_micros(*micros)),
            None => Err(Error::store(&self.url.masked, "read the clock", "no row")),
        }
    }

    /// The lease table's engine, and whether names compare byte for byte.
    async fn table(&self) -> Check {
        const NAME: &str = "table";
        let rows = self
            .rows::<(
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
            )>(
                "doctor",
                TABLE,
                Params::Positional(vec![self.url.table.as_str().into()]),
            )
            .await;
        let (engine, table_collation, name_type, name_collation) =
            match rows.map(|rows| rows.into_iter().next()) {
                Ok(Some(row)) => row,
                Ok(None) => {
                    return Check::unreadable(
                        NAME,
                        format!("{} is not in information_schema", self.url.table),
                    );
                }
                Err(err) => return Check::unreadable(NAME, err),
            };
        let engine = engine.unwrap_or_else(|| "unknown".into());
        let name_type = name_type.unwrap_or_else(|| "missing".into());
        let found = format!(
            "`{}`: engine {engine}, table collation {}, name {name_type}{}",
            self.url.table,
            table_collation.as_deref().unwrap_or("none"),
            match &name_collation {
                Some(collation) => format!(" collate {collation}"),
                None => String::new(),
            }
        );
        if !engine.eq_ignore_ascii_case("InnoDB") {
            return Check::fail(
                NAME,
                found,
                "only InnoDB makes each statement atomic and durable; other engines can lose or half-apply an acquire in a crash",
                format!("ALTER TABLE `{}` ENGINE = InnoDB", self.url.table),
            );
        }
        let binary = name_collation
            .as_deref()
            .is_none_or(|collation| collation.ends_with("_bin") || collation == "binary");
        if binary {
            Check::ok(
                NAME,
                found,
                "InnoDB makes each statement atomic and durable, and names compare byte for byte",
            )
        } else {
            Check::warn(
                NAME,
                found,
                "names compare by a case- or accent-insensitive collation, so names that differ only so (say, `Job` and `job`) share one lease and one fencing counter",
                format!(
                    "ALTER TABLE `{}` MODIFY name VARBINARY(255) NOT NULL (when no job runs)",
                    self.url.table
                ),
            )
        }
    }
}

/// When InnoDB's redo log reaches the disk.
fn redo_log(value: &str) -> Check {
    const NAME: &str = "innodb_flush_log_at_trx_commit";
    match value {
        "1" => Check::ok(
            NAME,
            value,
            "every commit is on disk before the lease is acknowledged, so a crash issues no token twice",
        ),
        "2" => Check::warn(
            NAME,
            value,
            "commits reach the disk once a second: a crash of the server's host (power cut, kernel panic) loses the last second of acquires, and their tokens are issued again",
            "SET GLOBAL innodb_flush_log_at_trx_commit = 1 (and in my.cnf)",
        ),
        _ => Check::fail(
            NAME,
            value,
            "commits reach the log once a second: even a crash of the server loses the last second of acquires, and their tokens are issued again",
            "SET GLOBAL innodb_flush_log_at_trx_commit = 1 (and in my.cnf)",
        ),
    }
}

/// Whether the binary log, which replicas follow, reaches the disk with each commit.
fn binary_log(log_bin: &str, sync_binlog: &str) -> Check {
    const NAME: &str = "sync_binlog";
    if log_bin == "0" || log_bin.eq_ignore_ascii_case("off") {
        return Check::ok(
            NAME,
            format!("binary log off (sync_binlog {sync_binlog})"),
            "no replica follows this server, so none can be promoted without the last acquires",
        );
    }
    let found = format!("binary log on, sync_binlog {sync_binlog}");
    if sync_binlog == "1" {
        Check::ok(
            NAME,
            found,
            "every commit's binary log event is on disk, so replicas and a restart agree on the last acquires",
        )
    } else {
        Check::warn(
            NAME,
            found,
            "a crash of the server's host can lose binary log events of commits it acknowledged: a replica promoted afterwards lacks those acquires, and issues their tokens again",
            "SET GLOBAL sync_binlog = 1 (and in my.cnf)",
        )
    }
}

/// Whether the server takes writes.
fn writable(read_only: &str, super_read_only: Option<&str>) -> Check {
    const NAME: &str = "read_only";
    let on = |value: &str| value == "1" || value.eq_ignore_ascii_case("on");
    let found = match super_read_only {
        Some(value) => format!("read_only {read_only}, super_read_only {value}"),
        None => format!("read_only {read_only}"),
    };
    if on(read_only) || super_read_only.is_some_and(on) {
        Check::fail(
            NAME,
            found,
            "a read-only server is a replica, or one being failed over: acquires fail, or, for users with SUPER, succeed on a server other hosts do not use, so two holders",
            "point the URL at the primary",
        )
    } else {
        Check::ok(NAME, found, "the server takes writes: it is a primary")
    }
}
