#![cfg(feature = "etcd")]

use std::time::{Duration, Instant};

use singleton_process::conformance::Suite;
use singleton_process::{Acquire, Error, Holder};

use super::kv;
use crate::support::etcd_server;
use crate::support::proxy::Proxy;
use crate::support::{Test, history, servers, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    conforms(&etcd_server::shared().url).await;
}

/// Runs the whole conformance suite on the store at `url`, with etcd's shortest lease.
pub(super) async fn conforms(url: &str) {
    let store = singleton_process::connect(url).await.expect("connect");
    Suite::new(store)
        .short_ttl(Duration::from_secs(2))
        .run_all()
        .await;
}

#[tokio::test]
async fn etcd_store_tells_waiters() {
    let store = singleton_process::connect(&etcd_server::shared().url)
        .await
        .expect("connect");
    Suite::new(store).watchers_hear_releases().await;
}

#[test]
fn twelve_processes_five_rounds_on_etcd_never_overlap() {
    let dir = tempfile::tempdir().expect("temp dir");
    history::race(&etcd_server::shared().url, dir.path(), 12, 5);
}

#[tokio::test]
async fn list_reads_only_this_prefix_and_parses_keys_strictly() {
    let url = &etcd_server::shared().url;
    kv::list_reads_keys_strictly(
        &kv::with_fresh_prefix(url, '/'),
        &kv::with_fresh_prefix(url, '/'),
    )
    .await;
}

#[tokio::test]
async fn a_ttl_below_two_seconds_is_a_clear_error() {
    let url = &etcd_server::shared().url;
    let store = singleton_process::connect(url).await.expect("connect");
    let name = unique("short");
    let err = store
        .acquire(
            &name,
            &Holder::current("t"),
            Some(Duration::from_millis(1500)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err}");
    assert!(
        err.to_string().contains("etcd leases last at least 2s"),
        "{err}"
    );
    // 2.1 s is rounded up to a 3 s etcd lease, and works.
    let Acquire::Acquired { lease, .. } = store
        .acquire(
            &name,
            &Holder::current("t"),
            Some(Duration::from_millis(2100)),
        )
        .await
        .expect("acquire")
    else {
        panic!("{name} should be free");
    };
    store.release(&lease).await.expect("release");

    let done = Test::new()
        .store(url)
        .args(["run", "--ttl", "1s", "--name", &name, "--", "true"])
        .output();
    assert_eq!(done.code, 64, "{}", done.stderr);
    assert!(
        done.one_line().contains("etcd leases last at least 2s"),
        "{}",
        done.stderr
    );
}

#[tokio::test]
async fn renewing_an_expired_lease_is_lost() {
    let store = singleton_process::connect(&etcd_server::shared().url)
        .await
        .expect("connect");
    let name = unique("expired");
    let Acquire::Acquired { lease, .. } = store
        .acquire(&name, &Holder::current("t"), Some(Duration::from_secs(2)))
        .await
        .expect("acquire")
    else {
        panic!("{name} should be free");
    };
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let err = store
        .renew(&lease, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Lost { .. }), "{err}");
}

#[test]
fn an_unreachable_endpoint_is_one_line_within_the_connect_timeout() {
    let url = format!(
        "etcd://user:pw-123@127.0.0.1:{}?connect_timeout=2s",
        servers::free_port()
    );
    let started = Instant::now();
    let done = Test::new().store(&url).args(["exists", "x"]).output();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    done.assert_one_line_failure(69, "pw-123", &["etcd://user:***@127.0.0.1", "connect"]);
}

#[tokio::test]
async fn bad_urls_are_refused() {
    for url in [
        "etcd://",
        "etcd://h:1/path",
        "etcd://h:1?bogus=1",
        "etcd://h:1?connect_timeout=0s",
        "etcd://h:1?allow_unsafe_version=yes",
        "etcd://h:1?allow_unsafe_version",
    ] {
        let err = singleton_process::connect(url).await.unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
    }
}

/// The version of the installed `etcd`, as `etcd --version` prints it.
fn installed_etcd_version() -> String {
    let out = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .expect("etcd --version (apt-get install etcd-server)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("etcd Version: "))
        .unwrap_or_else(|| panic!("no version in `etcd --version`: {text}"))
        .trim()
        .to_owned()
}

/// Debian's etcd 3.4.23 predates the fixes of etcd issue 15247 and PR 20590: the real binary
/// refuses it with one line and exit 69, and works with the explicit override.
#[test]
fn a_server_with_known_lease_bugs_is_refused_unless_allowed() {
    let address = &etcd_server::shared().address;
    let version = installed_etcd_version();
    let name = unique("old");
    let done = Test::new()
        .store(&format!("etcd://{address}"))
        .args(["status", &name])
        .output();
    assert_eq!(done.code, 69, "{}", done.stderr);
    let line = done.one_line();
    for part in [
        &format!(
            "etcd://{address}: connect failed: etcd {version} at {address} has known lease bugs"
        ),
        "etcd issue 15247",
        "etcd PR 20590",
        "3.4.38+, 3.5.23+ or 3.6.5+",
        "?allow_unsafe_version=true",
    ] {
        assert!(line.contains(part), "{part:?} missing from: {line}");
    }

    Test::new()
        .store(&format!("etcd://{address}?allow_unsafe_version=true"))
        .args(["status", &name])
        .status(0);
}

/// With several endpoints each is asked on its own client (the shared one would ask whichever
/// member its balancer picks), and an old member is refused there too.
#[tokio::test]
async fn every_member_named_in_the_url_is_checked() {
    let address = &etcd_server::shared().address;
    let url = format!("etcd://{address},{address}");
    let err = singleton_process::connect(&url).await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(
            err,
            Error::Store {
                operation: "connect",
                ..
            }
        ),
        "{message}"
    );
    assert!(
        message.contains(&format!("at {address} has known lease bugs")),
        "{message}"
    );
    let store = singleton_process::connect(&format!("{url}?allow_unsafe_version=true"))
        .await
        .expect("the override connects");
    assert_eq!(store.inspect(&unique("any")).await.expect("inspect"), None);
}

#[tokio::test]
async fn an_abandoned_request_does_not_hang_the_next() {
    let server = etcd_server::shared();
    let proxy = Proxy::start(server.server.port);
    let url = proxy.route(&server.url, server.server.port);
    super::frozen::abandoned_requests_do_not_hang_the_next(&url, &server.url, &proxy).await;
}

/// With authentication on: the right password works, a wrong one and a user without any role
/// are [`Error::Refused`].
#[tokio::test]
async fn refused_logins_and_access_are_refused() {
    use etcd_server::{NOBODY, Options, ROOT_PASSWORD, USER_PASSWORD};

    let server = etcd_server::own_with(Options {
        login: true,
        ..Options::default()
    });
    let url = |user: &str, password: &str| {
        format!(
            "etcd://{user}:{password}@{}?allow_unsafe_version=true",
            server.address
        )
    };
    let store = singleton_process::connect(&url("root", ROOT_PASSWORD))
        .await
        .expect("the right password works");
    let name = unique("auth");
    let Acquire::Acquired { lease, .. } = store
        .acquire(&name, &Holder::current("t"), Some(Duration::from_secs(5)))
        .await
        .expect("acquire")
    else {
        panic!("{name} should be free");
    };
    store.release(&lease).await.expect("release");
    for (user, password) in [("root", "wrong-pw"), (NOBODY, USER_PASSWORD)] {
        let err = singleton_process::connect(&url(user, password))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refused {
                    operation: "connect",
                    ..
                }
            ),
            "{user}: {err:?}"
        );
    }
}
