//! The PostgreSQL store's SQL: every statement an operation runs, built once from the
//! validated table names. docs/postgres.md says why each is safe.

/// The lease row's columns in the order every statement returns them.
const LEASE_COLUMNS: &str = "token, holder_id, host, pid, label, created, expires_at";

/// True when the row is held and unexpired by the server's clock.
const LIVE: &str = "holder_id IS NOT NULL AND (expires_at IS NULL OR expires_at > now())";

/// The statements, built once from the validated, quoted table names.
#[derive(Debug)]
pub(super) struct Statements {
    pub create: String,
    pub acquire_free: String,
    pub acquire: String,
    pub renew: String,
    pub release: String,
    pub release_quietly: String,
    pub inspect: String,
    pub list: String,
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
        // Each with the notification in RETURNING, and without it for when that fails.
        let release = |returning: &str| {
            format!(
                "UPDATE {t} SET holder_id = NULL, expires_at = NULL
                 WHERE name = $1 AND holder_id = $2 AND token = $3
                 RETURNING {returning}"
            )
        };
        let force_release = |and_returning: &str| {
            format!(
                "UPDATE {t} AS l SET holder_id = NULL, expires_at = NULL
                 FROM (SELECT name, {LEASE_COLUMNS}, {LIVE} AS live FROM {t}
                       WHERE name = $1 AND holder_id IS NOT NULL FOR UPDATE) AS old
                 WHERE l.name = old.name
                 RETURNING old.token, old.holder_id, old.host, old.pid, old.label, old.created,
                           old.expires_at, old.live{and_returning}"
            )
        };
        // $6 is the lease length in microseconds; NULL makes expires_at NULL: never expires.
        let expiry = "now() + $6::bigint * interval '1 microsecond'";
        Statements {
            create: format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                     name       text COLLATE \"C\" PRIMARY KEY, -- byte-for-byte comparison
                     token      bigint NOT NULL,       -- fencing counter; survives release
                     holder_id  text,                  -- NULL while the name is free
                     host       text NOT NULL,
                     pid        bigint NOT NULL,
                     label      text NOT NULL,
                     created    timestamptz NOT NULL,  -- server clock
                     expires_at timestamptz            -- server clock; NULL: never expires
                 );
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
            // Takes a released row (no holder to report) without locking it first. A plain
            // UPDATE re-evaluates its condition and token + 1 on the newest version should the
            // row change under it.
            acquire_free: format!(
                "UPDATE {t}
                 SET token = token + 1, holder_id = $2, host = $3, pid = $4, label = $5,
                     created = now(), expires_at = {expiry}
                 WHERE name = $1 AND holder_id IS NULL
                 RETURNING token, created, expires_at"
            ),
            acquire: format!(
                "WITH old AS (
                     SELECT {LEASE_COLUMNS}, {LIVE} AS live FROM {t} WHERE name = $1 FOR UPDATE
                 ), taken AS (
                     UPDATE {t} AS l
                     SET token = old.token + 1, holder_id = $2, host = $3, pid = $4, label = $5,
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
                        old.expires_at, old.live
                 FROM (VALUES (1)) AS one (x) LEFT JOIN new ON true LEFT JOIN old ON true"
            ),
            renew: format!(
                "UPDATE {t}
                 SET expires_at = CASE WHEN expires_at IS NULL THEN NULL
                                       ELSE now() + $4::bigint * interval '1 microsecond' END
                 WHERE name = $1 AND holder_id = $2 AND token = $3
                   AND (expires_at IS NULL OR expires_at > now())
                 RETURNING expires_at"
            ),
            // RETURNING runs the notification for a row the UPDATE changed only.
            release: release(&notify("$1")),
            release_quietly: release("name"),
            inspect: format!("SELECT {LEASE_COLUMNS} FROM {t} WHERE name = $1 AND {LIVE}"),
            list: format!("SELECT {LEASE_COLUMNS}, name FROM {t} WHERE {LIVE} ORDER BY name"),
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
    pub fn all(&self) -> [&str; 12] {
        [
            &self.acquire_free,
            &self.acquire,
            &self.renew,
            &self.release,
            &self.release_quietly,
            &self.inspect,
            &self.list,
            &self.force_release,
            &self.force_release_quietly,
            &self.wait,
            &self.floor_insert,
            &self.floor_delete,
        ]
    }
}
