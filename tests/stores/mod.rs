//! The conformance suite against every store, each on a real backend.

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
mod etcd_tls;
#[cfg(any(
    feature = "postgres",
    feature = "mysql",
    feature = "redis",
    feature = "etcd",
    feature = "mongodb"
))]
mod frozen;
#[cfg(any(feature = "redis", feature = "etcd"))]
mod kv;
mod memory;
#[cfg(feature = "mongodb")]
mod mongodb;
mod mongodb_tls;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "mysql")]
mod mysql_tls;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod postgres_tls;
#[cfg(feature = "redis")]
mod redis;
mod redis_tls;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod sql;
mod sqlite;
#[cfg(any(
    feature = "postgres",
    feature = "mysql",
    feature = "redis",
    feature = "etcd",
    feature = "mongodb"
))]
mod tls_reconnects;

use std::time::Duration;

use singleton_process::{Acquire, Holder, Lease, Store};

/// Acquires `name`, which must be free, for a minute.
async fn must_acquire(store: &dyn Store, name: &str) -> Lease {
    let ttl = Some(Duration::from_secs(60));
    match store
        .acquire(name, &Holder::current("t"), ttl)
        .await
        .expect("acquire")
    {
        Acquire::Acquired { lease, .. } => lease,
        Acquire::Held(other) => panic!("{name:?} should be free, but is {other}"),
    }
}
