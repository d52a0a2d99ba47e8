#![cfg(any(feature = "redis", feature = "etcd"))]

//! Checks shared by the key-value stores (Redis, etcd), whose keys are a prefix, a kind and
//! the name's bytes.

use std::collections::BTreeSet;

use super::must_acquire;
use crate::support::unique;

/// `base_url` with a fresh `?prefix=` (or `&prefix=`), so a test sees only its own keys.
pub fn with_fresh_prefix(base_url: &str, separator: char) -> String {
    let joiner = if base_url.contains('?') { '&' } else { '?' };
    format!("{base_url}{joiner}prefix={}{separator}", unique("t"))
}

/// Names that look like other keys, kinds or glob patterns are listed exactly as themselves,
/// and stores with other prefixes do not see them. `url` must carry a prefix of its own.
pub async fn list_reads_keys_strictly(url: &str, other_url: &str) {
    let store = singleton_process::connect(url).await.expect("connect");
    let other = singleton_process::connect(other_url)
        .await
        .expect("connect");
    let names = [
        "a", "a/b", "a:b", "lease:a", "lease/a", "fence:a", "info/a", "*", "[a]", "a?",
    ];
    let mut leases = Vec::new();
    for name in names {
        leases.push(must_acquire(&*store, name).await);
    }
    let listed: Vec<String> = store
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|l| l.name)
        .collect();
    let expected: BTreeSet<&str> = names.into_iter().collect();
    assert_eq!(
        listed,
        expected.iter().copied().collect::<Vec<_>>(),
        "list must show each name once, in order"
    );
    assert!(
        other
            .list()
            .await
            .expect("list")
            .iter()
            .all(|l| !expected.contains(l.name.as_str()))
    );
    assert!(
        other.inspect("a").await.expect("inspect").is_none(),
        "prefixes keep stores apart"
    );
    // Releasing "a" must leave every look-alike held.
    store.release(&leases[0]).await.expect("release");
    let listed = store.list().await.expect("list");
    assert_eq!(listed.len(), names.len() - 1);
    for lease in &leases[1..] {
        store.release(lease).await.expect("release");
    }
    assert!(store.list().await.expect("list").is_empty());
}
