#![cfg(feature = "etcd")]

//! The etcd store over TLS (`etcds://`) and with a login, against real TLS-serving etcd
//! servers and the test run's throw-away certificates.

use std::time::Duration;

use singleton_process::conformance::Suite;

use super::etcd::conforms;
use crate::support::certs::{self, MISNAMED_HOST};
use crate::support::etcd_server::{self, EtcdServer, USER, USER_PASSWORD, USER_PREFIX, path};
use crate::support::{Test, assert_waiter_gives_up, held, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms_over_tls() {
    conforms(&etcd_server::tls_with_client_certificates().url).await;
}

/// Every endpoint of a several-member URL is reached in TLS (`localhost` and `127.0.0.1` both
/// name the one server, and both are in its certificate), and a waiter's watch works over it.
#[tokio::test]
async fn singleton_runs_over_tls_on_every_endpoint() {
    let server = etcd_server::tls_with_client_certificates();
    let name = unique("tls-run");
    Test::new()
        .store(&server.url)
        .args(["run", "--name", &name, "--", "true"])
        .status(0);
    let port = server.server.port;
    let both = server.url.replace(
        &server.address,
        &format!("127.0.0.1:{port},localhost:{port}"),
    );
    Test::new()
        .store(&both)
        .args(["run", "--name", &name, "--", "true"])
        .status(0);
    let store = singleton_process::connect(&both).await.expect("connect");
    Suite::new(store).watchers_hear_releases().await;
}

/// `singleton run --wait` with `url`: it must give up at once (trying again will not help)
/// on a failure to connect that names `cause`.
fn gives_up_at_once(url: &str, secret: &str, cause: &[&str]) {
    let mut expect = vec!["connect failed"];
    expect.extend(cause);
    assert_waiter_gives_up(url, Duration::from_secs(15), secret, &expect);
}

/// `server`'s URL with a login and `params` instead of its own TLS files.
fn with(server: &EtcdServer, host: &str, params: &str) -> String {
    let port = server.server.port;
    format!(
        "etcds://u:pw-secret@{host}:{port}?allow_unsafe_version=true&connect_timeout=5s{params}"
    )
}

fn ca() -> String {
    format!("&cacert={}", path(&certs::shared().ca))
}

fn client(pair: &certs::Pair) -> String {
    format!("&cert={}&key={}", path(&pair.cert), path(&pair.key))
}

#[test]
fn tls_to_a_plaintext_port_is_refused() {
    let plain = etcd_server::shared();
    let url = with(plain, "127.0.0.1", &ca());
    gives_up_at_once(&url, "pw-secret", &["did not answer in TLS"]);
}

#[test]
fn plaintext_to_a_tls_port_suggests_etcds() {
    let server = etcd_server::tls_with_client_certificates();
    let url = format!(
        "etcd://u:pw-secret@{}?allow_unsafe_version=true&connect_timeout=5s",
        server.address
    );
    gives_up_at_once(
        &url,
        "pw-secret",
        &["the server answers in TLS, not plaintext: write etcds://"],
    );
}

#[test]
fn an_unknown_ca_is_refused() {
    let server = etcd_server::tls_with_client_certificates();
    let certs = certs::shared();
    let url = with(
        server,
        "127.0.0.1",
        &format!("&cacert={}{}", path(&certs.other_ca), client(&certs.client)),
    );
    gives_up_at_once(
        &url,
        "pw-secret",
        &[
            "TLS: the server's certificate is not signed by a trusted CA",
            "?cacert=",
        ],
    );
    // Without ?cacert=, the system's CAs, which do not know the test CA either.
    let url = with(server, "127.0.0.1", &client(&certs.client));
    gives_up_at_once(&url, "pw-secret", &["not signed by a trusted CA", "system"]);
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let server = etcd_server::tls_with_client_certificates();
    let url = with(
        server,
        MISNAMED_HOST,
        &format!("{}{}", ca(), client(&certs::shared().client)),
    );
    gives_up_at_once(
        &url,
        "pw-secret",
        &[
            &format!("TLS: the server's certificate is not valid for \"{MISNAMED_HOST}\""),
            "(it names localhost, 127.0.0.1); connect by a name it lists",
        ],
    );
}

#[test]
fn an_expired_server_certificate_is_refused() {
    let server = etcd_server::tls_expired();
    gives_up_at_once(
        &with(server, "127.0.0.1", &ca()),
        "pw-secret",
        &["TLS: the server's certificate has expired"],
    );
}

#[test]
fn an_unreadable_key_file_is_refused_before_connecting() {
    let server = etcd_server::tls_with_client_certificates();
    let client = &certs::shared().client;
    let params = format!(
        "{}&cert={}&key=/no/such/client.key",
        ca(),
        path(&client.cert)
    );
    gives_up_at_once(
        &with(server, "127.0.0.1", &params),
        "pw-secret",
        &["cannot read the client key file /no/such/client.key (?key)"],
    );
}

#[test]
fn a_server_that_wants_a_client_certificate_refuses_none_and_a_strangers() {
    let server = etcd_server::tls_with_client_certificates();
    gives_up_at_once(
        &with(server, "127.0.0.1", &ca()),
        "pw-secret",
        &["TLS: the server requires a client certificate", "?cert="],
    );
    let stranger = client(&certs::shared().stranger);
    gives_up_at_once(
        &with(server, "127.0.0.1", &format!("{}{stranger}", ca())),
        "pw-secret",
        &["TLS: the server refused our client certificate"],
    );
}

#[test]
fn tls_files_on_a_plaintext_url_are_a_usage_error() {
    let url = format!(
        "etcd://u:pw-secret@{}?cacert={}",
        etcd_server::shared().address,
        path(&certs::shared().ca)
    );
    Test::new()
        .store(&url)
        .args(["exists", "x"])
        .output()
        .assert_one_line_failure(64, "pw-secret", &["write etcds://"]);
}

/// `etcds://user:password@…` on the TLS server with authentication on.
fn login_url(user: &str, password: &str) -> String {
    let server = etcd_server::tls_with_login();
    format!(
        "etcds://{user}:{password}@{}?allow_unsafe_version=true{}&prefix={USER_PREFIX}{}/",
        server.address,
        ca(),
        unique("p")
    )
}

/// A user whose role may use the prefix logs in over TLS and passes the conformance suite (its
/// auth token lapses after 2 s unused, so the suite's pauses make it log in again, too); a
/// wrong password is refused at once, with one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_work_over_tls() {
    let url = login_url(USER, USER_PASSWORD);
    conforms(&url).await;
    Test::new()
        .store(&url)
        .args(["run", "--name", &unique("login"), "--", "true"])
        .status(0);

    gives_up_at_once(
        &login_url(USER, "wrong-pw-secret"),
        "wrong-pw-secret",
        &["authentication failed"],
    );
}

