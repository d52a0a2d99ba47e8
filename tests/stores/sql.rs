//! Checks the PostgreSQL and MySQL stores share: what the CLI says about refused credentials,
//! hosts that do not answer and table names that are not identifiers.

use std::net::TcpListener;
use std::time::Duration;

use crate::support::{Test, servers::free_port};

/// A wrong password: one line naming the store with the password masked, the store exit code.
pub fn wrong_password_is_one_masked_line(url_with_wrong_password: &str, password: &str) {
    let done = Test::new()
        .store(url_with_wrong_password)
        .args(["exists", "anything"])
        .status(69);
    let line = done.one_line();
    eprintln!("{line}");
    assert!(!line.contains(password), "the password leaked: {line}");
    assert!(line.contains(":***@"), "the store is not named: {line}");
    assert!(line.contains("connect failed"), "{line}");
}

/// A host that accepts TCP but never answers, and a port where nobody listens: one line each,
/// within the connect timeout.
pub fn unreachable_hosts_fail_within_the_connect_timeout(url_for_port: impl Fn(u16) -> String) {
    // The kernel completes the handshake for the listen backlog, but nobody ever speaks.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("address").port();
    let done = Test::new()
        .store(&format!("{}?connect_timeout=1s", url_for_port(port)))
        .args(["exists", "anything"])
        .status(69);
    let line = done.one_line();
    eprintln!("{line}");
    assert!(line.contains("connect timed out after 1s"), "{line}");
    assert!(!line.contains("secret"), "{line}");
    assert!(
        done.elapsed < Duration::from_secs(10),
        "took {:?}",
        done.elapsed
    );

    let done = Test::new()
        .store(&url_for_port(free_port()))
        .args(["exists", "anything"])
        .status(69);
    let line = done.one_line();
    eprintln!("{line}");
    assert!(line.contains("connect failed"), "{line}");
    assert!(line.to_lowercase().contains("refused"), "{line}");
}

/// A table name that is not a plain identifier is refused before anything is sent (`url` has
/// a query already).
pub fn bad_table_names_are_refused(url: &str) {
    for table in ["locks;drop%20table%20x", "a-b", "1x", "a%22b"] {
        let done = Test::new()
            .store(&format!("{url}&table={table}"))
            .args(["exists", "anything"])
            .status(64);
        let line = done.one_line();
        eprintln!("{line}");
        assert!(line.contains("is not a plain identifier"), "{line}");
        assert!(line.contains(":***@"), "{line}");
    }
}
