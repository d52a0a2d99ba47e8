//! The MongoDB store's own URL options (`collection`, `timeoutMS`), taken out before the
//! driver reads the rest.

use std::time::Duration;

use super::{DEFAULT_COLLECTION, OPERATION_TIMEOUT};
use crate::error::{Error, Result};
use crate::store::mask_password;

/// The longest `?timeoutMS=` accepted: an hour, as for the SQL stores' `?connect_timeout=`.
const MAX_OPERATION_TIMEOUT_MS: u64 = 3_600_000;

/// The parts of a store URL that are ours rather than the driver's.
#[derive(Debug)]
pub(super) struct StoreUrl {
    /// The URL without our options, for the driver.
    pub driver_url: String,
    /// `?collection=`, checked, or [`DEFAULT_COLLECTION`].
    pub collection: String,
    /// `?timeoutMS=`, or [`OPERATION_TIMEOUT`]: the bound on each operation.
    pub timeout: Duration,
}

impl StoreUrl {
    /// Takes our options out of `url`; a bad one is [`Error::InvalidUrl`].
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: mask_password(url),
            reason,
        };
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut collection = None;
        let mut timeout = None;
        let mut driver_options = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = || {
                percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .map(|value| value.into_owned())
                    .map_err(|_| invalid(format!("{key} is not valid UTF-8 once decoded")))
            };
            if key.eq_ignore_ascii_case("collection") {
                collection = Some(decoded()?);
            } else if key.eq_ignore_ascii_case("timeoutMS") {
                let ms = decoded()?
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0 && *ms <= MAX_OPERATION_TIMEOUT_MS)
                    .ok_or_else(|| {
                        invalid("timeoutMS must be a number of milliseconds from 1 to 3600000 (an hour)".into())
                    })?;
                timeout = Some(Duration::from_millis(ms));
            } else {
                driver_options.push(pair);
            }
        }
        let collection = collection.unwrap_or_else(|| DEFAULT_COLLECTION.to_owned());
        check_collection_name(&collection).map_err(|reason| invalid(reason.into()))?;
        let driver_url = if driver_options.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", driver_options.join("&"))
        };
        Ok(StoreUrl {
            driver_url,
            collection,
            timeout: timeout.unwrap_or(OPERATION_TIMEOUT),
        })
    }
}

/// MongoDB's rules for collection names that we can check without asking the server.
pub(super) fn check_collection_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("the collection name is empty")
    } else if name.contains(['$', '\0']) {
        Err("a collection name cannot contain '$' or NUL")
    } else if name.starts_with("system.") {
        Err("collections named system.* belong to MongoDB")
    } else if name.len() > 200 {
        Err("the collection name is longer than 200 bytes")
    } else {
        Ok(())
    }
}
