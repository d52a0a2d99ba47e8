#![cfg(feature = "mongodb")]
//! The MongoDB store over TLS, against TLS-only SecantusDB servers with the test certificates.

use singleton_process::conformance::Suite;

use crate::support::certs;
use crate::support::mongodb_server::{self, Mongo};
use crate::support::{Test, unique};

/// `tls=true` to `server`, trusting the test CA, with `extra` options.
fn verified(server: &Mongo, extra: &str) -> String {
    let ca = certs::shared().ca.display();
    server.url_with(&format!("tls=true&tlsCAFile={ca}{extra}"))
}

fn run(url: &str) -> crate::support::Done {
    Test::new()
        .store(url)
        .args(["run", "--name", &unique("tls"), "--", "true"])
        .output()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_over_tls_conforms() {
    let store = singleton_process::connect(&verified(mongodb_server::tls(), ""))
        .await
        .expect("connect over TLS");
    Suite::new(store).run_all().await;
}

#[test]
fn run_works_over_tls_and_with_a_client_certificate() {
    let client = format!(
        "&tlsCertificateKeyFile={}",
        certs::shared().client.combined().display()
    );
    for url in [
        verified(mongodb_server::tls(), ""),
        verified(mongodb_server::tls_with_client_certificates(), &client),
    ] {
        let done = run(&url);
        assert_eq!(done.code, 0, "{url}: {}", done.stderr);
    }
}

#[test]
fn each_tls_failure_is_one_line_that_names_its_cause() {
    let certs = certs::shared();
    let tls = mongodb_server::tls();
    let cases = [
        (
            tls.url_with(&format!("tls=true&tlsCAFile={}", certs.other_ca.display())),
            "not signed by a trusted CA",
        ),
        (
            verified(mongodb_server::tls_misnamed(), ""),
            "not valid for",
        ),
        (verified(mongodb_server::tls_expired(), ""), "has expired"),
        (
            verified(tls, "&tlsCertificateKeyFile=/no/such/client.pem"),
            "cannot read the client certificate file /no/such/client.pem (?tlsCertificateKeyFile)",
        ),
        (
            verified(mongodb_server::tls_with_client_certificates(), ""),
            "requires a client certificate",
        ),
        (
            verified(
                mongodb_server::tls_with_client_certificates(),
                &format!(
                    "&tlsCertificateKeyFile={}",
                    certs.stranger.combined().display()
                ),
            ),
            "refused our client certificate",
        ),
        (
            verified(mongodb_server::shared(), ""),
            "did not answer in TLS",
        ),
        (tls.url_with("timeoutMS=2000"), "tls=true"),
    ];
    for (url, cause) in cases {
        // Failing fast: the driver retries until server selection gives up.
        let url = format!("{url}&serverSelectionTimeoutMS=1500");
        let done = run(&url);
        eprintln!("{url}: {} {}", done.code, done.stderr);
        done.assert_one_line_failure(69, "no-password-here", &["connect", cause]);
    }
}

/// Failures that retrying cannot fix are refusals, which a waiter does not wait through; a
/// server that only did not answer in TLS in time may be busy, so that one is a store error.
#[tokio::test]
async fn tls_failures_are_refusals_unless_the_server_may_only_be_slow() {
    let certs = certs::shared();
    let fast = "&serverSelectionTimeoutMS=1500";
    let refused = [
        mongodb_server::tls().url_with(&format!(
            "tls=true&tlsCAFile={}{fast}",
            certs.other_ca.display()
        )),
        verified(mongodb_server::tls_expired(), fast),
        verified(mongodb_server::tls_with_client_certificates(), fast),
        verified(
            mongodb_server::tls(),
            "&tlsCertificateKeyFile=/no/such/client.pem",
        ),
        mongodb_server::tls().url_with("serverSelectionTimeoutMS=1500"),
    ];
    for url in refused {
        let err = singleton_process::connect(&url).await.unwrap_err();
        assert!(
            matches!(
                err,
                singleton_process::Error::Refused {
                    operation: "connect",
                    ..
                }
            ),
            "{url}: {err:?}"
        );
    }
    let err = singleton_process::connect(&verified(mongodb_server::shared(), fast))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            singleton_process::Error::Store {
                operation: "connect",
                ..
            }
        ),
        "{err:?}"
    );
}
