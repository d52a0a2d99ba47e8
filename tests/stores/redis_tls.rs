#![cfg(feature = "redis")]
//! The Redis store over TLS, against TLS-only servers with the test certificates.

use singleton_process::conformance::Suite;

use crate::support::certs::{self, MISNAMED_HOST};
use crate::support::redis_server::{self, RedisServer, TLS_PASSWORD};
use crate::support::{Test, assert_waiter_gives_up, unique};

/// `rediss://` to `server` at `host`, trusting the test CA, with `extra` options.
fn verified(server: &RedisServer, host: &str, extra: &str) -> String {
    let ca = certs::shared().ca.display();
    server.tls_url(host, &format!("cacert={ca}{extra}"))
}

/// `&cert=…&key=…` for `pair`.
fn client(pair: &certs::Pair) -> String {
    format!("&cert={}&key={}", pair.cert.display(), pair.key.display())
}

fn run(url: &str) -> crate::support::Done {
    Test::new()
        .store(url)
        .args(["run", "--name", &unique("tls"), "--", "true"])
        .output()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_conforms() {
    let url = verified(redis_server::tls(), "127.0.0.1", "");
    let store = singleton_process::connect(&url)
        .await
        .expect("connect over TLS");
    let suite = Suite::new(store);
    suite.run_all().await;
    // Waiters hear releases over TLS too: pub/sub goes over a connection of its own.
    suite.watchers_hear_releases().await;
}

#[test]
fn run_works_over_tls_with_an_acl_user_and_with_a_client_certificate() {
    let certs = certs::shared();
    for url in [
        verified(redis_server::tls(), "localhost", ""),
        verified(redis_server::tls(), "127.0.0.1", &client(&certs.client)),
        verified(
            redis_server::tls_with_client_certificates(),
            "127.0.0.1",
            &client(&certs.client),
        ),
    ] {
        let done = run(&url);
        assert_eq!(done.code, 0, "{url}: {}", done.stderr);
    }
}

#[test]
fn each_tls_failure_is_one_line_that_names_its_cause() {
    let certs = certs::shared();
    let tls = redis_server::tls();
    let plain = redis_server::shared().server.port;
    let other_ca = format!("cacert={}", certs.other_ca.display());
    let cases = [
        (
            tls.tls_url("127.0.0.1", &other_ca),
            "not signed by a trusted CA",
        ),
        (
            verified(tls, MISNAMED_HOST, ""),
            "not valid for \"127.0.0.2\"",
        ),
        (
            verified(redis_server::tls_expired(), "127.0.0.1", ""),
            "has expired",
        ),
        (
            verified(
                tls,
                "127.0.0.1",
                &format!("&cert={}&key=/no/such/key.pem", certs.client.cert.display()),
            ),
            "cannot read the client key file /no/such/key.pem (?key)",
        ),
        (
            verified(tls, "127.0.0.1", "").replace(TLS_PASSWORD, "not-the-password"),
            "Password authentication failed",
        ),
        (
            verified(
                redis_server::tls_with_client_certificates(),
                "127.0.0.1",
                "",
            ),
            "requires a client certificate",
        ),
        (
            verified(
                redis_server::tls_with_client_certificates(),
                "127.0.0.1",
                &client(&certs.stranger),
            ),
            "refused our client certificate",
        ),
        (
            format!("rediss://127.0.0.1:{plain}?connect_timeout=1s"),
            "did not answer in TLS",
        ),
        (
            format!(
                "redis://{}?connect_timeout=1s",
                tls.url.trim_start_matches("rediss://")
            ),
            "rediss://",
        ),
    ];
    for (url, cause) in cases {
        let done = run(&url);
        eprintln!("{url}: {} {}", done.code, done.stderr);
        done.assert_one_line_failure(69, TLS_PASSWORD, &["connect", cause]);
    }
}

/// A TLS failure is a refusal: retrying cannot fix a certificate, so a waiter gives up at once.
#[test]
fn a_waiter_does_not_wait_through_a_tls_failure() {
    let other_ca = format!("cacert={}", certs::shared().other_ca.display());
    let url = redis_server::tls().tls_url("127.0.0.1", &other_ca);
    assert_waiter_gives_up(
        &url,
        std::time::Duration::from_secs(20),
        TLS_PASSWORD,
        &["not signed by a trusted CA"],
    );
}
