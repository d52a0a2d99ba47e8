//! What a [`Singleton`](crate::Singleton) reports while it locks, holds and releases.

use std::fmt;

use serde::Serialize;

use crate::store::{FencingToken, Lease};

/// One event of a singleton's life. Every event has a human-readable [`Display`](fmt::Display)
/// message, is sent to [`Singleton::events`](crate::Singleton::events) subscribers and is logged
/// through `tracing`.
///
/// The first seven are the original package's events; `waiting`, `renewed` and `lost` are new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// An acquisition is about to be attempted.
    Locking {
        /// The singleton's name.
        name: String,
    },
    /// The lease is ours.
    Locked {
        /// The lease we now hold.
        lease: Lease,
    },
    /// Somebody else holds the lease; `lock()` gave up.
    Conflict {
        /// The singleton's name.
        name: String,
        /// The other holder's lease.
        held_by: Lease,
    },
    /// The lease we acquired replaced one that had expired by the store's clock.
    Expired {
        /// The singleton's name.
        name: String,
        /// The expired lease.
        previous: Lease,
    },
    /// Somebody else holds the lease and we wait for it (emitted again when the holder changes).
    Waiting {
        /// The singleton's name.
        name: String,
        /// The other holder's lease.
        held_by: Lease,
    },
    /// The lease was extended.
    Renewed {
        /// The lease with its new expiry.
        lease: Lease,
    },
    /// The lease can no longer be guaranteed: the holder must stop now.
    Lost {
        /// The singleton's name.
        name: String,
        /// The lost lease's fencing token.
        token: FencingToken,
        /// Whether the store said so (stop at once) or no renewal was confirmed in time.
        loss: Loss,
        /// Why.
        reason: String,
    },
    /// The lease is about to be given back.
    Releasing {
        /// The singleton's name.
        name: String,
        /// The lease's fencing token.
        token: FencingToken,
    },
    /// The lease was given back.
    Released {
        /// The singleton's name.
        name: String,
        /// The lease's fencing token.
        token: FencingToken,
    },
    /// The run is over, and its lease stays in the store until it expires, as asked
    /// ([`LeaseGuard::finish`](crate::LeaseGuard::finish) with a hold, `run --hold-at-least`).
    Kept {
        /// The lease, with the expiry the store gave it.
        lease: Lease,
    },
    /// A store operation failed.
    Error {
        /// The singleton's name.
        name: String,
        /// The error's message.
        message: String,
    },
}

/// How a lease was lost, which decides how long its holder may take to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Loss {
    /// No renewal was confirmed before the safe deadline minus the grace period: the store was
    /// unreachable or slow, a renewal came back too late, or the lease was not renewed and ran
    /// out. The lease may well still be ours until the safe deadline, so the holder has the
    /// whole grace period to stop (the CLI: SIGTERM now, SIGKILL at the safe deadline).
    Unconfirmed,
    /// The store said the lease is no longer ours: a renewal found another holder or none
    /// (expired and taken over, force-released, lost with the store's data), a release found it
    /// gone, or the store's clock jumped ahead of ours. Somebody else may hold it already, so the
    /// holder must stop at once (the CLI: SIGTERM now, SIGKILL after at most 1 s).
    Gone,
}

impl Event {
    /// The event's kind as in the original package: `locking`, `locked`, `conflict`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Locking { .. } => "locking",
            Event::Locked { .. } => "locked",
            Event::Conflict { .. } => "conflict",
            Event::Expired { .. } => "expired",
            Event::Waiting { .. } => "waiting",
            Event::Renewed { .. } => "renewed",
            Event::Lost { .. } => "lost",
            Event::Releasing { .. } => "releasing",
            Event::Released { .. } => "released",
            Event::Kept { .. } => "kept",
            Event::Error { .. } => "error",
        }
    }

    /// The singleton's name.
    pub fn name(&self) -> &str {
        match self {
            Event::Locked { lease } | Event::Renewed { lease } | Event::Kept { lease } => {
                &lease.name
            }
            Event::Locking { name }
            | Event::Conflict { name, .. }
            | Event::Expired { name, .. }
            | Event::Waiting { name, .. }
            | Event::Lost { name, .. }
            | Event::Releasing { name, .. }
            | Event::Released { name, .. }
            | Event::Error { name, .. } => name,
        }
    }

    /// Whether this event means something went wrong or did not happen as asked, i.e. is worth
    /// showing to an operator who asked for quiet output.
    pub fn is_notable(&self) -> bool {
        matches!(
            self,
            Event::Conflict { .. }
                | Event::Expired { .. }
                | Event::Waiting { .. }
                | Event::Lost { .. }
                | Event::Error { .. }
        )
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Locking { name } => write!(f, "locking {name:?}"),
            Event::Locked { lease } => write!(f, "locked {:?} (token {})", lease.name, lease.token),
            Event::Conflict { name, held_by } => write!(f, "{name:?} is {held_by}"),
            Event::Expired { name, previous } => write!(
                f,
                "took over {name:?}: the lease of {} (token {}) had expired",
                previous.holder, previous.token
            ),
            Event::Waiting { name, held_by } => write!(f, "waiting for {name:?}, {held_by}"),
            Event::Renewed { lease } => match lease.expires {
                Some(at) => write!(
                    f,
                    "renewed {:?} (token {}) until {}",
                    lease.name,
                    lease.token,
                    humantime::format_rfc3339_millis(at)
                ),
                None => write!(f, "renewed {:?} (token {})", lease.name, lease.token),
            },
            Event::Lost {
                name,
                token,
                reason,
                ..
            } => write!(f, "lost {name:?} (token {token}): {reason}"),
            Event::Releasing { name, token } => write!(f, "releasing {name:?} (token {token})"),
            Event::Released { name, token } => write!(f, "released {name:?} (token {token})"),
            Event::Kept { lease } => match lease.expires {
                Some(at) => write!(
                    f,
                    "the run is over; {:?} (token {}) stays held until {}",
                    lease.name,
                    lease.token,
                    humantime::format_rfc3339_millis(at)
                ),
                None => write!(
                    f,
                    "the run is over; {:?} (token {}) stays held",
                    lease.name, lease.token
                ),
            },
            Event::Error { name, message } => write!(f, "{name:?}: {message}"),
        }
    }
}
