//! The MySQL store over TLS, against real MariaDB servers and real certificates: the plain
//! server, a TLS-only one ([`mariadb_server::tls`]) and one whose certificate expired
//! ([`mariadb_server::tls_expired`]).

use std::time::Duration;

use singleton_process::conformance::Suite;

use crate::support::certs::{self, MISNAMED_HOST};
use crate::support::mariadb_server::{self, Mariadb, PASSWORD, USER, X509_USER};
use crate::support::{Test, assert_waiter_gives_up, unique};

/// The TLS server's URL for the test user at `host` with the TLS parameters `params`.
fn tls_url(host: &str, params: &str) -> String {
    mariadb_server::tls().url_to(host, USER, PASSWORD, params)
}

/// `&ssl-mode=VERIFY_IDENTITY&ssl-ca=` the test CA.
fn verify_identity() -> String {
    format!(
        "&ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
        certs::shared().ca.display()
    )
}

/// Runs `singleton run` with `url` and asserts it succeeds.
fn runs(url: &str) {
    Test::new()
        .args([
            "run",
            "--name",
            &unique("tls-run"),
            "--store",
            url,
            "--",
            "true",
        ])
        .status(0);
}

/// Asserts that `singleton exists` with `url` fails with exit 69 and one line that names the
/// store (`:***@`, its password masked) and says each of `says`, without the password; returns
/// the line.
fn refused(url: &str, says: &[&str]) -> String {
    let done = Test::new()
        .store(url)
        .args(["exists", &unique("tls")])
        .output();
    let mut words = vec![":***@"];
    words.extend(says);
    done.assert_one_line_failure(69, PASSWORD, &words)
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_store_conforms_over_verify_identity() {
    let store = singleton_process::connect(&tls_url("127.0.0.1", &verify_identity()))
        .await
        .expect("connect over TLS");
    Suite::new(store).run_all().await;
}

#[test]
fn run_over_verify_identity_works() {
    runs(&tls_url("127.0.0.1", &verify_identity()));
    runs(&tls_url("localhost", &verify_identity()));
}

#[test]
fn verify_ca_accepts_a_host_the_certificate_does_not_name_and_verify_identity_does_not() {
    let ca = certs::shared().ca.display().to_string();
    runs(&tls_url(
        MISNAMED_HOST,
        &format!("&ssl-mode=verify_ca&ssl-ca={ca}"),
    ));
    refused(
        &tls_url(MISNAMED_HOST, &verify_identity()),
        &[&format!(
            "TLS: the server's certificate is not valid for \"{MISNAMED_HOST}\" (it names \
             localhost, 127.0.0.1)"
        )],
    );
}

#[test]
fn verify_ca_still_checks_the_ca() {
    refused(
        &tls_url(
            MISNAMED_HOST,
            &format!(
                "&ssl-mode=VERIFY_CA&ssl-ca={}",
                certs::shared().other_ca.display()
            ),
        ),
        &["not signed by a trusted CA", "ssl-ca="],
    );
}

#[test]
fn required_encrypts_without_a_ca() {
    runs(&tls_url(MISNAMED_HOST, "&ssl-mode=REQUIRED"));
}

#[test]
fn preferred_uses_tls_when_the_server_offers_it_and_plaintext_when_not() {
    // The TLS server refuses plaintext (`require_secure_transport`), so these went over TLS.
    runs(&tls_url("127.0.0.1", ""));
    runs(&tls_url("127.0.0.1", "&ssl-mode=PREFERRED"));
    // The plain server announces no TLS.
    let plain = mariadb_server::shared();
    runs(&plain.url());
    runs(&format!("{}&ssl-mode=preferred", plain.url()));
}

#[test]
fn required_against_a_server_without_tls_is_refused() {
    let plain = mariadb_server::shared();
    for mode in ["REQUIRED", "VERIFY_IDENTITY"] {
        let mut url = format!("{}&ssl-mode={mode}", plain.url());
        if mode == "VERIFY_IDENTITY" {
            url.push_str(&format!("&ssl-ca={}", certs::shared().ca.display()));
        }
        refused(
            &url,
            &[&format!("the server does not offer TLS (ssl-mode={mode})")],
        );
    }
}

#[test]
fn disabled_against_a_tls_only_server_suggests_tls() {
    refused(
        &tls_url("127.0.0.1", "&ssl-mode=DISABLED"),
        // MariaDB says "Access denied" (MySQL: "insecure transport"), hence the hint.
        &[
            "Access denied",
            "accepts only TLS connections (require_secure_transport)",
            "use ssl-mode=REQUIRED",
        ],
    );
}

#[test]
fn a_wrong_ca_is_refused() {
    let other = certs::shared().other_ca.display().to_string();
    let line = refused(
        &tls_url(
            "127.0.0.1",
            &format!("&ssl-mode=VERIFY_IDENTITY&ssl-ca={other}"),
        ),
        &["TLS: the server's certificate is not signed by a trusted CA"],
    );
    assert!(line.contains(&other), "names the CA file: {line}");
}

#[test]
fn an_expired_certificate_is_refused() {
    let expired = mariadb_server::tls_expired();
    refused(
        &expired.url_to("127.0.0.1", USER, PASSWORD, &verify_identity()),
        &["TLS: the server's certificate has expired"],
    );
    // REQUIRED does not check the certificate, as with the mysql client.
    runs(&expired.url_to("127.0.0.1", USER, PASSWORD, "&ssl-mode=REQUIRED"));
}

#[test]
fn unusable_tls_files_are_refused_before_connecting() {
    let client = &certs::shared().client;
    let cert = client.cert.display();
    // Nothing listens here: the files must be refused before any connection is tried.
    let port = crate::support::servers::free_port();
    let url = |params: String| format!("mysql://{USER}:{PASSWORD}@127.0.0.1:{port}/db?{params}");
    refused(
        &url(format!(
            "ssl-mode=REQUIRED&ssl-cert={cert}&ssl-key=/no/such/client.key"
        )),
        &["cannot read the client key file /no/such/client.key (?ssl-key)"],
    );
    refused(
        &url(format!(
            "ssl-mode=REQUIRED&ssl-cert={cert}&ssl-key={}",
            certs::shared().ca.display()
        )),
        &["no private key in", "(?ssl-key)"],
    );
    refused(
        &url(format!(
            "ssl-mode=REQUIRED&ssl-cert={cert}&ssl-key={}",
            certs::shared().stranger.key.display()
        )),
        &["the client key does not fit the client certificate (?ssl-cert)"],
    );
    refused(
        &url(format!(
            "ssl-mode=VERIFY_CA&ssl-ca={}",
            client.key.display()
        )),
        &["no PEM certificate in", "(?ssl-ca)"],
    );
}

#[test]
fn an_x509_account_needs_the_client_certificate() {
    let tls = mariadb_server::tls();
    refused(
        &tls.url_to("127.0.0.1", X509_USER, PASSWORD, &verify_identity()),
        &["Access denied", "REQUIRE X509", "?ssl-cert="],
    );
    let client = &certs::shared().client;
    runs(&tls.url_to(
        "127.0.0.1",
        X509_USER,
        PASSWORD,
        &format!(
            "{}&ssl-cert={}&ssl-key={}",
            verify_identity(),
            client.cert.display(),
            client.key.display()
        ),
    ));
}

#[test]
fn a_refused_password_over_tls_is_one_masked_line() {
    let url = mariadb_server::tls().url_to("127.0.0.1", USER, "wrong-pw-8812", &verify_identity());
    let line = refused(&url, &["Access denied", "connect failed"]);
    assert!(!line.contains("wrong-pw-8812"), "{line}");
}

#[test]
fn run_wait_gives_up_at_once_when_tls_fails() {
    let url = tls_url(
        "127.0.0.1",
        &format!(
            "&ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
            certs::shared().other_ca.display()
        ),
    );
    assert_waiter_gives_up(
        &url,
        Duration::from_secs(10),
        PASSWORD,
        &["not signed by a trusted CA"],
    );
}

#[test]
fn tls_settings_that_cannot_work_are_usage_errors() {
    let plain: &Mariadb = mariadb_server::shared();
    for (params, says) in [
        (
            "&ssl-mode=VERIFY",
            "ssl-mode=VERIFY is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY",
        ),
        ("&require_ssl=true", "say ?ssl-mode=REQUIRED"),
        (
            "&ssl-mode=REQUIRED&verify_ca=false",
            "mysql_async's own TLS switch",
        ),
        (
            "&ssl-ca=/ca.pem",
            "only read by ssl-mode=VERIFY_CA or VERIFY_IDENTITY",
        ),
    ] {
        Test::new()
            .store(&format!("{}{params}", plain.url()))
            .args(["exists", "anything"])
            .output()
            .assert_one_line_failure(64, PASSWORD, &[says]);
    }
}
