//! The MySQL/MariaDB store's SQL: every statement an operation runs, built once from the
//! validated table names. docs/mysql.md says why each is safe.

/// `expires_at` of a free row: long past by any clock.
const FREE: &str = "'1970-01-01 00:00:00'";

/// True when the row is free for the taking: released, or expired by the server's clock. A
/// lease that never expires has `expires_at` NULL, which is never "past".
const TAKEABLE: &str = "expires_at <= UTC_TIMESTAMP(6)";

/// True when the row is held and unexpired by the server's clock.
const LIVE: &str =
    "holder_id IS NOT NULL AND (expires_at IS NULL OR expires_at > UTC_TIMESTAMP(6))";

/// A `DATETIME(6)` column as microseconds since the Unix epoch (all times are UTC).
fn unix_micros(column: &str) -> String {
    format!("TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {column})")
}

/// The statements, built once from the validated, quoted table names.
#[derive(Debug)]
pub(super) struct Statements {
    pub create: String,
    pub create_scratch: String,
    pub acquire: String,
    pub taken_over: String,
    pub renew: String,
    pub release: String,
    pub inspect: String,
    pub list: String,
    pub floor_insert: String,
    pub floor_delete: String,
}

impl Statements {
    pub fn new(table: &str, scratch: &str) -> Self {
        let t = format!("`{table}`");
        let s = format!("`{scratch}`");
        let lease_columns = format!(
            "token, holder_id, host, pid, label, {}, {}",
            unix_micros("created"),
            unix_micros("expires_at")
        );
        // Each assignment keeps the old value unless the row is takeable. MySQL applies them
        // left to right and later ones see earlier results, so the previous holder is saved
        // first and `expires_at`, which TAKEABLE reads, is assigned last.
        let take = |column: &str, new: &str| format!("{column} = IF({TAKEABLE}, {new}, {column})");
        let update = [
            take("prev_holder_id", "holder_id"),
            take("prev_host", "host"),
            take("prev_pid", "pid"),
            take("prev_label", "label"),
            take("prev_created", "created"),
            take("prev_expires_at", "expires_at"),
            // LAST_INSERT_ID(expr) puts the new token, and whether the row had an (expired)
            // holder, into the OK packet: no second round trip to learn them.
            take(
                "token",
                "LAST_INSERT_ID((token + 1) * 2 + (holder_id IS NOT NULL)) DIV 2",
            ),
            take("holder_id", "?"),
            take("host", "?"),
            take("pid", "?"),
            take("label", "?"),
            take("created", "UTC_TIMESTAMP(6)"),
            take("expires_at", "UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND"),
        ]
        .join(",\n    ");
        Statements {
            create: format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                     name            VARBINARY(255) NOT NULL PRIMARY KEY, -- byte for byte
                     token           BIGINT UNSIGNED NOT NULL, -- fencing counter; survives release
                     holder_id       VARBINARY(255) NULL,      -- NULL while the name is free
                     host            VARBINARY(255) NOT NULL,
                     pid             BIGINT UNSIGNED NOT NULL,
                     label           BLOB NOT NULL,
                     created         DATETIME(6) NOT NULL,     -- UTC, server clock
                     expires_at      DATETIME(6) NULL,         -- UTC, server clock; NULL: never
                     prev_holder_id  VARBINARY(255) NULL,      -- the lease last taken over
                     prev_host       VARBINARY(255) NULL,
                     prev_pid        BIGINT UNSIGNED NULL,
                     prev_label      BLOB NULL,
                     prev_created    DATETIME(6) NULL,
                     prev_expires_at DATETIME(6) NULL
                 ) ENGINE = InnoDB"
            ),
            create_scratch: format!(
                "CREATE TABLE IF NOT EXISTS {s} (
                     name    VARBINARY(255) NOT NULL PRIMARY KEY,
                     value   VARBINARY(255) NOT NULL,
                     created DATETIME(6) NOT NULL
                 ) ENGINE = InnoDB"
            ),
            acquire: format!(
                "INSERT INTO {t} (name, token, holder_id, host, pid, label, created, expires_at)
                 VALUES (?, 1, ?, ?, ?, ?, UTC_TIMESTAMP(6),
                         UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND)
                 ON DUPLICATE KEY UPDATE\n    {update}"
            ),
            taken_over: format!(
                "SELECT prev_holder_id, prev_host, prev_pid, prev_label, {}, {}
                 FROM {t} WHERE name = ? AND token = ?",
                unix_micros("prev_created"),
                unix_micros("prev_expires_at")
            ),
            renew: format!(
                "UPDATE {t}
                 SET token = LAST_INSERT_ID(token),
                     expires_at = IF(expires_at IS NULL, NULL,
                                     UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND)
                 WHERE name = ? AND holder_id = ? AND token = ?
                   AND (expires_at IS NULL OR expires_at > UTC_TIMESTAMP(6))"
            ),
            release: format!(
                "UPDATE {t} SET holder_id = NULL, expires_at = {FREE}
                 WHERE name = ? AND holder_id = ? AND token = ?"
            ),
            inspect: format!("SELECT {lease_columns} FROM {t} WHERE name = ? AND {LIVE}"),
            list: format!("SELECT name, {lease_columns} FROM {t} WHERE {LIVE} ORDER BY name"),
            floor_insert: format!(
                "INSERT INTO {s} (name, value, created) VALUES (?, ?, UTC_TIMESTAMP(6))"
            ),
            floor_delete: format!("DELETE FROM {s} WHERE name = ?"),
        }
    }

    /// Every statement an operation runs, prepared at connect so that a table of another shape
    /// is reported at once.
    pub fn all(&self) -> [&str; 8] {
        [
            &self.acquire,
            &self.taken_over,
            &self.renew,
            &self.release,
            &self.inspect,
            &self.list,
            &self.floor_insert,
            &self.floor_delete,
        ]
    }
}
