//! The PostgreSQL store against a real server.

use std::time::Duration;

use singleton_process::conformance::Suite;
use singleton_process::{Acquire, Holder, Released};
use tokio_postgres::{AsyncMessage, NoTls};

use super::must_acquire;
use crate::support::postgres_server::shared;
use crate::support::proxy::Proxy;
use crate::support::{history, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    let store = singleton_process::connect(&shared().url())
        .await
        .expect("connect");
    Suite::new(store).run_all().await;
}

#[tokio::test]
async fn postgres_store_tells_waiters() {
    let store = singleton_process::connect(&shared().url())
        .await
        .expect("connect");
    let suite = Suite::new(store);
    suite.watchers_hear_releases().await;
    suite.watchers_hear_acquires().await;
}

/// An acquire and a release notify (and so take PostgreSQL's commit-time notification lock)
/// only when somebody waits for the name.
#[tokio::test]
async fn acquires_and_releases_notify_only_names_somebody_waits_for() {
    let store = singleton_process::connect(&shared().url())
        .await
        .expect("connect");
    // A bare listener on the table's channel, which registers no wait of its own.
    let (client, mut connection) = tokio_postgres::connect(&shared().raw_url(), NoTls)
        .await
        .expect("connect the bare listener");
    let (heard, mut notices) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let AsyncMessage::Notification(notice) = message {
                let _ = heard.send(notice.payload().to_owned());
            }
        }
    });
    client
        .batch_execute("LISTEN \"singleton_locks\"")
        .await
        .expect("LISTEN");
    let name = unique("notify");
    let cycle = || async {
        let lease = must_acquire(&*store, &name).await;
        store.release(&lease).await.unwrap();
    };
    // The payloads that name ours: the name alone from a release, the name and more from an
    // acquire.
    let heard_name = |notices: &mut tokio::sync::mpsc::UnboundedReceiver<String>| {
        let mut heard = Vec::new();
        while let Ok(payload) = notices.try_recv() {
            if payload.split('\t').next() == Some(name.as_str()) {
                heard.push(payload);
            }
        }
        heard
    };
    cycle().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let heard = heard_name(&mut notices);
    assert!(
        heard.is_empty(),
        "a cycle nobody waited for notified: {heard:?}"
    );
    let _waiting = store.watch(&name).await.unwrap().expect("postgres watches");
    cycle().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let heard = heard_name(&mut notices);
    assert_eq!(
        heard.len(),
        2,
        "an acquire and a release somebody waits for notify once each: {heard:?}"
    );
    assert_eq!(heard[1], name, "the release notifies the name alone");
}

/// An acquire and a release whose notification fails still take effect: here the waiters
/// table is gone.
#[tokio::test]
async fn a_failed_notification_does_not_fail_the_acquire_or_the_release() {
    let table = unique("quiet").replace('-', "_");
    let store = singleton_process::connect(&format!("{}&table={table}", shared().url()))
        .await
        .expect("connect");
    let (client, connection) = tokio_postgres::connect(&shared().raw_url(), NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP TABLE \"{table}_waits\""))
        .await
        .expect("drop the waiters table");
    let name = unique("quiet");
    for _ in 0..2 {
        let lease = must_acquire(&*store, &name).await;
        assert_eq!(store.release(&lease).await.unwrap(), Released::Released);
    }
    must_acquire(&*store, &name).await;
    assert!(store.force_release(&name).await.unwrap().is_some());
}

#[test]
fn twelve_processes_five_rounds_on_postgres_never_overlap() {
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
        format!("postgres://postgres:secret@127.0.0.1:{port}/postgres")
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
    let (client, connection) = tokio_postgres::connect(&shared().raw_url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let table = unique("shape").replace('-', "_");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (name text PRIMARY KEY, owner text)"
        ))
        .await
        .expect("create a foreign table");
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
    super::sql::wrong_password_is_refused(&shared().url_with("wrong-secret")).await;
    // A role that may log in, but has no privilege on the lease table (created by the
    // superuser first) nor CREATE on the schema.
    singleton_process::connect(&shared().url())
        .await
        .expect("connect");
    let (client, connection) = tokio_postgres::connect(&shared().raw_url(), NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let role = unique("outsider").replace('-', "_");
    client
        .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD 'outsider-pw'"))
        .await
        .expect("create a role");
    let url = format!(
        "postgres://{role}:outsider-pw@127.0.0.1:{}/postgres?connect_timeout=30s",
        shared().server.port
    );
    super::sql::no_access_is_refused(&url).await;
}

/// The lease table as the previous version created it, without the columns of the last run,
/// with a live and an expired lease in it: connecting adds the columns, and both leases go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_the_previous_version_keeps_working() {
    let (client, connection) = tokio_postgres::connect(&shared().raw_url(), NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let table = unique("previous").replace('-', "_");
    let (live, expired) = (unique("previous-live"), unique("previous-expired"));
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (
                 name       text COLLATE \"C\" PRIMARY KEY,
                 token      bigint NOT NULL,
                 holder_id  text,
                 host       text NOT NULL,
                 pid        bigint NOT NULL,
                 label      text NOT NULL,
                 created    timestamptz NOT NULL,
                 expires_at timestamptz
             );
             INSERT INTO \"{table}\" VALUES
                 ('{live}', 7, '{old}', 'old-host', 42, 'old job',
                  now() - interval '1 minute', now() + interval '1 hour'),
                 ('{expired}', 3, '{old}', 'old-host', 43, 'old job',
                  now() - interval '2 minutes', now() - interval '1 minute')",
            old = super::sql::OLD_HOLDER
        ))
        .await
        .expect("create a table of the previous version");
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
    let (client, connection) = tokio_postgres::connect(&shared().raw_url(), NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .execute(
            &format!("UPDATE \"{table}\" SET run_outcome = 'bogus' WHERE name = $1"),
            &[&name],
        )
        .await
        .expect("spoil the outcome");
    super::sql::a_bad_stored_outcome_is_a_store_error(&*store, &name).await;
}
