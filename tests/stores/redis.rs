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
    kv::assert_one_clear_line(
        &done,
        "not-the-Password",
        &["redis://:***@127.0.0.1", "connect"],
    );

    let none = format!("redis://127.0.0.1:{}", server.server.port);
    let done = Test::new().store(&none).args(["exists", "x"]).output();
    kv::assert_one_clear_line(&done, PASSWORD, &["redis://127.0.0.1", "connect"]);
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
    kv::assert_one_clear_line(&done, "pw-123", &["redis://:***@127.0.0.1", "connect"]);
}

#[tokio::test]
async fn bad_urls_are_refused() {
    for url in ["redis://h?connect_timeout=forever", "redis://h:notaport"] {
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
