//! All integration tests build into this one binary, so the suite compiles once.
//!
//! Network stores are tested against real servers that `support::servers` starts on free
//! loopback ports; a missing server binary fails the test with the command that installs it.

mod support;

mod benchmarks;
mod cli;
mod edges;
mod faults;
mod hosts;
mod last_run;
mod partitions;
mod race;
mod singleton;
mod stores;
