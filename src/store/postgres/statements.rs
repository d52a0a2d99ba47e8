//! The PostgreSQL store's SQL: every statement an operation runs, built once from the
//! validated table names. docs/postgres.md says why each is safe.

/// The lease row's columns in the order every statement returns them.
const LEASE_COLUMNS: &str = "token, holder_id, host, pid, label, created, expires_at";

/// True when the row is held and unexpired by the server's clock.
const LIVE: &str = "holder_id IS NOT NULL AND (expires_at IS NULL OR expires_at > now())";

/// The columns of the last run on record, added to tables of the previous version at connect.
const RUN_COLUMNS: [(&str, &str); 8] = [
    ("run_token", "bigint"),
    ("run_holder_id", "text"),
    ("run_host", "text"),
    ("run_pid", "bigint"),
    ("run_label", "text"),
    ("run_started", "timestamptz"),
    ("run_ended", "timestamptz"),
    ("run_outcome", "text"),
];

/// True when the row (`l`, say) holds a lease whose run is not on record: a run still going,
/// or one that ended without a word (expired), rather than one kept after its finish.
fn unrecorded(l: &str) -> String {
    format!(
        "{l}.holder_id IS NOT NULL AND ({l}.run_token IS DISTINCT FROM {l}.token
                                       OR {l}.run_holder_id IS DISTINCT FROM {l}.holder_id)"
    )
}

/// The assignments that record row `l`'s lease as its last run, ended at `ended` with an
/// unknown outcome, when `record` is true, and keep the record otherwise.
fn record_unknown(l: &str, record: &str, ended: &str) -> String {
    [
        ("run_token", format!("{l}.token")),
        ("run_holder_id", format!("{l}.holder_id")),
        ("run_host", format!("{l}.host")),
        ("run_pid", format!("{l}.pid")),
        ("run_label", format!("{l}.label")),
        ("run_started", format!("{l}.created")),
        ("run_ended", ended.to_owned()),
        ("run_outcome", "'unknown'".to_owned()),
    ]
    .iter()
    .map(|(column, value)| {
        format!("{column} = CASE WHEN {record} THEN {value} ELSE {l}.{column} END")
    })
    .collect::<Vec<_>>()
    .join(",\n    ")
}

/// The statements, built once from the validated, quoted table names.
#[derive(Debug)]
pub(super) struct Statements {
    pub create: String,
    pub acquire_free: String,
    pub acquire_free_quietly: String,
    pub acquire: String,
    pub acquire_quietly: String,
    pub renew: String,
    pub release: String,
    pub release_quietly: String,
    pub finish: String,
    pub finish_quietly: String,
    pub inspect: String,
    pub list: String,
    pub last_run: String,
    pub last_runs: String,
    pub force_release: String,
    pub force_release_quietly: String,
    pub wait: String,
    pub floor_insert: String,
    pub floor_delete: String,
}

