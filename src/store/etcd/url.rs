//! What an etcd URL says: `etcd[s]://[user:password@]host[:port][,host[:port]…][?options]`,
//! parsed once into a [`Target`] before anything connects.
//!
//! `etcds://` (or `etcd://…?tls=true`) connects in TLS to every endpoint, verifying the
//! server's certificate and host name as etcdctl does; `?cacert=`, `?cert=` and `?key=` are
//! etcdctl's `--cacert`, `--cert` and `--key`. A TLS file named on a plaintext URL is a usage
//! error rather than quietly ignored.

use std::time::Duration;

use super::DEFAULT_PREFIX;
use crate::error::Result;
use crate::store::kv;
use crate::store::tls::{Mode, Names, Tls};

/// Port of an endpoint that names none.
const DEFAULT_PORT: u16 = 2379;

/// etcdctl's names for the TLS files.
pub(super) static NAMES: Names = Names {
    mode: "etcds://",
    ca: "cacert",
    cert: "cert",
    key: Some("key"),
};

/// A user name and password, decoded.
pub(super) type Login = (String, String);

/// Everything an etcd URL says. Its `Debug` hides the password.
pub(super) struct Target {
    /// `http://host:port`, or `https://host:port` with TLS, one per member named.
    pub endpoints: Vec<String>,
    /// `user:password@`.
    pub user: Option<Login>,
    /// The TLS settings, for `etcds://` and `?tls=true`; `None` for plaintext.
    pub tls: Option<Tls>,
    /// `?prefix=`.
    pub prefix: String,
    /// `?connect_timeout=`.
    pub connect_timeout: Duration,
    /// `?allow_unsafe_version=`.
    pub allow_unsafe_version: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user.as_ref().map(|(user, _)| (user, "***")))
            .field("tls", &self.tls)
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("allow_unsafe_version", &self.allow_unsafe_version)
            .finish()
    }
}

/// Parses `url`; every mistake is [`Error::InvalidUrl`], with the password masked.
pub(super) fn parse(url: &str) -> Result<Target> {
    let (base, options) = kv::parse_options(url, DEFAULT_PREFIX)?;
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| kv::invalid_url(url, "expected etcd://host:port[,host:port...]"))?;
    let etcds = scheme.eq_ignore_ascii_case("etcds");
    let mut tls = Tls::new(Mode::VerifyFull, &NAMES);
    let (mut tls_flag, mut allow_unsafe_version, mut files) = (None, false, Vec::new());
    for (key, value) in &options.other {
        match key.as_str() {
            "tls" => tls_flag = Some(super::super::flag(url, key, value)?),
            "allow_unsafe_version" => {
                allow_unsafe_version = super::super::flag(url, key, value)?;
            }
            // The query was decoded already; `take` decodes a path itself.
            _ if tls.take_decoded(key, value) => files.push(key.as_str()),
            _ => {
                return Err(kv::invalid_url(
                    url,
                    format!(
                        "unknown option ?{key}=; known: prefix, connect_timeout, allow_unsafe_version, tls, cacert, cert, key"
                    ),
                ));
            }
        }
    }
    let tls = match (etcds, tls_flag) {
        (true, Some(false)) => {
            return Err(kv::invalid_url(
                url,
                "etcds:// always uses TLS; write etcd:// for plaintext",
            ));
        }
        (true, _) | (false, Some(true)) => {
            tls.check().map_err(|reason| kv::invalid_url(url, reason))?;
            Some(tls)
        }
        (false, _) => {
            if let Some(first) = files.first() {
                return Err(kv::invalid_url(
                    url,
                    format!(
                        "?{first}= is a TLS setting, but etcd:// is plaintext; write etcds://… (or add ?tls=true) to connect in TLS"
                    ),
                ));
            }
            None
        }
    };
    let (endpoints, user) = parse_hosts(url, rest, tls.is_some())?;
    Ok(Target {
        endpoints,
        user,
        tls,
        prefix: options.prefix,
        connect_timeout: options.connect_timeout,
        allow_unsafe_version,
    })
}

