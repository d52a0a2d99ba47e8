//! The conformance suite against every store, each on a real backend.

mod memory;
mod sqlite;
