//! The conformance suite against every store, each on a real backend.

mod etcd;
mod kv;
mod memory;
mod redis;
mod sqlite;
