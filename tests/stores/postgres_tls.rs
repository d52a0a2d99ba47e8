//! The PostgreSQL store over TLS, with libpq's `sslmode`, against real servers and real
//! certificates: the plain server, a TLS-only one and one that presents an expired certificate.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use singleton_process::conformance::Suite;

use crate::support::certs::{self, MISNAMED_HOST};
use crate::support::postgres_server::{CERT_USER, PASSWORD, Postgres, shared, tls, tls_expired};
use crate::support::servers::free_port;
use crate::support::{Done, Test, assert_waiter_gives_up, unique};

/// The superuser's URL on `server` at `host`, with `query`.
fn url(server: &Postgres, host: &str, query: &str) -> String {
    server.url_for(&format!("postgres:{PASSWORD}"), host, query)
}

/// `sslrootcert=` the test CA, or `path`.
fn root(path: &Path) -> String {
    format!("sslrootcert={}", path.display())
}

fn ca() -> String {
    root(&certs::shared().ca)
}

/// `singleton run -- true` over `url`, with a home directory that has no libpq files, so that
/// only the URL's settings count.
fn run(url: &str) -> Test {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    let home = HOME.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    Test::new().store(url).env("HOME", home.path()).args([
        "run",
        "--name",
        &unique("tls"),
        "--",
        "true",
    ])
}

/// The run works.
fn works(url: &str) -> Done {
    let done = run(url).status(0);
    assert_eq!(done.stderr, "", "{url}");
    done
}