/// A lease held through several lifetimes of its auth token (2 s unused; renewals come every
/// 3 s) is renewed throughout: the client logs in again when etcd calls the token invalid,
/// and neither the holder nor a second client ever sees the lease lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_auth_token_is_refreshed_on_a_long_hold() {
    let url = login_url(USER, USER_PASSWORD);
    let server = etcd_server::tls_with_login();

    // The server really lets a token lapse after 2 s unused.
    let ca = std::fs::read(&certs::shared().ca).expect("read the CA");
    let options = etcd_client::ConnectOptions::new()
        .with_user(USER, USER_PASSWORD)
        .with_tls(
            etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca)),
        );
    let mut raw =
        etcd_client::Client::connect([format!("https://{}", server.address)], Some(options))
            .await
            .expect("log in");
    raw.get(USER_PREFIX, None)
        .await
        .expect("a fresh token works");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lapsed = raw.get(USER_PREFIX, None).await.unwrap_err().to_string();
    assert!(lapsed.contains("invalid auth token"), "{lapsed}");

    let name = unique("token");
    let mut holder = Test::new()
        .store(&url)
        .args(["run", "--ttl", "9s", "--name", &name, "--", "sleep", "14"])
        .spawn();
    holder.wait_held(&url, &name);
    let watcher = url.clone();
    let checks = tokio::task::spawn_blocking(move || {
        for _ in 0..4 {
            // Sleeps longer than a token lives, so the checker's own tokens lapse too.
            std::thread::sleep(Duration::from_millis(2500));
            assert!(held(&watcher, &name), "{name} should still be held");
        }
    });
    checks
        .await
        .expect("the second client saw the lease held throughout");
    let done = holder.finish(Duration::from_secs(20));
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert!(!done.stderr.contains("lost"), "{}", done.stderr);
}
