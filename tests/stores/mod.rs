//! The conformance suite against every store, each on a real backend.

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(any(feature = "redis", feature = "etcd"))]
mod kv;
mod memory;
#[cfg(feature = "mongodb")]
mod mongodb;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod sql;
mod sqlite;
