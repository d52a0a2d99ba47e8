//! What the PostgreSQL and MySQL stores share: our own URL options (`table`, `connect_timeout`),
//! table-name validation, one-line driver errors, and conversions of stored numbers.

use std::fmt;
use std::time::Duration;

use super::{FencingToken, mask_password};
use crate::error::{Error, Result};

/// The table used when the URL has no `?table=`.
pub(crate) const DEFAULT_TABLE: &str = "singleton_locks";

/// The scratch table for [`super::Store::benchmark_floor`] is the lease table's name plus this.
const SCRATCH_SUFFIX: &str = "_bench";

/// PostgreSQL's table of waiters that want word of releases is the lease table's name plus this.
const WAITERS_SUFFIX: &str = "_waits";

/// Longest table name: PostgreSQL cuts identifiers at 63 bytes (MySQL at 64), and the scratch
/// and waiters tables' names must fit too.
const MAX_TABLE_LEN: usize = 63
    - if SCRATCH_SUFFIX.len() > WAITERS_SUFFIX.len() {
        SCRATCH_SUFFIX.len()
    } else {
        WAITERS_SUFFIX.len()
    };

/// How long connecting may take when the URL has no `?connect_timeout=`.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A SQL store URL with our own options taken out; the rest goes to the driver.
#[derive(Debug)]
pub(crate) struct SqlUrl {
    /// The URL with the password masked, for messages.
    pub masked: String,
    /// The lease table, a validated plain identifier (quote it anyway).
    pub table: String,
    /// Bound on establishing one connection, including authentication.
    pub connect_timeout: Duration,
    /// Everything before `?`.
    base: String,
    /// The query parameters meant for the driver, as given.
    driver_params: Vec<(String, String)>,
}

impl SqlUrl {
    /// Splits `url` into our options and the driver's.
    pub fn parse(url: &str) -> Result<Self> {
        let masked = mask_password(url);
        let invalid = |reason: String| Error::InvalidUrl {
            url: masked.clone(),
            reason,
        };
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut table = DEFAULT_TABLE.to_owned();
        let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;
        let mut driver_params = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "table" => {
                    validate_table(value).map_err(invalid)?;
                    value.clone_into(&mut table);
                }
                "connect_timeout" => {
                    connect_timeout = parse_timeout(value).map_err(invalid)?;
                }
                _ => driver_params.push((key.to_owned(), value.to_owned())),
            }
        }
        Ok(SqlUrl {
            masked,
            table,
            connect_timeout,
            base: base.to_owned(),
            driver_params,
        })
    }

    /// Takes out of the driver's part of the query every `key=value` (value as given, still
    /// percent-encoded) for which `take` says `true`: the options a store reads itself, such as
    /// its TLS settings, which the driver must not see.
    pub fn take_params(&mut self, mut take: impl FnMut(&str, &str) -> bool) {
        self.driver_params.retain(|(key, value)| !take(key, value));
    }

    /// Whether the driver part of the query sets `key`.
    pub fn has_driver_param(&self, key: &str) -> bool {
        self.driver_params.iter().any(|(k, _)| k == key)
    }

    /// The URL for the driver: ours without our options, plus `defaults` the user did not set.
    pub fn driver_url(&self, defaults: &[(&str, &str)]) -> String {
        let mut params: Vec<String> = self
            .driver_params
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        for (key, value) in defaults {
            if !self.has_driver_param(key) {
                params.push(format!("{key}={value}"));
            }
        }
        if params.is_empty() {
            self.base.clone()
        } else {
            format!("{}?{}", self.base, params.join("&"))
        }
    }

    /// The name of the scratch table for the benchmark floor.
    pub fn scratch_table(&self) -> String {
        format!("{}{SCRATCH_SUFFIX}", self.table)
    }

    /// The name of PostgreSQL's table of waiters.
    #[cfg(feature = "postgres")]
    pub fn waiters_table(&self) -> String {
        format!("{}{WAITERS_SUFFIX}", self.table)
    }

    /// [`Error::Store`] for this URL with the driver error flattened to one line.
    pub fn error(&self, operation: &'static str, err: impl std::error::Error) -> Error {
        Error::store(&self.masked, operation, OneLine::of(&err))
    }

    /// [`Error::Refused`] for this URL: the server refused our credentials or our access.
    pub fn refused(&self, operation: &'static str, err: impl std::error::Error) -> Error {
        Error::refused(&self.masked, operation, OneLine::of(&err))
    }

    /// [`Error::Timeout`] for a connection that could not be made in time.
    pub fn connect_timed_out(&self, operation: &'static str) -> Error {
        Error::Timeout {
            store: self.masked.clone(),
            operation,
            after: self.connect_timeout,
        }
    }
}

