//! Checks the PostgreSQL and MySQL stores share: what the CLI says about refused credentials,
//! hosts that do not answer and table names that are not identifiers; renewing a lease without
//! expiry; a table of another shape; a table of the previous version.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use singleton_process::{Acquire, Error, Finish, Holder, Outcome, Released, Store};

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

/// The holder id of the leases in a table of the previous version made by hand.
pub const OLD_HOLDER: &str = "old-holder";

/// A table of the previous version (without the columns of the last run), made by hand with
/// a live lease on `live` (holder [`OLD_HOLDER`], token 7, an hour left) and one on `expired`
/// (token 3) that ran out a minute ago, keeps working when the new code connects to it: several
/// processes at once, each of which finds the columns missing.
pub async fn a_table_of_the_previous_version_keeps_working(url: &str, live: &str, expired: &str) {
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let url = url.to_owned();
        connecting.spawn(async move { singleton_process::connect(&url).await });
    }
    let mut stores = Vec::new();
    while let Some(connected) = connecting.join_next().await {
        stores.push(
            connected
                .expect("join")
                .unwrap_or_else(|e| panic!("connecting to a table of the previous version: {e}")),
        );
    }
    let store = &*stores[0];

    assert!(
        store.last_run(live).await.unwrap().is_none(),
        "a run still going is no last run"
    );
    let held = match store
        .acquire(live, &Holder::current("new"), Some(Duration::from_secs(60)))
        .await
        .unwrap()
    {
        Acquire::Held(lease) => lease,
        Acquire::Acquired { .. } => panic!("the live lease of the previous version must hold"),
    };
    assert_eq!((held.holder.id.as_str(), held.token.0), (OLD_HOLDER, 7));
    assert_eq!(
        store
            .finish(&held, &Finish::release(Outcome::Exit(4)))
            .await
            .unwrap(),
        Released::Released
    );
    let run = store
        .last_run(live)
        .await
        .unwrap()
        .expect("the finished run");
    assert_eq!(
        (run.holder.id.as_str(), run.token.0, run.outcome),
        (OLD_HOLDER, 7, Outcome::Exit(4))
    );
    let next = super::must_acquire(store, live).await;
    assert_eq!(next.token.0, 8, "the fencing counter carries on");

    let unknown = store
        .last_run(expired)
        .await
        .unwrap()
        .expect("an expired lease reads as a run");
    assert_eq!(
        (unknown.holder.id.as_str(), unknown.token.0, unknown.outcome),
        (OLD_HOLDER, 3, Outcome::Unknown)
    );
    let ended = unknown.ended.expect("it ended when it expired");
    assert!(ended < SystemTime::now(), "{unknown}");
    match store
        .acquire(
            expired,
            &Holder::current("new"),
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap()
    {
        Acquire::Acquired {
            lease,
            took_over: Some(old),
        } => {
            assert_eq!((lease.token.0, old.token.0), (4, 3));
            store.release(&lease).await.unwrap();
        }
        other => panic!("the expired lease must be taken over, got {other:?}"),
    }
    let runs: Vec<_> = store
        .last_runs()
        .await
        .unwrap()
        .into_iter()
        .filter(|run| run.name == live || run.name == expired)
        .map(|run| (run.name, run.token.0))
        .collect();
    let mut expected = vec![(live.to_owned(), 7), (expired.to_owned(), 4)];
    expected.sort();
    assert_eq!(runs, expected);
    store.release(&next).await.unwrap();
}

/// A stored outcome that does not parse (`bogus`, written by hand on `name`) is a one-line
/// [`Error::Store`] naming it, from `last_run` and `last_runs` both.
pub async fn a_bad_stored_outcome_is_a_store_error(store: &dyn Store, name: &str) {
    let err = store
        .last_run(name)
        .await
        .expect_err("an outcome that does not parse");
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("\"bogus\""), "{message}");
    assert!(!message.contains('\n'), "{message}");
    let err = store.last_runs().await.expect_err("the same in the list");
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
}
