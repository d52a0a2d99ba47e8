#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use singleton_process::conformance::Suite;
use singleton_process::{Acquire, Error, Holder};

use super::kv;
use crate::support::proxy::Proxy;
use crate::support::redis_server::{self, PASSWORD};
use crate::support::{Test, history, servers, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conforms() {
    let store = singleton_process::connect(&redis_server::shared().url)
        .await
        .expect("connect");
    Suite::new(store).run_all().await;
}

#[tokio::test]
async fn redis_store_tells_waiters() {
    let store = singleton_process::connect(&redis_server::shared().url)
        .await
        .expect("connect");
    Suite::new(store).watchers_hear_releases().await;
}

#[test]
fn twelve_processes_five_rounds_on_redis_never_overlap() {
    let dir = tempfile::tempdir().expect("temp dir");
    history::race(&redis_server::shared().url, dir.path(), 12, 5);
}

#[tokio::test]
async fn list_reads_only_this_prefix_and_parses_keys_strictly() {
    let url = &redis_server::shared().url;
    kv::list_reads_keys_strictly(
        &kv::with_fresh_prefix(url, ':'),
        &kv::with_fresh_prefix(url, ':'),
    )
    .await;
}

#[tokio::test]
async fn renewing_an_expired_lease_is_lost() {
    let store = singleton_process::connect(&redis_server::shared().url)
        .await
        .expect("connect");
    let name = unique("expired");
    let Acquire::Acquired { lease, .. } = store
        .acquire(
            &name,
            &Holder::current("t"),
            Some(Duration::from_millis(100)),
        )
        .await
        .expect("acquire")
    else {
        panic!("{name} should be free");
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    let err = store
        .renew(&lease, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Lost { .. }), "{err}");
    assert!(store.inspect(&name).await.expect("inspect").is_none());
}

#[test]
fn the_right_password_works_and_a_wrong_one_is_one_masked_line() {
    let server = redis_server::with_password();
    Test::new()
        .store(&server.url)
        .args(["exists", &unique("pw")])
        .status(1);

    let wrong = server.url.replace(PASSWORD, "not-the-Password");
    let done = Test::new().store(&wrong).args(["exists", "x"]).output();
    done.assert_one_line_failure(
        69,
        "not-the-Password",
        &["redis://:***@127.0.0.1", "connect"],
    );

    let none = format!("redis://127.0.0.1:{}", server.server.port);
    let done = Test::new().store(&none).args(["exists", "x"]).output();
    done.assert_one_line_failure(69, PASSWORD, &["redis://127.0.0.1", "connect"]);
}

#[test]
fn an_unreachable_server_is_one_line_within_the_connect_timeout() {
    let url = format!(
        "redis://:pw-123@127.0.0.1:{}?connect_timeout=2s",
        servers::free_port()
    );
    let started = Instant::now();
    let done = Test::new().store(&url).args(["exists", "x"]).output();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    done.assert_one_line_failure(69, "pw-123", &["redis://:***@127.0.0.1", "connect"]);
}

#[tokio::test]
async fn bad_urls_are_refused() {
    for url in [
        "redis://h?connect_timeout=forever",
        "redis://h:notaport",
        // TLS files on a plaintext URL: never quietly plaintext.
        "redis://h?cacert=/etc/ssl/ca.pem",
        "rediss://h?cert=/c.pem",
    ] {
        let err = singleton_process::connect(url).await.unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
    }
}

#[tokio::test]
async fn an_abandoned_request_does_not_hang_the_next() {
    let server = redis_server::shared();
    let proxy = Proxy::start(server.server.port);
    let url = proxy.route(&server.url, server.server.port);
    super::frozen::abandoned_requests_do_not_hang_the_next(&url, &server.url, &proxy).await;
}

/// A wrong password, a missing one and a user whom an ACL keeps from our keys are each
/// [`Error::Refused`], which a waiter does not wait through.
#[tokio::test]
async fn refused_logins_and_access_are_refused() {
    let server = redis_server::with_password();
    let port = server.server.port;
    for url in [
        server.url.replace(PASSWORD, "not-the-Password"),
        format!("redis://127.0.0.1:{port}"),
    ] {
        let err = singleton_process::connect(&url).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refused {
                    operation: "connect",
                    ..
                }
            ),
            "{url}: {err:?}"
        );
    }
    // A user who may log in and run every command, but only on other keys.
    let admin = redis::Client::open(server.url.as_str()).expect("client");
    let mut admin = admin
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let user = unique("outsider");
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">outsider-pw")
        .arg("~other:*")
        .arg("+@all")
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let store = singleton_process::connect(&format!("redis://{user}:outsider-pw@127.0.0.1:{port}"))
        .await
        .expect("the user may log in");
    let err = store
        .acquire(
            &unique("acl"),
            &Holder::current("t"),
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                operation: "acquire",
                ..
            }
        ),
        "{err:?}"
    );
}
