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

/// True when the row holds a lease whose run is not on record: a run still going, or one that
/// ended without a word (expired), rather than one kept after its finish.
const UNRECORDED: &str =
    "holder_id IS NOT NULL AND NOT (run_token <=> token AND run_holder_id <=> holder_id)";

/// The columns of the last run on record, added to tables of the previous version at connect.
const RUN_COLUMNS: [(&str, &str); 8] = [
    ("run_token", "BIGINT UNSIGNED NULL"),
    ("run_holder_id", "VARBINARY(255) NULL"),
    ("run_host", "VARBINARY(255) NULL"),
    ("run_pid", "BIGINT UNSIGNED NULL"),
    ("run_label", "BLOB NULL"),
    ("run_started", "DATETIME(6) NULL"),
    ("run_ended", "DATETIME(6) NULL"),
    ("run_outcome", "VARBINARY(64) NULL"),
];

/// A `DATETIME(6)` column as microseconds since the Unix epoch (all times are UTC).
fn unix_micros(column: &str) -> String {
    format!("TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {column})")
}

/// The assignments that record the row's lease as its last run, ended at `ended` with an
/// unknown outcome, when `record` is true, and keep the record otherwise. `record` may read
/// the run columns: `run_holder_id` and `run_token` are assigned last, so that it sees them as
/// they were for all of them under MySQL's left-to-right assignments (after `run_holder_id`,
/// the condition on `run_token` can only change when that is equal to `token` already).
fn record_unknown(record: &str, ended: &str) -> String {
    [
        ("run_host", "host"),
        ("run_pid", "pid"),
        ("run_label", "label"),
        ("run_started", "created"),
        ("run_ended", ended),
        ("run_outcome", "'unknown'"),
        ("run_holder_id", "holder_id"),
        ("run_token", "token"),
    ]
    .iter()
    .map(|(column, value)| format!("{column} = IF({record}, {value}, {column})"))
    .collect::<Vec<_>>()
    .join(",\n    ")
}

