use std::sync::Arc;
use std::time::Duration;

use singleton_process::conformance::Suite;
use singleton_process::{Acquire, Error, Heard, Holder, Store};

use crate::support::fuse::FuseMount;
use crate::support::{SqliteStore, Test};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let file = SqliteStore::new();
    let store = singleton_process::connect(&file.url)
        .await
        .expect("connect");
    Suite::new(store).run_all().await;
}

#[tokio::test]
async fn sqlite_store_tells_waiters() {
    let file = SqliteStore::new();
    let store = singleton_process::connect(&file.url)
        .await
        .expect("connect");
    Suite::new(store).watchers_hear_releases().await;
}

/// SQLite's word is "something was committed": a waiter's own attempt on a held name must not
/// count, or waiters would wake each other for ever.
#[tokio::test]
async fn a_conflicting_attempt_wakes_no_sqlite_waiter() {
    let file = SqliteStore::new();
    let holder = singleton_process::connect(&file.url)
        .await
        .expect("connect");
    let waiter = singleton_process::connect(&file.url)
        .await
        .expect("connect");
    let name = crate::support::unique("quiet");
    let lease = super::must_acquire(&*holder, &name).await;
    let mut freed = waiter.watch(&name).await.unwrap().expect("sqlite watches");
    for _ in 0..3 {
        let attempt = waiter
            .acquire(&name, &Holder::current("b"), Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert!(matches!(attempt, Acquire::Held(_)));
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), freed.next())
            .await
            .is_err(),
        "conflicting attempts woke the waiter, or its feed ended"
    );
    holder.release(&lease).await.unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(10), freed.next()).await;
    assert_eq!(
        woke,
        Ok(Some(Heard::Changed)),
        "the release wakes the waiter"
    );
}

/// Sixteen separate connections to one file (as sixteen processes would have): one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_connections_to_one_file_have_one_winner() {
    let file = SqliteStore::new();
    // All opened at once on a new file, as sixteen processes started together would.
    let opening: Vec<_> = (0..16)
        .map(|_| {
            let url = file.url.clone();
            tokio::spawn(async move { singleton_process::connect(&url).await })
        })
        .collect();
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for open in opening {
        stores.push(
            open.await
                .unwrap()
                .expect("connect to a new file concurrently"),
        );
    }
    let name = crate::support::unique("conns");
    for round in 0..5 {
        let attempts: Vec<_> = stores
            .iter()
            .map(|store| {
                let (store, name) = (Arc::clone(store), name.clone());
                tokio::spawn(async move {
                    store
                        .acquire(&name, &Holder::current("t"), Some(Duration::from_secs(30)))
                        .await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for attempt in attempts {
            if let Acquire::Acquired { lease, .. } = attempt.await.unwrap().unwrap() {
                winners.push(lease);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        stores[0].release(&winners[0]).await.unwrap();
    }
}

#[tokio::test]
async fn relative_and_absolute_paths() {
    let file = SqliteStore::new();
    let abs = format!("sqlite://{}", file.path("abs.db").display());
    singleton_process::connect(&abs)
        .await
        .expect("absolute path");
    assert!(file.path("abs.db").exists());
    // A relative path is taken from the working directory; the test may not change it, so
    // check only that the URL parses to the relative path.
    let err = singleton_process::connect("sqlite://").await.unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err}");
}

#[tokio::test]
async fn unwritable_path_is_a_store_error() {
    let err = singleton_process::connect("sqlite:///proc/singleton-test/locks.db")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Store {
                operation: "connect",
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("sqlite:///proc/singleton-test/locks.db"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

#[tokio::test]
async fn a_table_of_another_shape_is_reported() {
    let file = SqliteStore::new();
    let path = file.path("other.db");
    rusqlite::Connection::open(&path)
        .and_then(|conn| {
            conn.execute_batch("CREATE TABLE singleton_leases (name TEXT PRIMARY KEY, owner TEXT)")
        })
        .expect("create a foreign table");
    let err = singleton_process::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err}");
    assert!(err.to_string().contains("no such column"), "{err}");
}

/// Other hosts can share a FUSE file system (bindfs may mirror an NFS directory): the real
/// binary refuses it with one line and exit 64, before it creates anything there.
#[test]
fn a_database_on_a_fuse_mount_is_refused() {
    let mount = FuseMount::new();
    let db = mount.point.path().join("locks.db");
    let name = crate::support::unique("fuse");
    let done = Test::new()
        .store(&format!("sqlite://{}", db.display()))
        .args(["run", "--name", &name, "--", "true"])
        .output();
    assert_eq!(done.code, 64, "{}", done.stderr);
    let line = done.one_line();
    for part in [
        // bindfs mounts as type `fuse` or `fuse.bindfs`, depending on its version.
        &format!("{} is on FUSE (fuse", mount.point.path().display()),
        "a file system that other hosts can share",
        "two hosts could both hold a lease",
        "postgres://",
        "etcd://",
        "a local disk",
        "?allow_network_fs=true",
    ] {
        assert!(line.contains(part), "{part:?} missing from: {line}");
    }
    assert!(!db.exists(), "locks.db was created on the refused mount");
    assert!(!mount.source.path().join("locks.db").exists());

    // The operator's word that only this host uses it.
    Test::new()
        .store(&format!("sqlite://{}?allow_network_fs=true", db.display()))
        .args(["run", "--name", &name, "--", "true"])
        .status(0);
    assert!(mount.source.path().join("locks.db").exists());
}

#[tokio::test]
async fn sqlite_url_options_are_checked() {
    let file = SqliteStore::new();
    let path = file.path("locks.db");
    singleton_process::connect(&format!(
        "sqlite://{}?allow_network_fs=false",
        path.display()
    ))
    .await
    .expect("?allow_network_fs=false on a local disk");
    singleton_process::connect(&format!(
        "sqlite://{}?allow_network_fs=true",
        path.display()
    ))
    .await
    .expect("?allow_network_fs=true");
    for query in [
        "bogus=1",
        "allow_network_fs=yes",
        "allow_network_fs",
        "b.db",
    ] {
        let url = format!("sqlite://{}?{query}", path.display());
        let err = singleton_process::connect(&url).await.unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
    }
    let err = singleton_process::connect(&format!("sqlite://{}/a?b.db", file.dir.path().display()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("a file name cannot contain one"),
        "{err}"
    );
    assert!(!file.path("a").exists() && !file.path("a?b.db").exists());
}
