//! Run at most one copy of a named job at a time, across processes and hosts.
//!
//! A [`Singleton`] holds a **lease** on a name in a [`Store`]. The store decides expiry by its
//! own clock and mints a strictly increasing **fencing token** at each acquisition; the holder
//! renews the lease in the background and learns at once when it can no longer be sure it holds
//! it ([`LeaseGuard::lost`]), early enough to stop before anyone else can acquire.
//!
//! ```
//! use std::time::Duration;
//! use singleton_process::{Lock, Options, Singleton};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> singleton_process::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = singleton_process::connect(&format!("sqlite://{}/locks.db", dir.path().display())).await?;
//! let job = Singleton::new("nightly-report", store, Options::default().lock_expire(Duration::from_secs(30)))?;
//! match job.lock().await? {
//!     Lock::Locked(guard) => {
//!         println!("we are the one; fencing token {}", guard.token());
//!         guard.release().await?;
//!     }
//!     Lock::Conflict(lease) => println!("another copy runs: {lease}"),
//! }
//! # Ok(()) }
//! ```
//!
//! Stores are picked by URL with [`connect`]; each network store is a cargo feature.
//! The `singleton` command-line tool (feature `cli`) wraps any command in a lease.

#![warn(missing_docs)]

pub mod clock;
pub mod conformance;
pub mod doctor;
mod error;
mod event;
mod lease;
mod singleton;
pub mod store;

pub use clock::BootInstant;
pub use error::{BoxError, Error, Result};
pub use event::{Event, Loss};
pub use lease::{CLOCK_RATE_TOLERANCE, LeaseGuard, MAX_DURATION, MAX_REQUEST_TIMEOUT};
pub use singleton::{Lock, Options, Singleton};
pub use store::{
    Acquire, FencingToken, Finish, Freed, FreedReceiver, Heard, Hold, Holder, LastRun, Lease,
    Outcome, Released, Store, Teller, connect,
};
