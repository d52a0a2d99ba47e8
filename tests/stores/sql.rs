//! Checks the PostgreSQL and MySQL stores share: what the CLI says about refused credentials,
//! hosts that do not answer and table names that are not identifiers; renewing a lease without
//! expiry; a table of another shape.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use singleton_process::{Acquire, Error, Holder, Released, Store};

use crate::support::{Test, servers::free_port, unique};

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

/// A lease without expiry can be renewed (nothing changes in its row, which the MySQL store
/// must still recognise as ours) and stays without expiry.
pub async fn never_expiring_lease_renews(store: Arc<dyn Store>) {
    let name = unique("forever-renew");
    let Acquire::Acquired { lease, .. } = store
        .acquire(&name, &Holder::current("t"), None)
        .await
        .expect("acquire")
    else {
        panic!("{name} is new");
    };
    for _ in 0..2 {
        let renewed = store
            .renew(&lease, Duration::from_secs(1))
            .await
            .expect("renewing our own lease");
        assert_eq!(renewed.expires, None);
        assert_eq!(renewed.token, lease.token);
    }
    assert_eq!(
        store.release(&lease).await.expect("release"),
        Released::Released
    );
}

/// A table of another shape under the configured name is reported at connect, naming what
/// is wrong.
pub async fn a_table_of_another_shape_is_reported(url: &str, table: &str) {
    let err = singleton_process::connect(&format!("{url}&table={table}"))
        .await
        .expect_err("a foreign table must be refused");
    assert!(
        matches!(
            err,
            Error::Store {
                operation: "prepare",
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("column"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

/// A wrong password is [`Error::Refused`] at connect, which a waiter does not wait through.
pub async fn wrong_password_is_refused(url_with_wrong_password: &str) {
    let err = singleton_process::connect(url_with_wrong_password)
        .await
        .expect_err("a wrong password must be refused");
    assert!(
        matches!(
            err,
            Error::Refused {
                operation: "connect",
                ..
            }
        ),
        "{err:?}"
    );
}

/// A user who may log in but not use the lease table (or its database) is [`Error::Refused`],
/// at connect or at its first acquire, whichever meets the refusal.
pub async fn no_access_is_refused(url_of_user_without_access: &str) {
    let outcome = async {
        let store = singleton_process::connect(url_of_user_without_access).await?;
        let name = unique("no-access");
        store
            .acquire(&name, &Holder::current("t"), Some(Duration::from_secs(60)))
            .await
    }
    .await;
    match outcome {
        Err(Error::Refused { .. }) => {}
        other => panic!("a user without access must be refused, got {other:?}"),
    }
}
