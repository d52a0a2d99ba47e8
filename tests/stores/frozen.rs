//! The scenario every network store runs behind a [`Proxy`]: a request on a connection that
//! stopped passing bytes is abandoned (its future dropped, as the lease's request timeout does),
//! and the next request must go out on another connection instead of queueing behind the dead
//! one (the `Store` trait's contract).

use std::time::Duration;

use singleton_process::{Heard, Released, Store};

use super::must_acquire;
use crate::support::proxy::Proxy;
use crate::support::unique;

/// Long enough for any answer from a loopback server; a frozen connection gives none.
const ABANDON_AFTER: Duration = Duration::from_millis(500);

/// How long the request after an abandoned one may take: a new connection (and login) to a
/// loopback server on a busy test machine. It only tells a hang from an answer.
const RETRY_WITHIN: Duration = Duration::from_secs(10);

/// `url` leads to the store through `proxy`, `direct_url` to the same store without it. Each of
/// renew, inspect, release and watch is tried once on frozen connections and abandoned, then
/// again, which must be answered.
pub async fn abandoned_requests_do_not_hang_the_next(url: &str, direct_url: &str, proxy: &Proxy) {
    let store = singleton_process::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let name = unique("frozen");
    let lease = must_acquire(&*store, &name).await;
    let ttl = Duration::from_secs(60);
    // A pool then holds several idle connections, all of which will be frozen: none of them
    // may serve the request after an abandoned one.
    let (a, b, c) = tokio::join!(
        store.inspect(&name),
        store.inspect(&name),
        store.inspect(&name)
    );
    for seen in [a, b, c] {
        seen.expect("inspect").expect("held");
    }

    freeze(proxy).await;
    abandon("renew", store.renew(&lease, ttl)).await;
    let renewed = answered("renew", store.renew(&lease, ttl))
        .await
        .unwrap_or_else(|e| panic!("renew after an abandoned renew: {e}"));
    assert_eq!(renewed.token, lease.token);

    freeze(proxy).await;
    abandon("inspect", store.inspect(&name)).await;
    let seen = answered("inspect", store.inspect(&name))
        .await
        .unwrap_or_else(|e| panic!("inspect after an abandoned inspect: {e}"))
        .unwrap_or_else(|| panic!("{name:?} is held"));
    assert_eq!(seen.holder.id, lease.holder.id);

    // The abandoned release never reached the server, so the next one finds the lease.
    freeze(proxy).await;
    abandon("release", store.release(&lease)).await;
    let released = answered("release", store.release(&lease))
        .await
        .unwrap_or_else(|e| panic!("release after an abandoned release: {e}"));
    assert_eq!(released, Released::Released);

    let direct = singleton_process::connect(direct_url)
        .await
        .unwrap_or_else(|e| panic!("connect {direct_url}: {e}"));
    watch_after_a_freeze(&*store, &*direct, proxy).await;
}

/// Setting up a watch while the store's connections are frozen ends (in success, or an error
/// the waiter survives), and one set up after that hears a release made through `direct`.
async fn watch_after_a_freeze(store: &dyn Store, direct: &dyn Store, proxy: &Proxy) {
    let name = unique("frozen-watch");
    freeze(proxy).await;
    // A store that listens on a connection of its own may well succeed; one that shares its
    // connection must not wait on the frozen one for ever.
    let _ = tokio::time::timeout(RETRY_WITHIN, store.watch(&name))
        .await
        .unwrap_or_else(|_| panic!("watch set-up on a frozen store hung for {RETRY_WITHIN:?}"));
    let Some(mut freed) = answered("watch", store.watch(&name))
        .await
        .unwrap_or_else(|e| panic!("watch after a frozen one: {e}"))
    else {
        return; // This store cannot tell waiters.
    };
    let lease = must_acquire(direct, &name).await;
    let released = answered("release", direct.release(&lease)).await;
    assert_eq!(released.expect("release"), Released::Released);
    // Word of the acquire may come first.
    let release_heard = async {
        while let Some(heard) = freed.next().await {
            if matches!(heard, Heard::Freed | Heard::Changed) {
                return true;
            }
        }
        false
    };
    assert!(
        tokio::time::timeout(RETRY_WITHIN, release_heard)
            .await
            .unwrap_or(false),
        "the watch set up after a freeze did not hear the release of {name:?}"
    );
}

/// Freezes the store's connections once those that just served a request are back in their
/// pool (some drivers return them from a task of their own).
async fn freeze(proxy: &Proxy) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(proxy.freeze() > 0, "the store has no connection to freeze");
}

/// Runs `request` until [`ABANDON_AFTER`] and drops it; it must not have been answered, since
/// every connection it could use is frozen.
async fn abandon<T: std::fmt::Debug>(what: &str, request: impl Future<Output = T>) {
    if let Ok(outcome) = tokio::time::timeout(ABANDON_AFTER, request).await {
        panic!("{what} was answered over a frozen connection: {outcome:?}");
    }
}

/// Runs `request`, which must be answered within [`RETRY_WITHIN`].
async fn answered<T>(what: &str, request: impl Future<Output = T>) -> T {
    tokio::time::timeout(RETRY_WITHIN, request)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{what} after an abandoned request hung for {RETRY_WITHIN:?}: it waits on the \
                 frozen connection"
            )
        })
}