/// A table name must be a plain identifier: it is put into SQL text (quoted), so nothing that
/// could change the statement's meaning may pass.
fn validate_table(table: &str) -> Result<(), String> {
    let mut chars = table.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain && table.len() <= MAX_TABLE_LEN {
        Ok(())
    } else {
        Err(format!(
            "table {table:?} is not a plain identifier: use 1 to {MAX_TABLE_LEN} ASCII letters, \
             digits and underscores, not starting with a digit"
        ))
    }
}

/// `connect_timeout=` takes `5s`, `500ms`, or whole seconds as libpq does (`5`).
fn parse_timeout(value: &str) -> Result<Duration, String> {
    let parsed = match value.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(value).map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(timeout) if !timeout.is_zero() && timeout <= Duration::from_secs(3600) => Ok(timeout),
        Ok(_) => Err(format!(
            "connect_timeout={value} must be more than zero and at most an hour"
        )),
        Err(e) => Err(format!("connect_timeout={value}: {e}")),
    }
}

/// A driver error as one line: its message and the messages of its sources that it does not
/// already include, with line breaks (e.g. PostgreSQL's `DETAIL:`) folded, so the CLI prints one
/// line. Drivers do not put connection strings in their errors, so no password shows.
#[derive(Debug)]
pub(crate) struct OneLine(String);

impl OneLine {
    pub fn of(err: &dyn std::error::Error) -> Self {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            let message = cause.to_string();
            if !text.contains(&message) {
                text.push_str(": ");
                text.push_str(&message);
            }
            source = cause.source();
        }
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        // Some drivers repeat a wrapper's prefix ("Input/output error: Input/output error: …").
        let mut parts: Vec<&str> = text.split(": ").collect();
        parts.dedup();
        OneLine(parts.join(": "))
    }
}

impl fmt::Display for OneLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OneLine {}

/// A token as stored in a signed or unsigned 64-bit column.
pub(crate) fn token(stored: impl TryInto<u64>) -> FencingToken {
    FencingToken(stored.try_into().unwrap_or(0))
}

/// A lease length in microseconds, as the SQL interval arithmetic takes it.
pub(crate) fn micros(ttl: Duration) -> Result<i64, String> {
    i64::try_from(ttl.as_micros()).map_err(|_| format!("lease length {ttl:?} is too large"))
}

/// A stored pid.
pub(crate) fn pid(stored: impl TryInto<u32>) -> u32 {
    stored.try_into().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_options_are_taken_out_and_the_rest_kept() {
        let url = SqlUrl::parse(
            "postgres://u:pw@h:5/db?sslmode=disable&table=my_locks&connect_timeout=2s&x=y",
        )
        .unwrap();
        assert_eq!(url.table, "my_locks");
        assert_eq!(url.connect_timeout, Duration::from_secs(2));
        assert_eq!(url.masked.matches("pw").count(), 0);
        assert_eq!(
            url.driver_url(&[("x", "z"), ("prefer_socket", "false")]),
            "postgres://u:pw@h:5/db?sslmode=disable&x=y&prefer_socket=false"
        );
        let plain = SqlUrl::parse("mysql://h/db").unwrap();
        assert_eq!(plain.table, DEFAULT_TABLE);
        assert_eq!(plain.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(plain.driver_url(&[]), "mysql://h/db");
        assert_eq!(
            SqlUrl::parse("mysql://h/db?connect_timeout=3")
                .unwrap()
                .connect_timeout,
            Duration::from_secs(3)
        );
    }

    #[test]
    fn only_plain_identifiers_are_tables() {
        for good in ["t", "_x", "Locks_2", &"a".repeat(MAX_TABLE_LEN)] {
            assert!(validate_table(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1t",
            "a-b",
            "a;drop table x",
            "a\"b",
            "a`b",
            "s.t",
            "ü",
            "a%20b",
            &"a".repeat(MAX_TABLE_LEN + 1),
        ] {
            let err = SqlUrl::parse(&format!("postgres://u:secret@h/db?table={bad}")).unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{bad}: {err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        for bad in ["0", "0s", "soon", "2h"] {
            let err = SqlUrl::parse(&format!("mysql://h/db?connect_timeout={bad}")).unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn errors_are_one_line() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("db error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = Outer(std::io::Error::other(
            "db error: FATAL: no\nDETAIL: because",
        ));
        assert_eq!(
            OneLine::of(&err).to_string(),
            "db error: FATAL: no DETAIL: because"
        );
    }
}
