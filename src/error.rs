//! The one public error type.

use std::time::Duration;

/// A boxed error from a store's driver, kept as the `source` of [`Error::Store`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong, with what happened in named fields.
///
/// Match on the variants, never on the message:
///
/// ```
/// # use singleton_process::Error;
/// fn is_usage_error(err: &Error) -> bool {
///     matches!(err, Error::InvalidName { .. } | Error::InvalidUrl { .. } | Error::InvalidOptions { .. })
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The singleton's name is not 1..=255 bytes of UTF-8 without control characters.
    #[error("invalid singleton name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A store URL that cannot be used.
    #[error("invalid store URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, with any password masked.
        url: String,
        /// Why it was refused.
        reason: String,
    },

    /// The URL names a store whose cargo feature was not compiled in.
    #[error(
        "store URL scheme {scheme}: is not available in this build; rebuild with the cargo feature `{feature}` (cargo install singleton-process --features {feature})"
    )]
    FeatureDisabled {
        /// The URL scheme, without `:`.
        scheme: String,
        /// The cargo feature that provides it.
        feature: &'static str,
    },

    /// Lease length, renewal interval, safety margin and grace period that cannot work together,
    /// or a duration that is zero or absurdly large.
    #[error("invalid options: {reason}")]
    InvalidOptions {
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The lease is no longer ours: it expired, was taken over, or was force-released.
    #[error("lease on {name:?} (token {token}) is lost: {reason}")]
    Lost {
        /// The singleton's name.
        name: String,
        /// The fencing token of the lease that was lost.
        token: u64,
        /// What the store said or what timed out.
        reason: String,
    },

    /// The store failed or could not be reached.
    #[error("{store}: {operation} failed: {source}")]
    Store {
        /// The store's URL, password masked.
        store: String,
        /// What we were doing: `connect`, `acquire`, `renew`, `release`, ...
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// The store refused our credentials or our access (a wrong password, an unknown user, no
    /// permission on the lease table, key prefix or collection), or TLS cannot work as set up (an
    /// unreadable CA or key file, a certificate the server or we do not trust, TLS asked of a
    /// server without it, or plaintext of a TLS-only one). Trying again will not help, so a
    /// waiter ([`Singleton::lock_wait`](crate::Singleton::lock_wait)) that meets it before it has
    /// ever reached the store gives up at once.
    #[error("{store}: {operation} failed: {source}")]
    Refused {
        /// The store's URL, password masked.
        store: String,
        /// What we were doing: `connect`, `acquire`, ...
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// The store did not answer in time.
    #[error("{store}: {operation} timed out after {}", humantime::format_duration(*.after))]
    Timeout {
        /// The store's URL, password masked.
        store: String,
        /// What we were doing.
        operation: &'static str,
        /// How long we waited.
        after: Duration,
    },
}

impl Error {
    /// Builds [`Error::Store`] from any driver error.
    pub fn store(
        store: impl Into<String>,
        operation: &'static str,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Store {
            store: store.into(),
            operation,
            source: source.into(),
        }
    }

    /// Builds [`Error::Refused`] from a driver's refusal of our credentials or access.
    pub fn refused(
        store: impl Into<String>,
        operation: &'static str,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Refused {
            store: store.into(),
            operation,
            source: source.into(),
        }
    }

    /// [`Error::Lost`] for `lease`, saying why.
    pub fn lost(lease: &crate::store::Lease, reason: impl Into<String>) -> Self {
        Error::Lost {
            name: lease.name.clone(),
            token: lease.token.0,
            reason: reason.into(),
        }
    }

    /// The usual reason a renewal finds the lease gone.
    #[cfg_attr(
        not(any(
            feature = "sqlite",
            feature = "postgres",
            feature = "mysql",
            feature = "mongodb"
        )),
        allow(dead_code)
    )]
    pub(crate) const NOT_OURS: &'static str = "it expired or another holder has it";

    pub(crate) fn options(reason: impl Into<String>) -> Self {
        Error::InvalidOptions {
            reason: reason.into(),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