/// The endpoints and credentials of the part after `scheme://` (without the query).
fn parse_hosts(url: &str, rest: &str, tls: bool) -> Result<(Vec<String>, Option<Login>)> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err(kv::invalid_url(
            url,
            "an etcd URL has no path; set the key prefix with ?prefix=",
        ));
    }
    let (user, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let decode = |part: &str| {
                percent_encoding::percent_decode_str(part)
                    .decode_utf8()
                    .map(|text| text.into_owned())
                    .map_err(|_| kv::invalid_url(url, "the user name or password is not UTF-8"))
            };
            let (user, password) = userinfo.split_once(':').ok_or_else(|| {
                kv::invalid_url(url, "credentials must be given as user:password@")
            })?;
            (Some((decode(user)?, decode(password)?)), hosts)
        }
        None => (None, rest),
    };
    let endpoints = hosts
        .split(',')
        .map(|host| endpoint(url, host, tls))
        .collect::<Result<Vec<_>>>()?;
    Ok((endpoints, user))
}

/// `host:port` of an endpoint built by [`endpoint`], for messages.
pub(super) fn host_of(endpoint: &str) -> &str {
    endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint)
}

/// `http://host:port` (`https://` with TLS) for one `host[:port]` of the URL.
fn endpoint(url: &str, host: &str, tls: bool) -> Result<String> {
    let bad = || kv::invalid_url(url, format!("{host:?} is not host[:port]"));
    // An IPv6 address comes in brackets: [::1]:2379.
    let (name, port) = match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => (&host[..colon], Some(&host[colon + 1..])),
        _ => (host, None),
    };
    if name.is_empty() || name.contains(['@', '?', '#', ' ']) {
        return Err(bad());
    }
    let port: u16 = match port {
        Some(port) => port.parse().map_err(|_| bad())?,
        None => DEFAULT_PORT,
    };
    let scheme = if tls { "https" } else { "http" };
    Ok(format!("{scheme}://{name}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn targets_are_parsed() {
        let target = parse("etcd://u%40x:p%3Aw@a:1,[::1]:2,b/").unwrap();
        assert_eq!(
            target.endpoints,
            ["http://a:1", "http://[::1]:2", "http://b:2379"]
        );
        assert_eq!(target.user, Some(("u@x".to_owned(), "p:w".to_owned())));
        assert!(target.tls.is_none());
        for bad in [
            "etcd://a:x",
            "etcd://a:1/path",
            "etcd://,a",
            "etcd://u@a",
            "etcd://a?tls=yes",
        ] {
            assert!(matches!(parse(bad), Err(Error::InvalidUrl { .. })), "{bad}");
        }
    }

    #[test]
    fn tls_is_asked_for_by_the_scheme_or_the_flag() {
        let target = parse("etcds://a:1,b?cacert=/c%20a.pem&cert=/c.pem&key=/k.pem").unwrap();
        assert_eq!(target.endpoints, ["https://a:1", "https://b:2379"]);
        let tls = target.tls.expect("TLS");
        assert_eq!(tls.mode, Mode::VerifyFull);
        assert_eq!(tls.ca.as_deref(), Some(std::path::Path::new("/c a.pem")));
        assert_eq!(tls.key.as_deref(), Some(std::path::Path::new("/k.pem")));

        let target = parse("etcd://a:1?tls=true").unwrap();
        assert_eq!(target.endpoints, ["https://a:1"]);
        assert!(target.tls.expect("TLS").ca.is_none());
        assert!(parse("etcd://a:1?tls=false").unwrap().tls.is_none());
    }

    #[test]
    fn tls_settings_never_go_quietly_unused() {
        for (url, says) in [
            ("etcd://u:pw@a:1?cacert=/ca.pem", "write etcds://"),
            (
                "etcd://a:1?tls=false&cert=/c.pem&key=/k.pem",
                "write etcds://",
            ),
            ("etcds://a:1?tls=false", "etcds:// always uses TLS"),
            ("etcds://a:1?cert=/c.pem", "?cert needs ?key too"),
        ] {
            let err = parse(url).unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
            let text = err.to_string();
            assert!(text.contains(says), "{url}: {text}");
            assert!(!text.contains("pw"), "{text}");
        }
    }
}
