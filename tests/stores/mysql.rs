//! The MySQL (MariaDB) store against a real server.

use singleton_process::conformance::Suite;
use singleton_process::{Acquire, Holder};

use super::must_acquire;
use crate::support::mariadb_server::shared;
use crate::support::proxy::Proxy;
use crate::support::{history, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_store_conforms() {
    let store = singleton_process::connect(&shared().url())
        .await
        .expect("connect");
    Suite::new(store).run_all().await;
}

#[test]
fn twelve_processes_five_rounds_on_mysql_never_overlap() {
    let dir = tempfile::tempdir().expect("temp dir");
    history::race(&shared().url(), dir.path(), 12, 5);
}

#[tokio::test]
async fn a_table_from_the_url_is_created_and_used() {
    let table = unique("custom").replace('-', "_");
    let url = format!("{}&table={table}", shared().url());
    let store = singleton_process::connect(&url).await.expect("connect");
    let name = unique("custom-table");
    let Acquire::Acquired { lease, .. } = store
        .acquire(&name, &Holder::current("t"), None)
        .await
        .unwrap()
    else {
        panic!("a new table has no holders");
    };
    let default = singleton_process::connect(&shared().url())
        .await
        .expect("connect");
    assert!(
        default.inspect(&name).await.unwrap().is_none(),
        "tables must be separate"
    );
    assert!(store.inspect(&name).await.unwrap().is_some());
    store.release(&lease).await.unwrap();
    store
        .benchmark_floor(&unique("floor"))
        .await
        .expect("benchmark floor");
}

#[test]
fn a_wrong_password_is_one_masked_line() {
    super::sql::wrong_password_is_one_masked_line(
        &shared().url_with("wrong-secret"),
        "wrong-secret",
    );
}

#[test]
fn unreachable_hosts_fail_within_the_connect_timeout() {
    super::sql::unreachable_hosts_fail_within_the_connect_timeout(|port| {
        format!("mysql://singleton:secret@127.0.0.1:{port}/singleton_test")
    });
}

#[test]
fn bad_table_names_are_refused() {
    super::sql::bad_table_names_are_refused(&shared().url());
}

#[tokio::test]
async fn a_never_expiring_lease_renews() {
    let store = singleton_process::connect(&shared().url())
        .await
        .expect("connect");
    super::sql::never_expiring_lease_renews(store).await;
}

#[tokio::test]
async fn a_table_of_another_shape_is_reported() {
    use mysql_async::prelude::Queryable;
    let mut conn = mysql_async::Conn::from_url(shared().raw_url())
        .await
        .expect("connect");
    let table = unique("shape").replace('-', "_");
    conn.query_drop(format!(
        "CREATE TABLE {table} (name VARBINARY(255) PRIMARY KEY, owner TEXT)"
    ))
    .await
    .expect("create a foreign table");
    drop(conn);
    super::sql::a_table_of_another_shape_is_reported(&shared().url(), &table).await;
}

#[tokio::test]
async fn an_abandoned_request_does_not_hang_the_next() {
    let port = shared().server.port;
    let proxy = Proxy::start(port);
    let url = proxy.route(&shared().url(), port);
    super::frozen::abandoned_requests_do_not_hang_the_next(&url, &shared().url(), &proxy).await;
}

#[tokio::test]
async fn refused_logins_and_access_are_refused() {
    use mysql_async::prelude::Queryable;
    super::sql::wrong_password_is_refused(&shared().url_with("wrong-secret")).await;
    // A user that may log in, but has no privilege on the database.
    let mut conn = mysql_async::Conn::from_url(shared().raw_url())
        .await
        .expect("connect");
    let user = unique("outsider").replace('-', "_");
    conn.query_drop(format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'outsider-pw'"
    ))
    .await
    .expect("create a user");
    drop(conn);
    let url = format!(
        "mysql://{user}:outsider-pw@127.0.0.1:{}/{}?connect_timeout=30s",
        shared().server.port,
        crate::support::mariadb_server::DATABASE
    );
    super::sql::no_access_is_refused(&url).await;
}

/// Runs `statements` on the test database, as its admin.
async fn run_sql(statements: &[String]) {
    use mysql_async::prelude::Queryable;
    let mut conn = mysql_async::Conn::from_url(shared().raw_url())
        .await
        .expect("connect");
    for statement in statements {
        conn.query_drop(statement).await.expect(statement);
    }
    conn.disconnect().await.expect("disconnect");
}

/// The lease table as the previous version created it, without the columns of the last run,
/// with a live and an expired lease in it: connecting adds the columns (MySQL 8.0 has no `ADD
/// COLUMN IF NOT EXISTS`, so several processes at once meet a duplicate), and both leases go
/// on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_the_previous_version_keeps_working() {
    let table = unique("previous").replace('-', "_");
    let (live, expired) = (unique("previous-live"), unique("previous-expired"));
    let old = super::sql::OLD_HOLDER;
    run_sql(&[
        format!(
            "CREATE TABLE `{table}` (
                 name            VARBINARY(255) NOT NULL PRIMARY KEY,
                 token           BIGINT UNSIGNED NOT NULL,
                 holder_id       VARBINARY(255) NULL,
                 host            VARBINARY(255) NOT NULL,
                 pid             BIGINT UNSIGNED NOT NULL,
                 label           BLOB NOT NULL,
                 created         DATETIME(6) NOT NULL,
                 expires_at      DATETIME(6) NULL,
                 prev_holder_id  VARBINARY(255) NULL,
                 prev_host       VARBINARY(255) NULL,
                 prev_pid        BIGINT UNSIGNED NULL,
                 prev_label      BLOB NULL,
                 prev_created    DATETIME(6) NULL,
                 prev_expires_at DATETIME(6) NULL
             ) ENGINE = InnoDB"
        ),
        format!(
            "INSERT INTO `{table}` (name, token, holder_id, host, pid, label, created, expires_at)
             VALUES ('{live}', 7, '{old}', 'old-host', 42, 'old job',
                     UTC_TIMESTAMP(6) - INTERVAL 1 MINUTE, UTC_TIMESTAMP(6) + INTERVAL 1 HOUR),
                    ('{expired}', 3, '{old}', 'old-host', 43, 'old job',
                     UTC_TIMESTAMP(6) - INTERVAL 2 MINUTE, UTC_TIMESTAMP(6) - INTERVAL 1 MINUTE)"
        ),
    ])
    .await;
    let url = format!("{}&table={table}", shared().url());
    super::sql::a_table_of_the_previous_version_keeps_working(&url, &live, &expired).await;
}