impl Statements {
    pub fn new(table: &str, scratch: &str, waiters: &str) -> Self {
        let t = format!("\"{table}\"");
        let s = format!("\"{scratch}\"");
        let w = format!("\"{waiters}\"");
        // Tells the waiters listening on the table's channel (see `watch`) that `name` was
        // freed, if any have said they wait for it: NULL otherwise, and no notification,
        // whose commit-time lock would make releases of all names on the server take turns.
        let notify = |name: &str| {
            format!(
                "(SELECT pg_notify('{table}', {name})::text FROM {w}
                  WHERE {w}.name = {name} AND until > now())"
            )
        };
        // Tells them that `name` was just taken, until `expires` (NULL: never), which lets
        // those who have not tried yet leave it: the name, a tab, `taken`, a tab and the
        // expiry in microseconds since the epoch (a name has no control characters, so no
        // release's notification reads so).
        let notify_taken = |name: &str, expires: &str| {
            format!(
                "(SELECT pg_notify('{table}', {name} || E'\\ttaken\\t' || coalesce(
                          (extract(epoch FROM {expires}) * 1000000)::bigint::text, ''))::text
                  FROM {w} WHERE {w}.name = {name} AND until > now())"
            )
        };
        // $2 and $3 are our holder id and token, $4 the outcome, $5 the hold after the
        // acquisition in microseconds (NULL: none). All assignments read the row as it was.
        // (Never NULL, which would pick the wrong branch of a CASE.)
        let ours = "holder_id IS NOT DISTINCT FROM $2 AND token = $3";
        let kept_until = "created + $5::bigint * interval '1 microsecond'";
        let keep = format!("$5::bigint IS NOT NULL AND {LIVE} AND {kept_until} > now()");
        // A lease given back has expires_at = now(), the run's end: that tells it apart from a
        // row that another finish, a force-release (NULL) or an acquire freed before.
        let finish = |and_notify: &str| {
            let run = |column: &str, value: &str| {
                format!("{column} = CASE WHEN {ours} THEN {value} ELSE {column} END")
            };
            format!(
                "UPDATE {t} SET
                     run_token = $3, run_holder_id = $2,
                     {}, {}, {}, {},
                     run_ended = now(), run_outcome = $4,
                     holder_id = CASE WHEN {ours} AND NOT ({keep}) THEN NULL ELSE holder_id END,
                     expires_at = CASE WHEN NOT ({ours}) THEN expires_at
                                       WHEN {keep} THEN {kept_until} ELSE now() END
                 WHERE name = $1 AND ({ours} OR run_holder_id = $2 AND run_token = $3)
                 RETURNING CASE WHEN holder_id IS NULL AND expires_at = run_ended THEN 'released'
                                WHEN {ours} THEN 'kept' ELSE 'not held' END,
                           expires_at{and_notify}",
                run("run_host", "host"),
                run("run_pid", "pid"),
                run("run_label", "label"),
                run("run_started", "created"),
            )
        };
        // A finish without a hold of our lease (live, or expired but not taken over), the
        // common case: plain column copies and no conditions, so that it costs the server
        // little more than the release before the last run was recorded. It writes the row as
        // `finish` would. No row back: not ours, and `finish` runs to record a late outcome.
        let release = |and_notify: &str| {
            format!(
                "UPDATE {t} SET
                     run_token = token, run_holder_id = holder_id, run_host = host,
                     run_pid = pid, run_label = label, run_started = created,
                     run_ended = now(), run_outcome = $4,
                     holder_id = NULL, expires_at = now()
                 WHERE name = $1 AND holder_id = $2 AND token = $3
                 RETURNING 'released'{and_notify}"
            )
        };
        let force_release = |and_returning: &str| {
            format!(
                "UPDATE {t} AS l
                 SET {},
                     holder_id = NULL, expires_at = NULL
                 FROM (SELECT name, {LEASE_COLUMNS}, {LIVE} AS live FROM {t}
                       WHERE name = $1 AND holder_id IS NOT NULL FOR UPDATE) AS old
                 WHERE l.name = old.name
                 RETURNING old.token, old.holder_id, old.host, old.pid, old.label, old.created,
                           old.expires_at, old.live{and_returning}",
                record_unknown(
                    "l",
                    &unrecorded("l"),
                    "CASE WHEN old.live THEN now() ELSE l.expires_at END"
                ),
            )
        };
        // An expired lease nobody replaced yet reads as a run that ended, unknown how, when it
        // expired; unless it was kept after its run, which is on record then.
        let unread = "holder_id IS NOT NULL AND expires_at <= now()
                      AND (run_token IS DISTINCT FROM token OR run_holder_id IS DISTINCT FROM holder_id)";
        let last_run = |condition: &str| {
            let pick = |lease: &str, run: &str| format!("CASE WHEN u THEN {lease} ELSE {run} END");
            format!(
                "SELECT {}, {}, {}, {}, {}, {}, {}, {}, name
                 FROM {t} CROSS JOIN LATERAL (SELECT {unread} AS u) AS x
                 WHERE {condition}(u OR run_token IS NOT NULL)",
                pick("token", "run_token"),
                pick("holder_id", "run_holder_id"),
                pick("host", "run_host"),
                pick("pid", "run_pid"),
                pick("label", "run_label"),
                pick("created", "run_started"),
                pick("expires_at", "run_ended"),
                pick("'unknown'", "run_outcome"),
            )
        };
        let run_columns = RUN_COLUMNS
            .iter()
            .map(|(column, kind)| format!("{column} {kind}"))
            .collect::<Vec<_>>()
            .join(",\n                     ");
        let add_run_columns = RUN_COLUMNS
            .iter()
            .map(|(column, kind)| format!("ADD COLUMN IF NOT EXISTS {column} {kind}"))
            .collect::<Vec<_>>()
            .join(", ");
        let quoted_names = |columns: &[&str]| {
            columns
                .iter()
                .map(|column| format!("'{column}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let lease_names = quoted_names(&[
            "name",
            "token",
            "holder_id",
            "host",
            "pid",
            "label",
            "created",
            "expires_at",
        ]);
        let run_names = quoted_names(&RUN_COLUMNS.map(|(column, _)| column));
        // $6 is the lease length in microseconds; NULL makes expires_at NULL: never expires.
        let expiry = "now() + $6::bigint * interval '1 microsecond'";
        // Takes a released row (no holder to report, its run on record already) without
        // locking it first. A plain UPDATE re-evaluates its condition and token + 1 on the
        // newest version should the row change under it.
        let acquire_free = |and_notify: &str| {
            format!(
                "UPDATE {t}
                 SET token = token + 1, holder_id = $2, host = $3, pid = $4, label = $5,
                     created = now(), expires_at = {expiry}
                 WHERE name = $1 AND holder_id IS NULL
                 RETURNING token, created, expires_at{and_notify}"
            )
        };
        // Taking over an expired lease records its run as unknown, ended when it expired,
        // unless it was finished and kept.
        let acquire = |and_notify: &str| {
            format!(
                "WITH old AS (
                     SELECT {LEASE_COLUMNS}, {LIVE} AS live, {} AS unfinished
                     FROM {t} AS o WHERE name = $1 FOR UPDATE
                 ), taken AS (
                     UPDATE {t} AS l
                     SET {},
                         token = old.token + 1, holder_id = $2, host = $3, pid = $4, label = $5,
                         created = now(), expires_at = {expiry}
                     FROM old WHERE l.name = $1 AND NOT old.live
                     RETURNING l.token, l.created, l.expires_at
                 ), inserted AS (
                     INSERT INTO {t} (name, token, holder_id, host, pid, label, created, expires_at)
                     SELECT $1, 1, $2, $3, $4, $5, now(), {expiry}
                     WHERE NOT EXISTS (SELECT FROM old)
                     ON CONFLICT (name) DO NOTHING
                     RETURNING token, created, expires_at
                 ), new AS (
                     SELECT * FROM taken UNION ALL SELECT * FROM inserted
                 )
                 SELECT new.token, new.created, new.expires_at,
                        old.token, old.holder_id, old.host, old.pid, old.label, old.created,
                        old.expires_at, old.live, old.unfinished{and_notify}
                 FROM (VALUES (1)) AS one (x) LEFT JOIN new ON true LEFT JOIN old ON true",
                unrecorded("o"),
                record_unknown("l", &unrecorded("l"), "l.expires_at")
            )
        };
        Statements {
            // A table of the previous version (the lease columns only) gets the run columns;
            // looked up first, so that connecting takes no lock on the table once it has them,
            // and a table of another shape is left alone (preparing reports it).
            create: format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                     name       text COLLATE \"C\" PRIMARY KEY, -- byte-for-byte comparison
                     token      bigint NOT NULL,       -- fencing counter; survives release
                     holder_id  text,                  -- NULL while the name is free
                     host       text NOT NULL,
                     pid        bigint NOT NULL,
                     label      text NOT NULL,
                     created    timestamptz NOT NULL,  -- server clock
                     expires_at timestamptz,           -- server clock; NULL: never expires
                     -- The last run that ended: its lease's token, holder and created, when
                     -- it ended (server clock) and how; NULL until one has.
                     {run_columns}
                 );
                 DO $$ BEGIN
                     IF (SELECT count(*) FROM pg_attribute
                         WHERE attrelid = '{t}'::regclass AND NOT attisdropped
                           AND attname IN ({lease_names})) = 8
                        AND (SELECT count(*) FROM pg_attribute
                             WHERE attrelid = '{t}'::regclass AND NOT attisdropped
                               AND attname IN ({run_names})) < 8
                     THEN
                         ALTER TABLE {t} {add_run_columns};
                     END IF;
                 END $$;
                 CREATE TABLE IF NOT EXISTS {s} (
                     key     text COLLATE \"C\" PRIMARY KEY,
                     value   text NOT NULL,
                     created timestamptz NOT NULL DEFAULT now()
                 );
                 CREATE TABLE IF NOT EXISTS {w} (
                     name  text COLLATE \"C\" PRIMARY KEY,
                     until timestamptz NOT NULL   -- server clock; somebody waits until then
                 )"
            ),
            acquire_free: acquire_free(&format!(", {}", notify_taken("$1", "expires_at"))),
            acquire_free_quietly: acquire_free(""),
            acquire: acquire(&format!(
                ", CASE WHEN new.token IS NOT NULL THEN {} END",
                notify_taken("$1", "new.expires_at")
            )),
            acquire_quietly: acquire(""),
            renew: format!(
                "UPDATE {t}
                 SET expires_at = CASE WHEN expires_at IS NULL THEN NULL
                                       ELSE now() + $4::bigint * interval '1 microsecond' END
                 WHERE name = $1 AND holder_id = $2 AND token = $3
                   AND (expires_at IS NULL OR expires_at > now())
                 RETURNING expires_at"
            ),
            // RETURNING runs the notification for a lease given back only.
            finish: finish(&format!(
                ", CASE WHEN holder_id IS NULL AND expires_at = run_ended THEN {} END",
                notify("$1")
            )),
            finish_quietly: finish(""),
            release: release(&format!(", {}", notify("$1"))),
            release_quietly: release(""),
            inspect: format!("SELECT {LEASE_COLUMNS} FROM {t} WHERE name = $1 AND {LIVE}"),
            list: format!("SELECT {LEASE_COLUMNS}, name FROM {t} WHERE {LIVE} ORDER BY name"),
            last_run: last_run("name = $1 AND "),
            last_runs: format!("{} ORDER BY name", last_run("")),
            force_release: force_release(&format!(", {}", notify("l.name"))),
            force_release_quietly: force_release(""),
            // $2 in microseconds. Several waiters share the row: the latest `until` counts.
            wait: format!(
                "INSERT INTO {w} (name, until)
                 VALUES ($1, now() + $2::bigint * interval '1 microsecond')
                 ON CONFLICT (name) DO UPDATE SET until = greatest({w}.until, excluded.until)"
            ),
            floor_insert: format!("INSERT INTO {s} (key, value) VALUES ($1, $2)"),
            floor_delete: format!("DELETE FROM {s} WHERE key = $1"),
        }
    }

    /// Every statement an operation runs, prepared at connect so that a table of another shape
    /// is reported at once.
    pub fn all(&self) -> [&str; 18] {
        [
            &self.acquire_free,
            &self.acquire_free_quietly,
            &self.acquire,
            &self.acquire_quietly,
            &self.renew,
            &self.release,
            &self.release_quietly,
            &self.finish,
            &self.finish_quietly,
            &self.inspect,
            &self.list,
            &self.last_run,
            &self.last_runs,
            &self.force_release,
            &self.force_release_quietly,
            &self.wait,
            &self.floor_insert,
            &self.floor_delete,
        ]
    }
}
