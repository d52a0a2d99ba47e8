//! A store that counts the requests made through it: for benchmarks and tests that measure
//! what waiters and holders cost a store, as object_store's `ThrottledStore` wraps another
//! store to slow it down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::{Acquire, Finish, Freed, Holder, LastRun, Lease, Released, Store};
use crate::doctor::Check;
use crate::error::Result;

/// Wraps a store; every operation asked of it adds one to a shared counter (setting up
/// [`Store::watch`] counts once; what it hears afterwards does not).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> singleton_process::Result<()> {
/// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
/// use singleton_process::store::{Counted, memory::MemoryStore};
/// use singleton_process::{Options, Singleton};
///
/// let requests = Arc::new(AtomicU64::new(0));
/// let store = Arc::new(Counted::new(Arc::new(MemoryStore::new()), Arc::clone(&requests)));
/// let singleton = Singleton::new("nightly", store, Options::default())?;
/// assert!(singleton.exists().await? == false);
/// assert_eq!(requests.load(Ordering::Relaxed), 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Counted {
    inner: Arc<dyn Store>,
    requests: Arc<AtomicU64>,
}

impl Counted {
    /// `inner`, counting its requests in `requests`.
    pub fn new(inner: Arc<dyn Store>, requests: Arc<AtomicU64>) -> Self {
        Counted { inner, requests }
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl Store for Counted {
    fn describe(&self) -> &str {
        self.inner.describe()
    }

    async fn acquire(&self, name: &str, holder: &Holder, ttl: Option<Duration>) -> Result<Acquire> {
        self.count();
        self.inner.acquire(name, holder, ttl).await
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        self.count();
        self.inner.renew(lease, ttl).await
    }

    async fn finish(&self, lease: &Lease, finish: &Finish) -> Result<Released> {
        self.count();
        self.inner.finish(lease, finish).await
    }

    async fn last_run(&self, name: &str) -> Result<Option<LastRun>> {
        self.count();
        self.inner.last_run(name).await
    }

    async fn last_runs(&self) -> Result<Vec<LastRun>> {
        self.count();
        self.inner.last_runs().await
    }

    async fn inspect(&self, name: &str) -> Result<Option<Lease>> {
        self.count();
        self.inner.inspect(name).await
    }

    async fn list(&self) -> Result<Vec<Lease>> {
        self.count();
        self.inner.list().await
    }

    async fn force_release(&self, name: &str) -> Result<Option<Lease>> {
        self.count();
        self.inner.force_release(name).await
    }

    async fn watch(&self, name: &str) -> Result<Option<Freed>> {
        self.count();
        self.inner.watch(name).await
    }

    fn expiry_on_store_clock(&self) -> bool {
        self.inner.expiry_on_store_clock()
    }

    async fn doctor(&self) -> Result<Vec<Check>> {
        self.count();
        self.inner.doctor().await
    }

    async fn store_time(&self) -> Result<Option<SystemTime>> {
        self.count();
        self.inner.store_time().await
    }

    async fn benchmark_floor(&self, scratch_key: &str) -> Result<()> {
        self.count();
        self.inner.benchmark_floor(scratch_key).await
    }
}