#[tokio::test]
async fn a_bad_stored_outcome_is_a_store_error() {
    let table = unique("outcome").replace('-', "_");
    let store = singleton_process::connect(&format!("{}&table={table}", shared().url()))
        .await
        .expect("connect");
    let name = unique("bad-outcome");
    let lease = must_acquire(&*store, &name).await;
    store.release(&lease).await.unwrap();
    run_sql(&[format!(
        "UPDATE `{table}` SET run_outcome = 'bogus' WHERE name = '{name}'"
    )])
    .await;
    super::sql::a_bad_stored_outcome_is_a_store_error(&*store, &name).await;
}

/// Rows as the statements of the previous release left them, which copied every detail of a
/// run into the `run_*` columns (today's leave the host, pid, label and start in the lease and
/// `prev_*` columns): a live lease whose acquire recorded the lease it took over as unknown,
/// and a released one. Both read the same, and the late finish of the lease taken over still
/// sets its outcome.
#[tokio::test]
async fn runs_recorded_by_the_previous_statements_read_the_same() {
    use singleton_process::{FencingToken, Finish, Lease, Outcome, Released};
    use std::time::SystemTime;

    let table = unique("recorded").replace('-', "_");
    let store = singleton_process::connect(&format!("{}&table={table}", shared().url()))
        .await
        .expect("connect");
    let (taken, freed) = (unique("recorded-taken"), unique("recorded-freed"));
    let old = super::sql::OLD_HOLDER;
    run_sql(&[format!(
        "INSERT INTO `{table}` (name, token, holder_id, host, pid, label, created, expires_at,
             prev_holder_id, prev_host, prev_pid, prev_label, prev_created, prev_expires_at,
             run_token, run_holder_id, run_host, run_pid, run_label, run_started, run_ended,
             run_outcome)
         VALUES ('{taken}', 5, 'new-holder', 'new-host', 2, 'new job',
                 UTC_TIMESTAMP(6) - INTERVAL 1 MINUTE, UTC_TIMESTAMP(6) + INTERVAL 1 HOUR,
                 '{old}', 'old-host', 41, 'old job', '2026-01-02 03:04:05', '2026-01-02 03:05:05',
                 4, '{old}', 'old-host', 41, 'old job', '2026-01-02 03:04:05',
                 '2026-01-02 03:05:05', 'unknown'),
                ('{freed}', 3, NULL, 'old-host', 43, 'old job',
                 '2026-01-02 03:04:05', '1970-01-01 00:00:00',
                 NULL, NULL, NULL, NULL, NULL, NULL,
                 3, '{old}', 'old-host', 43, 'old job', '2026-01-02 03:04:05',
                 '2026-01-02 03:06:05', 'exit 0')"
    )])
    .await;
    let at = |text: &str| humantime::parse_rfc3339(text).expect("a time");

    let run = store
        .last_run(&taken)
        .await
        .unwrap()
        .expect("the run taken over");
    assert_eq!(
        (
            run.token.0,
            run.holder.id.as_str(),
            run.holder.host.as_str()
        ),
        (4, old, "old-host")
    );
    assert_eq!((run.holder.pid, run.holder.label.as_str()), (41, "old job"));
    assert_eq!(
        (run.started, run.ended, run.outcome),
        (
            at("2026-01-02T03:04:05Z"),
            Some(at("2026-01-02T03:05:05Z")),
            Outcome::Unknown
        )
    );
    let late = Lease {
        name: taken.clone(),
        holder: run.holder.clone(),
        token: FencingToken(4),
        created: SystemTime::now(),
        expires: None,
    };
    assert_eq!(
        store
            .finish(&late, &Finish::release(Outcome::Lost))
            .await
            .unwrap(),
        Released::NotHeld
    );
    let run = store
        .last_run(&taken)
        .await
        .unwrap()
        .expect("the run taken over");
    assert_eq!((run.token.0, run.outcome), (4, Outcome::Lost));
    let live = store
        .inspect(&taken)
        .await
        .unwrap()
        .expect("the live lease");
    assert_eq!((live.token.0, live.holder.id.as_str()), (5, "new-holder"));

    let run = store
        .last_run(&freed)
        .await
        .unwrap()
        .expect("the released run");
    assert_eq!(
        (
            run.token.0,
            run.holder.id.as_str(),
            run.holder.pid,
            run.outcome
        ),
        (3, old, 43, Outcome::Exit(0))
    );
    assert_eq!(run.ended, Some(at("2026-01-02T03:06:05Z")));
    let next = must_acquire(&*store, &freed).await;
    assert_eq!(next.token.0, 4, "the fencing counter carries on");
    let run = store
        .last_run(&freed)
        .await
        .unwrap()
        .expect("the released run");
    assert_eq!((run.token.0, run.holder.pid), (3, 43));
    store.release(&next).await.unwrap();
}
