//! A network store's client (a connection pool, or one multiplexed connection) that is replaced
//! by a new one once a request on it was abandoned, so that the [`Store`](super::Store)
//! contract holds: a request future dropped before it completes must not leave its connection
//! to be reused.
//!
//! A request that is abandoned (its future dropped by a request timeout above the trait, or a
//! timeout of the store's own) has learnt that its connection may be dead: a half-open socket or
//! a silently dropped packet stream looks exactly like a slow server. Its siblings are suspect
//! too: the idle connections of a pool went through the same network, and a multiplexed
//! connection queues every request behind the dead one. So the whole client is given up, and
//! the next request builds a new one, which connects afresh. Requests already under way on the
//! old client finish (or are abandoned) on their own; the old client closes its connections
//! when the last of them lets go of it.
//!
//! TCP keep-alives ([`KEEPALIVE_IDLE`] and the rest) let the kernel end dead connections that
//! no request is waiting on. They cannot tell a peer whose kernel still acknowledges but whose
//! process no longer answers; giving the client up does.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// TCP keep-alive for every store connection, unless the store's URL sets its own: the kernel
/// probes a connection that was idle for this long, ...
pub(crate) const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// ... every this often, ...
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// ... and closes it after this many unanswered probes: an idle connection whose peer is gone
/// (a pooled one, or a waiter's listener) ends within about 25 s instead of hours, so it is
/// never handed to a request.
pub(crate) const KEEPALIVE_RETRIES: u32 = 3;
/// The kernel closes a connection whose sent data stays unacknowledged this long
/// (`TCP_USER_TIMEOUT`), where the driver lets us set it.
pub(crate) const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// The current client of a store, or none after one was given up; see the module docs.
pub(crate) struct Reconnecting<C> {
    slot: Mutex<Slot<C>>,
}

struct Slot<C> {
    /// Counts the clients installed, so that a request abandoned on an old client does not give
    /// up the new one.
    generation: u64,
    client: Option<C>,
}

impl<C: Clone> Reconnecting<C> {
    /// Starts with `client`, made (and proven) at connect.
    pub fn new(client: C) -> Self {
        Reconnecting {
            slot: Mutex::new(Slot {
                generation: 0,
                client: Some(client),
            }),
        }
    }

    /// The client for one request: the current one, or, once that was given up, a new one
    /// from `connect`. Should two requests make one at once, the first to finish is installed
    /// and serves both.
    pub async fn lend<E, F>(&self, connect: impl FnOnce() -> F) -> Result<Lent<'_, C>, E>
    where
        F: Future<Output = Result<C, E>>,
    {
        if let Some(lent) = self.current() {
            return Ok(lent);
        }
        let made = connect().await?;
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.client.is_none() {
            slot.generation += 1;
            slot.client = Some(made);
        }
        let client = slot.client.clone().expect("installed above");
        Ok(Lent {
            owner: self,
            generation: slot.generation,
            client,
            answered: false,
        })
    }

    /// The current client, if it was not given up, to lend.
    fn current(&self) -> Option<Lent<'_, C>> {
        let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        Some(Lent {
            owner: self,
            generation: slot.generation,
            client: slot.client.clone()?,
            answered: false,
        })
    }

    /// The current client, if any, for work whose outcome nobody waits for (say, tidying up
    /// in the background); it is not replaced should that work hang.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub fn peek(&self) -> Option<C> {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .client
            .clone()
    }

    fn give_up(&self, generation: u64) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.generation == generation && slot.client.take().is_some() {
            tracing::debug!("a store request was abandoned; the next request connects afresh");
        }
    }
}

/// A client lent to one request. Unless the request calls [`Lent::answered`], dropping it
/// gives the client up, and the next request connects afresh.
#[must_use = "a lent client that is dropped without `answered` is given up"]
pub(crate) struct Lent<'a, C: Clone> {
    owner: &'a Reconnecting<C>,
    generation: u64,
    client: C,
    answered: bool,
}

impl<C: Clone> Lent<'_, C> {
    /// The request got its answer (a success or the server's error): the client may serve the
    /// next request too.
    pub fn answered(mut self) {
        self.answered = true;
    }
}

impl<C: Clone> std::ops::Deref for Lent<'_, C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.client
    }
}

impl<C: Clone> std::ops::DerefMut for Lent<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.client
    }
}

impl<C: Clone> Drop for Lent<'_, C> {
    fn drop(&mut self) {
        if !self.answered {
            self.owner.give_up(self.generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lend(clients: &Reconnecting<u32>, next: u32) -> Lent<'_, u32> {
        clients
            .lend(|| async move { Ok::<_, ()>(next) })
            .await
            .expect("lend")
    }

    #[tokio::test]
    async fn an_abandoned_request_gives_its_client_up_and_only_its_own() {
        let clients = Reconnecting::new(1);
        for _ in 0..2 {
            let lent = lend(&clients, 9).await;
            assert_eq!(*lent, 1, "answered: kept");
            lent.answered();
        }
        let stale = lend(&clients, 9).await;
        drop(lend(&clients, 9).await);
        assert_eq!(clients.peek(), None, "abandoned: given up");
        let fresh = lend(&clients, 2).await;
        assert_eq!(*fresh, 2, "the next request connects afresh");
        fresh.answered();
        drop(stale);
        assert_eq!(
            clients.peek(),
            Some(2),
            "abandoning a request on an old client leaves the new one"
        );
    }

    #[tokio::test]
    async fn a_failed_connect_leaves_nothing_installed() {
        let clients = Reconnecting::new(1);
        drop(lend(&clients, 9).await);
        let failed = clients.lend(|| async { Err::<u32, _>("refused") }).await;
        assert!(failed.is_err());
        assert_eq!(clients.peek(), None);
        assert_eq!(*lend(&clients, 3).await, 3);
    }
}
