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
/// ended without a word (expired), rather than one kept after its finish. A row's tokens are
/// unique, so the token alone tells whether the run on record is this lease's.
const UNRECORDED: &str = "holder_id IS NOT NULL AND NOT (run_token <=> token)";

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
/// unknown outcome, when `record` is true, and keep the record otherwise; `run_token` is
/// assigned last, as `record` may read it. The lease's host, pid, label and start stay in its
/// own columns, where the last run reads them while `run_token` is the row's token.
fn record_unknown(record: &str, ended: &str) -> String {
    [
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
    pub release: String,
    pub finish_kept: String,
    pub record_late: String,
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
        // The lease taken over is copied to `prev_*`, where the last run reads it while the
        // next lease is live: as unknown, ended at its expiry, unless its run is on record.
        let update = [
            take("prev_holder_id", "holder_id"),
            take("prev_host", "host"),
            take("prev_pid", "pid"),
            take("prev_label", "label"),
            take("prev_created", "created"),
            take("prev_expires_at", "expires_at"),
            // LAST_INSERT_ID(expr) puts the new token, and whether the row had an (expired)
            // holder whose run is not on record, into the OK packet: no second round trip to
            // learn them.
            take(
                "token",
                &format!("LAST_INSERT_ID((token + 1) * 2 + ({UNRECORDED})) DIV 2"),
            ),
            take("holder_id", "?"),
            take("host", "?"),
            take("pid", "?"),
            take("label", "?"),
            take("created", "UTC_TIMESTAMP(6)"),
            take("expires_at", "UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND"),
        ]
        .join(",\n    ");
        // A finish sets the run's holder, token, end and outcome; its host, pid, label and
        // start stay where they are, in the lease columns (in `prev_*` once the next lease took
        // over): every column a statement assigns costs the server time, changed or not.
        let record = "run_ended = UTC_TIMESTAMP(6), run_outcome = ?, run_holder_id = holder_id";
        // Kept: live, and the hold (the second parameter) ends ahead. It reads only `created`
        // and `expires_at`, which `finish_kept` assigns last.
        let keep = "(expires_at IS NULL OR expires_at > UTC_TIMESTAMP(6))
                    AND created + INTERVAL ? MICROSECOND > UTC_TIMESTAMP(6)";
        // The last run, by where the row keeps it (`k`):
        // - 'a': the row's lease is on record (released, kept or force-released): `run_*` has
        //   its holder, end and outcome, and the lease columns the rest;
        // - 'u': the row's lease expired, its run not on record: unknown, ended at its expiry;
        // - 'p': the lease the row's lease took over (token - 1, in `prev_*`) had expired and
        //   its run is not on record: unknown, ended at its expiry;
        // - 'r': that lease's run is on record: `run_*` has its holder, end and outcome, and
        //   `prev_*` the rest;
        // - 'o': an older run on record, all of it in `run_*` (written by earlier versions).
        // A run still going is no last run: the row shows the one before meanwhile.
        let kind = format!(
            "CASE WHEN run_token <=> token THEN 'a'
                  WHEN holder_id IS NOT NULL AND {TAKEABLE} THEN 'u'
                  WHEN prev_holder_id IS NOT NULL AND NOT (run_token <=> token - 1) THEN 'p'
                  WHEN run_token <=> token - 1 THEN 'r'
                  WHEN run_token IS NOT NULL THEN 'o'
             END"
        );
        let by_kind = |lease: &str, previous: &str, older: &str| {
            format!(
                "CASE WHEN k IN ('a', 'u') THEN {lease} WHEN k = 'o' THEN {older} ELSE {previous} END"
            )
        };
        let last_run = |condition: &str| {
            format!(
                "SELECT name, {}, {}, {}, {}, {}, {}, {}, {} FROM (
                     SELECT *, {kind} AS k FROM {t}{condition}
                 ) AS r WHERE k IS NOT NULL",
                by_kind("token", "token - 1", "run_token"),
                "CASE k WHEN 'u' THEN holder_id WHEN 'p' THEN prev_holder_id ELSE run_holder_id END",
                by_kind("host", "prev_host", "run_host"),
                by_kind("pid", "prev_pid", "run_pid"),
                by_kind("label", "prev_label", "run_label"),
                unix_micros(&by_kind("created", "prev_created", "run_started")),
                unix_micros(
                    "CASE k WHEN 'u' THEN expires_at WHEN 'p' THEN prev_expires_at ELSE run_ended END"
                ),
                "CASE WHEN k IN ('u', 'p') THEN 'unknown' ELSE run_outcome END",
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
            // Read only when the acquire's OK packet says that the lease it took over had a
            // holder and no run on record (a lease kept after its finished run ended as planned
            // and is not reported).
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
            // Our lease (live, or expired but not taken over) given back: LAST_INSERT_ID(token)
            // in the OK packet says that it matched. Parameters: outcome, name, holder, token.
            release: format!(
                "UPDATE {t} SET
                     {record}, run_token = LAST_INSERT_ID(token),
                     holder_id = NULL, expires_at = {FREE}
                 WHERE name = ? AND holder_id = ? AND token = ?"
            ),
            // A finish with a hold (`run --hold-at-least`): our lease kept to its acquisition
            // plus the hold when that is ahead and the lease live, else given back. `holder_id`
            // and `expires_at` each decide from the row as it was (`expires_at` is assigned
            // last), so MySQL's left-to-right assignments and MariaDB's SIMULTANEOUS_ASSIGNMENT
            // read them alike. `expires_at`'s LAST_INSERT_ID(expr) hands back what happened in
            // the OK packet: `expiry * 4 + 2` for a kept lease, 1 for one given back, 0 (not
            // evaluated) for a lease not ours. Parameters: outcome, hold, hold, hold, name,
            // holder, token.
            finish_kept: format!(
                "UPDATE {t} SET
                     {record}, run_token = token,
                     holder_id = IF({keep}, holder_id, NULL),
                     expires_at = {FREE} + INTERVAL (LAST_INSERT_ID(IF({keep},
                         {} * 4 + 2, 1)) DIV 4) MICROSECOND
                 WHERE name = ? AND holder_id = ? AND token = ?",
                unix_micros("created + INTERVAL ? MICROSECOND"),
            ),
            // After a finish that found the lease not ours: records the run's end and outcome,
            // touching nothing else, where the run on record is ours (a force-release recorded
            // it as unknown, or this finish was sent before) or where the next lease took ours
            // over, expired, and neither run is on record (ours is in `prev_*`).
            record_late: format!(
                "UPDATE {t} SET
                     run_ended = UTC_TIMESTAMP(6), run_outcome = :outcome,
                     run_holder_id = :holder_id, run_token = :token
                 WHERE name = :name
                   AND ((run_holder_id = :holder_id AND run_token = :token)
                        OR (token = :token + 1 AND prev_holder_id = :holder_id
                            AND NOT (run_token <=> token)))"
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
    pub fn of_the_run_columns(&self) -> [&str; 8] {
        [
            &self.acquire,
            &self.taken_over,
            &self.release,
            &self.finish_kept,
            &self.record_late,
            &self.last_run,
            &self.last_runs,
            &self.force_release,
        ]
    }
}