/// The statements, built once from the validated, quoted table names.
#[derive(Debug)]
pub(super) struct Statements {
    pub create: String,
    pub create_scratch: String,
    /// Adds the run columns to a table of the previous version.
    pub add_run_columns: String,
    pub acquire: String,
    pub taken_over: String,
    pub renew: String,
    pub finish: String,
    pub inspect: String,
    pub list: String,
    pub last_run: String,
    pub last_runs: String,
    pub force_release: String,
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
            // An expired lease taken over is the last run, unknown how it ended, unless it was
            // finished and kept.
            record_unknown(&format!("{TAKEABLE} AND {UNRECORDED}"), "expires_at"),
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
        // Finish names its parameters, which it reads in several places: our `:holder_id` and
        // `:token`, the `:outcome`, and `:hold_us`, the hold after the acquisition in
        // microseconds (NULL: none).
        let ours = "(holder_id <=> :holder_id AND token = :token)";
        let kept_until = "created + INTERVAL :hold_us MICROSECOND";
        let keep = format!("(:hold_us IS NOT NULL AND {LIVE} AND {kept_until} > UTC_TIMESTAMP(6))");
        let run = |column: &str, value: &str| format!("{column} = IF({ours}, {value}, {column})");
        let lease_or_run = |lease: &str, run: &str| format!("IF(u, {lease}, {run})");
        // An expired lease nobody replaced yet reads as a run that ended, unknown how, when it
        // expired; unless it was kept after its run, which is on record then.
        let last_run = |condition: &str| {
            format!(
                "SELECT name, {}, {}, {}, {}, {}, {}, {}, {} FROM (
                     SELECT *, {TAKEABLE} AND {UNRECORDED} AS u FROM {t}{condition}
                 ) AS r WHERE u OR run_token IS NOT NULL",
                lease_or_run("token", "run_token"),
                lease_or_run("holder_id", "run_holder_id"),
                lease_or_run("host", "run_host"),
                lease_or_run("pid", "run_pid"),
                lease_or_run("label", "run_label"),
                unix_micros(&lease_or_run("created", "run_started")),
                unix_micros(&lease_or_run("expires_at", "run_ended")),
                lease_or_run("'unknown'", "run_outcome"),
            )
        };
        let run_columns = RUN_COLUMNS
            .iter()
            .map(|(column, kind)| format!("{column} {kind}"))
            .collect::<Vec<_>>();
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
                     prev_expires_at DATETIME(6) NULL,
                     -- The last run that ended: its lease's token, holder and created, when
                     -- it ended (UTC, server clock) and how; NULL until one has.
                     {}
                 ) ENGINE = InnoDB",
                run_columns.join(",\n                     ")
            ),
            create_scratch: format!(
                "CREATE TABLE IF NOT EXISTS {s} (
                     name    VARBINARY(255) NOT NULL PRIMARY KEY,
                     value   VARBINARY(255) NOT NULL,
                     created DATETIME(6) NOT NULL
                 ) ENGINE = InnoDB"
            ),
            // One statement, so that the columns come all at once or not at all.
            add_run_columns: format!(
                "ALTER TABLE {t} {}",
                run_columns
                    .iter()
                    .map(|column| format!("ADD COLUMN {column}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            acquire: format!(
                "INSERT INTO {t} (name, token, holder_id, host, pid, label, created, expires_at)
                 VALUES (?, 1, ?, ?, ?, ?, UTC_TIMESTAMP(6),
                         UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND)
                 ON DUPLICATE KEY UPDATE\n    {update}"
            ),
            // A lease kept after its finished run ended as planned and is not reported: the
            // acquire recorded the run of the lease it took over as unknown, not so that one.
            taken_over: format!(
                "SELECT prev_holder_id, prev_host, prev_pid, prev_label, {}, {}
                 FROM {t} WHERE name = ? AND token = ? AND run_outcome = 'unknown'",
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
            // Each assignment reads only columns not assigned before it, or reads the same
            // under MySQL's left-to-right assignments as under MariaDB's SIMULTANEOUS_ASSIGNMENT:
            // `holder_id`'s keep condition sees `expires_at` kept (live, the hold ahead) or
            // freed (1970: not live) as it decided. `expires_at`'s LAST_INSERT_ID(expr) hands
            // back what happened in the OK packet, `expiry * 4 + 2` for a kept lease and 1 for
            // one given back; on a lease not ours it is not evaluated and the packet says 0.
            finish: format!(
                "UPDATE {t} SET
                     {}, {}, {}, {},
                     run_ended = UTC_TIMESTAMP(6), run_outcome = :outcome,
                     run_holder_id = :holder_id, run_token = :token,
                     expires_at = IF({ours},
                                     {FREE} + INTERVAL (LAST_INSERT_ID(
                                         IF({keep}, {} * 4 + 2, 1)) DIV 4) MICROSECOND,
                                     expires_at),
                     holder_id = IF({ours} AND NOT {keep}, NULL, holder_id)
                 WHERE name = :name
                   AND ({ours} OR (run_holder_id = :holder_id AND run_token = :token))",
                run("run_host", "host"),
                run("run_pid", "pid"),
                run("run_label", "label"),
                run("run_started", "created"),
                unix_micros(kept_until),
            ),
            inspect: format!("SELECT {lease_columns} FROM {t} WHERE name = ? AND {LIVE}"),
            list: format!("SELECT name, {lease_columns} FROM {t} WHERE {LIVE} ORDER BY name"),
            last_run: last_run(" WHERE name = ?"),
            last_runs: format!("{} ORDER BY name", last_run("")),
            // Frees exactly the lease read before (holder id and token), recording its run as
            // unknown, ended now or when it expired, unless it was finished and kept.
            force_release: format!(
                "UPDATE {t} SET
                     {},
                     holder_id = NULL, expires_at = {FREE}
                 WHERE name = ? AND holder_id = ? AND token = ?",
                record_unknown(
                    UNRECORDED,
                    &format!("IF({LIVE}, UTC_TIMESTAMP(6), expires_at)")
                )
            ),
            floor_insert: format!(
                "INSERT INTO {s} (name, value, created) VALUES (?, ?, UTC_TIMESTAMP(6))"
            ),
            floor_delete: format!("DELETE FROM {s} WHERE name = ?"),
        }
    }

    /// The statements that read only the columns of the previous version, prepared at connect
    /// first so that a table of another shape is reported before anything is added to it.
    pub fn of_the_lease_columns(&self) -> [&str; 5] {
        [
            &self.renew,
            &self.inspect,
            &self.list,
            &self.floor_insert,
            &self.floor_delete,
        ]
    }

    /// The statements that read the run columns too, prepared at connect after those.
    pub fn of_the_run_columns(&self) -> [&str; 6] {
        [
            &self.acquire,
            &self.taken_over,
            &self.finish,
            &self.last_run,
            &self.last_runs,
            &self.force_release,
        ]
    }
}
