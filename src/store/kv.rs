//! Helpers shared by the key-value stores (Redis, etcd): their URL options and the
//! length-prefixed record in which they keep a lease's holder.
//!
//! A record is a run of fields, each written `<byte length>:<bytes>`. Unlike a separator, a
//! length prefix cannot be confused by a label or host name that contains the separator, and
//! the encoding of a run of fields is prefix-free, so "the stored value starts with the
//! encoding of (token, holder id)" means exactly "token and holder id are equal".

use std::time::{Duration, SystemTime};

use super::{Holder, mask_password};
use crate::error::{Error, Result};

/// How long connecting to a key-value store may take before it fails, unless the URL's
/// `?connect_timeout=` says otherwise.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one request may wait for its answer. A request that times out has an unknown
/// outcome; that is safe, because a lease we may have taken without knowing it simply expires.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest `?connect_timeout=` accepted.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// The options of our own in a key-value store URL's query.
#[derive(Debug)]
pub(crate) struct UrlOptions {
    /// Prepended to every key; `?prefix=`.
    pub prefix: String,
    /// Bound on connecting; `?connect_timeout=`.
    pub connect_timeout: Duration,
    /// The query parameters that are not ours, in order, for the driver.
    pub other: Vec<(String, String)>,
}

/// Splits `url` at its `?` into the part before it and our options; `default_prefix` applies
/// when the URL has no `?prefix=`.
pub(crate) fn parse_options<'u>(
    url: &'u str,
    default_prefix: &str,
) -> Result<(&'u str, UrlOptions)> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut options = UrlOptions {
        prefix: default_prefix.to_owned(),
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        other: Vec::new(),
    };
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "prefix" => {
                if value.chars().any(char::is_control) {
                    return Err(invalid_url(
                        url,
                        "?prefix= must not contain control characters",
                    ));
                }
                options.prefix = value.into_owned();
            }
            "connect_timeout" => {
                options.connect_timeout = humantime::parse_duration(&value)
                    .ok()
                    .filter(|timeout| !timeout.is_zero() && *timeout <= MAX_CONNECT_TIMEOUT)
                    .ok_or_else(|| {
                        invalid_url(
                            url,
                            format!(
                                "?connect_timeout={value} is not a duration between 1ms and 5m, e.g. 5s"
                            ),
                        )
                    })?;
            }
            _ => options.other.push((key.into_owned(), value.into_owned())),
        }
    }
    Ok((base, options))
}

/// [`Error::InvalidUrl`] for `url`, with its password masked.
pub(crate) fn invalid_url(url: &str, reason: impl Into<String>) -> Error {
    Error::InvalidUrl {
        url: mask_password(url),
        reason: reason.into(),
    }
}

/// The key of `name`'s record of `kind` (say `lease:`) under `prefix`.
pub(crate) fn key(prefix: &str, kind: &str, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + kind.len() + name.len());
    key.extend_from_slice(prefix.as_bytes());
    key.extend_from_slice(kind.as_bytes());
    key.extend_from_slice(name.as_bytes());
    key
}

/// Appends one length-prefixed field to `out`.
pub(crate) fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(field.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(field);
}

/// The fields of `holder` in record order: id, pid, host, label.
pub(crate) fn encode_holder(holder: &Holder) -> Vec<u8> {
    let mut out = Vec::with_capacity(holder.id.len() + holder.host.len() + holder.label.len() + 24);
    push_field(&mut out, holder.id.as_bytes());
    push_field(&mut out, holder.pid.to_string().as_bytes());
    push_field(&mut out, holder.host.as_bytes());
    push_field(&mut out, holder.label.as_bytes());
    out
}

/// Reads the fields of a record one after another; every read is checked, so a value that
/// somebody else wrote under our prefix is refused instead of misread.
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// A reader at the start of `record`.
    pub fn new(record: &'a [u8]) -> Self {
        Fields { rest: record }
    }

    /// The next field's bytes.
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let colon = self.rest.iter().position(|&b| b == b':')?;
        let digits = &self.rest[..colon];
        if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let body = self.rest.get(colon + 1..colon + 1 + len)?;
        self.rest = &self.rest[colon + 1 + len..];
        Some(body)
    }

    /// The next field as UTF-8 text.
    pub fn text(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    /// The next field as a decimal number.
    pub fn number<T: std::str::FromStr>(&mut self) -> Option<T> {
        self.text()?.parse().ok()
    }

    /// The holder fields written by [`encode_holder`].
    pub fn holder(&mut self) -> Option<Holder> {
        Some(Holder {
            id: self.text()?.to_owned(),
            pid: self.number()?,
            host: self.text()?.to_owned(),
            label: self.text()?.to_owned(),
        })
    }

    /// Whether every field has been read.
    pub fn is_done(&self) -> bool {
        self.rest.is_empty()
    }
}

/// Milliseconds since the Unix epoch as a [`SystemTime`].
pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// The name in `key` if it is `prefix` + `kind` + a valid name; `None` for any other key, so
/// that keys of another kind, another prefix or a foreign program are never read as leases.
pub(crate) fn name_of_key<'k>(key: &'k [u8], prefix: &str, kind: &str) -> Option<&'k str> {
    let name = key
        .strip_prefix(prefix.as_bytes())?
        .strip_prefix(kind.as_bytes())?;
    let name = std::str::from_utf8(name).ok()?;
    super::validate_name(name).ok().map(|()| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_whatever_the_fields_contain() {
        let holder = Holder {
            id: "1:2:3".into(),
            host: "h:o\ns t".into(),
            pid: 42,
            label: "".into(),
        };
        let mut record = Vec::new();
        push_field(&mut record, b"17");
        record.extend(encode_holder(&holder));
        push_field(&mut record, b"1700000000123");
        let mut fields = Fields::new(&record);
        assert_eq!(fields.number::<u64>(), Some(17));
        assert_eq!(fields.holder(), Some(holder));
        assert_eq!(fields.number::<u64>(), Some(1_700_000_000_123));
        assert!(fields.is_done());
        assert_eq!(
            Fields::new(b"5:abc").bytes(),
            None,
            "a short field is refused"
        );
        assert_eq!(Fields::new(b"x:abc").bytes(), None);
        assert_eq!(Fields::new(b"abc").bytes(), None);
    }

    #[test]
    fn keys_are_parsed_strictly() {
        assert_eq!(name_of_key(b"p:lease:a/b", "p:", "lease:"), Some("a/b"));
        assert_eq!(name_of_key(b"p:fence:a", "p:", "lease:"), None);
        assert_eq!(name_of_key(b"q:lease:a", "p:", "lease:"), None);
        assert_eq!(name_of_key(b"p:lease:", "p:", "lease:"), None);
        assert_eq!(name_of_key(b"p:lease:\xff", "p:", "lease:"), None);
    }

    #[test]
    fn options_are_parsed() {
        let (base, options) = parse_options(
            "redis://h:1/0?prefix=app%3A&connect_timeout=2s&protocol=resp3",
            "s:",
        )
        .unwrap();
        assert_eq!(base, "redis://h:1/0");
        assert_eq!(options.prefix, "app:");
        assert_eq!(options.connect_timeout, Duration::from_secs(2));
        assert_eq!(options.other, [("protocol".to_owned(), "resp3".to_owned())]);
        let (_, options) = parse_options("etcd://h", "singleton/").unwrap();
        assert_eq!(options.prefix, "singleton/");
        assert_eq!(options.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        let err = parse_options("redis://u:pw@h?connect_timeout=0s", "s:").unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{err}");
        assert!(!err.to_string().contains("pw"), "{err}");
    }
}