/// The run fails to connect with exit 69, nothing on stdout and ONE line that contains every
/// one of `causes`, with the password nowhere.
fn fails(test: Test, causes: &[&str]) -> String {
    let done = test.output();
    let mut words = vec!["connect failed"];
    words.extend(causes);
    let line = done
        .assert_one_line_failure(69, PASSWORD, &words)
        .to_owned();
    assert_eq!(done.stdout, "", "nothing on stdout");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms_over_verify_full() {
    let url = url(tls(), "127.0.0.1", &format!("sslmode=verify-full&{}", ca()));
    let store = singleton_process::connect(&url).await.expect("connect");
    let suite = Suite::new(store);
    suite.run_all().await;
    // A waiter's own connection (LISTEN) goes over TLS too.
    suite.watchers_hear_releases().await;
}

#[test]
fn the_cli_runs_a_job_over_verify_full() {
    works(&url(
        tls(),
        "localhost",
        &format!("sslmode=verify-full&{}", ca()),
    ));
}

#[test]
fn verify_ca_accepts_a_certificate_for_another_host_which_verify_full_refuses() {
    works(&url(
        tls(),
        MISNAMED_HOST,
        &format!("sslmode=verify-ca&{}", ca()),
    ));
    fails(
        run(&url(
            tls(),
            MISNAMED_HOST,
            &format!("sslmode=verify-full&{}", ca()),
        )),
        &[
            "TLS: the server's certificate is not valid for",
            MISNAMED_HOST,
            "(it names localhost, 127.0.0.1)",
        ],
    );
    // verify-ca still checks the chain.
    let other = root(&certs::shared().other_ca);
    fails(
        run(&url(
            tls(),
            MISNAMED_HOST,
            &format!("sslmode=verify-ca&{other}"),
        )),
        &["not signed by a trusted CA"],
    );
}

#[test]
fn require_encrypts_without_a_ca_file() {
    works(&url(tls(), MISNAMED_HOST, "sslmode=require"));
}

/// `require` with a CA file checks the server against it, as libpq's does.
#[test]
fn require_with_a_ca_file_checks_it() {
    let other = root(&certs::shared().other_ca);
    fails(
        run(&url(
            tls(),
            "127.0.0.1",
            &format!("sslmode=require&{other}"),
        )),
        &["not signed by a trusted CA"],
    );
}

/// `prefer` (the default) uses TLS when the server has it, and plaintext only when the server
/// says it has none.
#[test]
fn prefer_uses_tls_when_the_server_offers_it() {
    let app = unique("prefer").replace('-', "_");
    works(&url(tls(), "127.0.0.1", &format!("application_name={app}")));
    // The TLS server logs each session with its protocol; it also refuses plaintext (no
    // `host` rule), so working at all meant TLS.
    let log = tls().log();
    let session = log
        .lines()
        .find(|line| line.contains(&format!("application_name={app}")))
        .unwrap_or_else(|| panic!("no session of {app} in the server log:\n{log}"));
    assert!(session.contains("SSL enabled"), "{session}");

    works(&url(shared(), "127.0.0.1", "sslmode=prefer"));
    works(&shared().url());
}

#[test]
fn modes_that_require_tls_never_fall_back_to_plaintext() {
    fails(
        run(&url(shared(), "127.0.0.1", "sslmode=require")),
        &["TLS: the server does not offer TLS, which sslmode=require requires"],
    );
    fails(
        run(&url(
            shared(),
            "127.0.0.1",
            &format!("sslmode=verify-full&{}", ca()),
        )),
        &["the server does not offer TLS, which sslmode=verify-full requires"],
    );
}

/// What `sslmode=disable` meets on a server that accepts TLS only.
#[test]
fn plaintext_is_refused_by_a_tls_only_server() {
    fails(
        run(&url(tls(), "127.0.0.1", "sslmode=disable")),
        &["no pg_hba.conf entry", "no encryption"],
    );
}

#[test]
fn a_wrong_ca_is_one_line() {
    let other = root(&certs::shared().other_ca);
    let line = fails(
        run(&url(
            tls(),
            "127.0.0.1",
            &format!("sslmode=verify-full&{other}"),
        )),
        &["TLS: the server's certificate is not signed by a trusted CA"],
    );
    assert!(line.contains("other-ca.pem"), "{line}");
}

/// A waiter gives up at once on a TLS failure: waiting will not fix a certificate.
#[test]
fn a_waiter_does_not_wait_through_a_tls_failure() {
    let other = root(&certs::shared().other_ca);
    let url = url(tls(), "127.0.0.1", &format!("sslmode=verify-full&{other}"));
    assert_waiter_gives_up(
        &url,
        Duration::from_secs(10),
        PASSWORD,
        &["not signed by a trusted CA"],
    );
}

#[test]
fn an_expired_certificate_is_one_line() {
    fails(
        run(&url(
            tls_expired(),
            "127.0.0.1",
            &format!("sslmode=verify-full&{}", ca()),
        )),
        &["TLS: the server's certificate has expired"],
    );
}

/// The files are read at connect, before anything goes on the wire: here nobody even
/// listens on the port.
#[test]
fn unusable_files_are_one_line_before_connecting() {
    let port = free_port();
    let nowhere = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/postgres");
    let client = &certs::shared().client;
    fails(
        run(&format!(
            "{nowhere}?sslmode=verify-full&{}&sslcert={}&sslkey=/no/such/client.key",
            ca(),
            client.cert.display()
        )),
        &["cannot read the client key file /no/such/client.key (?sslkey)"],
    );
    fails(
        run(&format!(
            "{nowhere}?sslmode=verify-full&sslrootcert=/no/such/ca.pem"
        )),
        &["cannot read the CA certificates file /no/such/ca.pem (?sslrootcert)"],
    );
    // A key file where the certificate should be.
    fails(
        run(&format!(
            "{nowhere}?sslmode=require&sslcert={}&sslkey={}",
            client.key.display(),
            client.key.display()
        )),
        &["no PEM certificate in", "(?sslcert)"],
    );
}

#[test]
fn a_client_certificate_logs_in() {
    let client = &certs::shared().client;
    works(&tls().url_for(
        CERT_USER,
        "127.0.0.1",
        &format!(
            "sslmode=verify-full&{}&sslcert={}&sslkey={}",
            ca(),
            client.cert.display(),
            client.key.display()
        ),
    ));
}

#[test]
fn a_missing_client_certificate_is_one_line() {
    fails(
        run(&tls().url_for(
            CERT_USER,
            "127.0.0.1",
            &format!("sslmode=verify-full&{}", ca()),
        )),
        &["TLS: the server requires a client certificate", "?sslcert="],
    );
}

#[test]
fn a_client_certificate_from_another_ca_is_one_line() {
    let stranger = &certs::shared().stranger;
    fails(
        run(&tls().url_for(
            CERT_USER,
            "127.0.0.1",
            &format!(
                "sslmode=verify-full&{}&sslcert={}&sslkey={}",
                ca(),
                stranger.cert.display(),
                stranger.key.display()
            ),
        )),
        &["TLS: the server refused our client certificate"],
    );
}

#[tokio::test]
async fn a_refused_password_over_tls_is_one_masked_line() {
    let wrong = tls().url_for(
        "postgres:wrong-secret",
        "127.0.0.1",
        &format!("sslmode=verify-full&{}", ca()),
    );
    let line = fails(run(&wrong), &["password authentication failed", ":***@"]);
    assert!(!line.contains("wrong-secret"), "{line}");
    super::sql::wrong_password_is_refused(&wrong).await;
}

#[test]
fn an_unknown_sslmode_is_a_usage_error() {
    run(&url(tls(), "127.0.0.1", "sslmode=verify_full"))
        .output()
        .assert_one_line_failure(
            64,
            PASSWORD,
            &["sslmode=verify_full is not one of disable, prefer, require, verify-ca, verify-full"],
        );
}

/// Without `sslrootcert`, verify-full trusts libpq's `~/.postgresql/root.crt` if there is
/// one, else the system's CAs, which did not sign the test server's certificate.
#[test]
fn verify_full_without_sslrootcert_uses_libpq_s_file_or_the_system_s_cas() {
    let url = url(tls(), "127.0.0.1", "sslmode=verify-full");
    fails(
        run(&url),
        &["not signed by a trusted CA", "the system's CAs"],
    );
    let home = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(home.path().join(".postgresql")).expect("mkdir");
    std::fs::copy(
        &certs::shared().ca,
        home.path().join(".postgresql/root.crt"),
    )
    .expect("copy the CA");
    Test::new()
        .store(&url)
        .env("HOME", home.path())
        .args(["run", "--name", &unique("tls-home"), "--", "true"])
        .status(0);
}
