//! The conformance suite against every store, each on a real backend.

mod memory;
mod mysql;
mod postgres;
mod sql;
mod sqlite;
