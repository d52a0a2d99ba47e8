//! All integration tests build into this one binary, so the suite compiles once.
//!
//! Network stores are tested against real servers that `support::servers` starts on free
//! loopback ports; a missing server binary fails the test with the command that installs it.

mod support;

mod benchmarks;
mod cli;
mod doctor;
mod edges;
#[cfg(feature = "etcd")]
mod failover_etcd;
#[cfg(feature = "postgres")]
mod failover_postgres;
#[cfg(feature = "redis")]
mod failover_redis;
mod faults;
mod hosts;
mod last_run;
mod operator_tools;
mod partitions;
mod race;
mod singleton;
mod stores;
