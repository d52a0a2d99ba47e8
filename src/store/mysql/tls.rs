//! TLS for the MySQL store: the mysql client's `ssl-mode`, `ssl-ca`, `ssl-cert` and `ssl-key`
//! read into a [`Tls`], turned into mysql_async's [`SslOpts`], and the driver's failures turned
//! into one line that names the cause.
//!
//! Two things need more than options, as the driver cannot do them itself:
//!
//! - `PREFERRED` (the default) asks for TLS and falls back to plaintext only when the server
//!   announces no TLS at all (the driver's `NoClientSslFlagFromServer`); a plaintext connection
//!   that the server refuses for want of TLS (`require_secure_transport`) goes back to TLS. The
//!   choice is kept for every later connection of the store, so that a plaintext server costs
//!   one refused attempt per store, not one per connection.
//! - `VERIFY_CA` checks the CA but not the host name. mysql_async 0.37's own switch for that
//!   (`with_danger_skip_domain_validation`) has no effect with this rustls (it looks for
//!   `NotValidForName` in the error's text, which rustls no longer prints; blackbeam/mysql_async
//!   #404). rustls checks the chain before the name, so a name mismatch says that the chain is
//!   good, and lists the names the certificate is valid for: the store connects again,
//!   verifying against one of those names (`with_danger_tls_hostname_override`). The connection
//!   it keeps is thus checked in full against the CA, as `VERIFY_CA` asks; the store remembers
//!   the name, so this costs one extra handshake per store.

use std::sync::{Mutex, PoisonError};

use mysql_async::{ClientIdentity, DriverError, IoError, Opts, OptsBuilder, SslOpts};
use rustls::CertificateError;

use crate::store::sql::SqlUrl;
use crate::store::tls::{self, Identity, Mode, Names, Tls, TlsError};

/// The mysql client's names for the TLS parameters.
const NAMES: Names = Names {
    mode: "ssl-mode",
    ca: "ssl-ca",
    cert: "ssl-cert",
    key: Some("ssl-key"),
};

/// `ssl-mode`'s values, as the mysql client spells them, and what they mean.
const MODES: [(&str, Mode); 5] = [
    ("DISABLED", Mode::Disable),
    ("PREFERRED", Mode::Prefer),
    ("REQUIRED", Mode::Require),
    ("VERIFY_CA", Mode::VerifyCa),
    ("VERIFY_IDENTITY", Mode::VerifyFull),
];

/// mysql_async's own TLS switches, which `ssl-mode` replaces: mixing both would leave it
/// unclear which one wins, and some of them weaken the check.
const DRIVER_TLS_PARAMS: [&str; 4] = [
    "require_ssl",
    "verify_ca",
    "verify_identity",
    "built_in_roots",
];

/// MySQL's "Connections using insecure transport are prohibited while
/// --require_secure_transport=ON". MariaDB (10.11) answers such a connection with
/// [`ER_ACCESS_DENIED`] instead.
const ER_SECURE_TRANSPORT_REQUIRED: u16 = 3159;

/// The server's "Access denied for user".
const ER_ACCESS_DENIED: u16 = 1045;

fn mode_name(mode: Mode) -> &'static str {
    MODES
        .iter()
        .find(|(_, m)| *m == mode)
        .map_or("?", |(name, _)| name)
}

/// Takes the TLS parameters out of the driver's part of `url`: `Err` is why they cannot work,
/// for a usage error.
pub(super) fn parse(url: &mut SqlUrl) -> Result<Tls, String> {
    let mut tls = Tls::new(Mode::Prefer, &NAMES);
    let mut mode = None;
    let mut driver_tls = None;
    let mut socket = false;
    url.take_params(|key, value| {
        if DRIVER_TLS_PARAMS.contains(&key) {
            driver_tls.get_or_insert(key.to_owned());
        }
        if key == "socket" || key == "prefer_socket" && value != "false" {
            socket = true;
        }
        if key == NAMES.mode {
            mode = Some(value.to_owned());
            true
        } else {
            tls.take(key, value)
        }
    });
    if let Some(param) = driver_tls {
        return Err(format!(
            "?{param}= is mysql_async's own TLS switch; say ?ssl-mode=REQUIRED, VERIFY_CA or \
             VERIFY_IDENTITY instead"
        ));
    }
    if let Some(value) = mode {
        tls.mode = tls::mode_named(&MODES, NAMES.mode, &value, true)?.1;
    }
    tls.check()?;
    let given = mode_name(tls.mode);
    if tls.ca.is_some() && !tls.mode.verifies_chain() {
        return Err(format!(
            "?ssl-ca= is only read by ssl-mode=VERIFY_CA or VERIFY_IDENTITY, not {given}: \
             say which check you want"
        ));
    }
    if tls.cert.is_some() && !tls.mode.wants_tls() {
        return Err("?ssl-cert= needs TLS, which ssl-mode=DISABLED turns off".to_owned());
    }
    if socket && !matches!(tls.mode, Mode::Disable | Mode::Prefer) {
        return Err(format!(
            "a unix socket connection (?socket=, ?prefer_socket=) never uses TLS, which \
             ssl-mode={given} requires"
        ));
    }
    Ok(tls)
}

/// How the store's connections use TLS; see the module docs.
#[derive(Debug)]
pub(super) struct Transport {
    tls: Tls,
    /// The options of a connection as the URL asks for it.
    first: Opts,
    /// The options new pools are made with: `first`, or what an earlier connection learnt.
    current: Mutex<Opts>,
}

impl Transport {
    /// Reads and checks the TLS files, so that an unusable one is reported before anything
    /// goes on the wire, and sets `base` up for the mode.
    pub fn new(tls: Tls, base: Opts) -> Result<Self, TlsError> {
        let first: Opts = OptsBuilder::from_opts(base)
            .ssl_opts(ssl_opts(&tls)?)
            .into();
        Ok(Transport {
            tls,
            current: Mutex::new(first.clone()),
            first,
        })
    }

    /// The options for a new pool.
    pub fn opts(&self) -> Opts {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// After a connection made with `used` failed with `err`: whether connecting again with
    /// the (now changed) [`Transport::opts`] can succeed, under the rules of the module docs.
    pub fn learn(&self, used: &Opts, err: &mysql_async::Error) -> bool {
        let next: Opts = match (self.tls.mode, err) {
            (Mode::Prefer, mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer)) => {
                tracing::debug!(
                    "the server offers no TLS; ssl-mode=PREFERRED goes on in plaintext"
                );
                OptsBuilder::from_opts(self.first.clone())
                    .ssl_opts(None::<SslOpts>)
                    .into()
            }
            (Mode::Prefer, mysql_async::Error::Server(server))
                if server.code == ER_SECURE_TRANSPORT_REQUIRED =>
            {
                self.first.clone()
            }
            (Mode::VerifyCa, _) => {
                let Some(name) = certificate_name(err) else {
                    return false;
                };
                let ssl = self
                    .first
                    .ssl_opts()
                    .cloned()
                    .map(|ssl| ssl.with_danger_tls_hostname_override(Some(name)));
                OptsBuilder::from_opts(self.first.clone())
                    .ssl_opts(ssl)
                    .into()
            }
            _ => return false,
        };
        if next == *used {
            return false;
        }
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = next;
        true
    }

    /// The one-line cause of a failed connection, when it is about TLS or about what the
    /// server requires of the connection: such failures do not go away by trying again.
    pub fn explain(&self, err: &mysql_async::Error) -> Option<String> {
        let given = mode_name(self.tls.mode);
        match err {
            mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer) => {
                Some(format!("the server does not offer TLS (ssl-mode={given})"))
            }
            mysql_async::Error::Server(server) if server.code == ER_SECURE_TRANSPORT_REQUIRED => {
                Some(format!(
                    "the server accepts only TLS connections (require_secure_transport), and \
                     ssl-mode={given} connected without: use ssl-mode=REQUIRED or a VERIFY_ mode \
                     ({})",
                    server.message
                ))
            }
            // MariaDB refuses a plaintext connection to a TLS-only server, and an account
            // that requires a client certificate, as it refuses a wrong password.
            mysql_async::Error::Server(server) if server.code == ER_ACCESS_DENIED => {
                let hint = if !self.tls.mode.wants_tls() {
                    "if the server accepts only TLS connections (require_secure_transport), \
                     use ssl-mode=REQUIRED or a VERIFY_ mode"
                } else if self.tls.cert.is_none() {
                    "if the account requires a client certificate (REQUIRE X509), give one \
                     with ?ssl-cert= and ?ssl-key="
                } else {
                    return None;
                };
                Some(format!("{}; {hint}", crate::store::sql::OneLine::of(err)))
            }
            // VERIFY_CA retries against a name the certificate lists (see the module docs):
            // a certificate that lists none cannot be checked by rustls at all.
            mysql_async::Error::Io(_)
                if self.tls.mode == Mode::VerifyCa
                    && certificate_names(err).is_some_and(|names| names.is_empty()) =>
            {
                Some(
                    "TLS: the server's certificate names no host (no subjectAltName), so it \
                     cannot be checked, not even by ssl-mode=VERIFY_CA: give the server a \
                     certificate with a subjectAltName"
                        .to_owned(),
                )
            }
            mysql_async::Error::Io(io) => {
                let text = crate::store::sql::OneLine::of(err).to_string();
                match self.tls.explain(&text) {
                    Some(line) => Some(line.to_string()),
                    None => matches!(io, IoError::Tls(_)).then(|| format!("TLS: {text}")),
                }
            }
            _ => None,
        }
    }
}

/// The driver's options for `tls`, with the files read and checked now: the driver gets their
/// text, not their paths.
fn ssl_opts(tls: &Tls) -> Result<Option<SslOpts>, TlsError> {
    if !tls.mode.wants_tls() {
        return Ok(None);
    }
    let mut ssl = SslOpts::default();
    if let Some(Identity { cert, key }) = tls.identity_pem()? {
        // Also checks that the key fits the certificate, which the driver would only find at
        // the handshake.
        tls.client_config()?;
        ssl = ssl.with_client_identity(Some(ClientIdentity::new(cert.into(), key.into())));
    }
    Ok(Some(if tls.mode.verifies_chain() {
        // As text or DER, which the driver tells apart itself.
        let roots = match tls.ca_pem()? {
            Some(pem) => vec![pem],
            None => system_roots()?,
        };
        // Only these CAs, as the mysql client: not the driver's built-in web roots too.
        ssl.with_root_certs(roots.into_iter().map(Into::into).collect())
            .with_disable_built_in_roots(true)
            .with_danger_skip_domain_validation(tls.mode == Mode::VerifyCa)
    } else {
        // PREFERRED and REQUIRED encrypt, but do not check whom to.
        ssl.with_danger_accept_invalid_certs(true)
    }))
}

/// The system's CA certificates that rustls can use (the driver refuses a whole list for one
/// it cannot).
fn system_roots() -> Result<Vec<Vec<u8>>, TlsError> {
    let mut usable = rustls::RootCertStore::empty();
    let roots: Vec<Vec<u8>> = rustls_native_certs::load_native_certs()
        .certs
        .into_iter()
        .filter(|cert| usable.add(cert.clone()).is_ok())
        .map(|cert| cert.to_vec())
        .collect();
    if roots.is_empty() {
        return Err(TlsError::new(
            "no CA certificates found on this system to check the server with; name a CA \
             file with ?ssl-ca=",
        ));
    }
    Ok(roots)
}

/// rustls's error inside the driver's, if it is one: the handshake's comes wrapped in an I/O
/// error.
fn rustls_error(err: &mysql_async::Error) -> Option<&rustls::Error> {
    match err {
        mysql_async::Error::Io(IoError::Tls(mysql_async::TlsError::Tls(err))) => Some(err),
        mysql_async::Error::Io(IoError::Io(io)) => io.get_ref()?.downcast_ref(),
        _ => None,
    }
}

/// The names the server's certificate is valid for, when `err` says that it is not valid for
/// the host connected to (and so that its chain is good): `localhost` from rustls's
/// `DnsName("localhost")`, `10.0.0.1` from `IpAddress(10.0.0.1)`.
fn certificate_names(err: &mysql_async::Error) -> Option<Vec<&str>> {
    let Some(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
        presented,
        ..
    })) = rustls_error(err)
    else {
        return None;
    };
    Some(
        presented
            .iter()
            .filter_map(|name| {
                name.strip_prefix("DnsName(\"")
                    .and_then(|rest| rest.strip_suffix("\")"))
                    .or_else(|| {
                        name.strip_prefix("IpAddress(")
                            .and_then(|rest| rest.strip_suffix(')'))
                    })
            })
            .collect(),
    )
}

/// A name to verify the server's certificate against when it does not name the host connected
/// to (see the module docs): the first it names; a wildcard stands for any one name it covers.
fn certificate_name(err: &mysql_async::Error) -> Option<String> {
    let names = certificate_names(err)?;
    let name = names.first()?;
    Some(match name.strip_prefix("*.") {
        Some(domain) => format!("any.{domain}"),
        None => (*name).to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> Result<Tls, String> {
        parse(&mut SqlUrl::parse(url).expect("a URL"))
    }

    #[test]
    fn modes_are_read_as_the_mysql_client_spells_them() {
        assert_eq!(parsed("mysql://h/db").unwrap().mode, Mode::Prefer);
        for (value, mode) in [
            ("disabled", Mode::Disable),
            ("Preferred", Mode::Prefer),
            ("REQUIRED", Mode::Require),
            ("verify_ca&ssl-ca=/ca.pem", Mode::VerifyCa),
            ("VERIFY_IDENTITY", Mode::VerifyFull),
        ] {
            assert_eq!(
                parsed(&format!("mysql://h/db?ssl-mode={value}"))
                    .unwrap()
                    .mode,
                mode
            );
        }
        let mut url = SqlUrl::parse("mysql://h/db?ssl-mode=VERIFY_CA&ssl-ca=/ca.pem&x=1").unwrap();
        let tls = parse(&mut url).unwrap();
        assert_eq!(tls.ca.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(
            url.driver_url(&[]),
            "mysql://h/db?x=1",
            "ours are taken out"
        );
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        for (url, says) in [
            (
                "ssl-mode=verify",
                "not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY",
            ),
            ("require_ssl=true", "ssl-mode=REQUIRED"),
            (
                "ssl-mode=REQUIRED&verify_identity=false",
                "mysql_async's own",
            ),
            ("ssl-ca=/ca.pem", "only read by ssl-mode=VERIFY_CA"),
            ("ssl-mode=REQUIRED&ssl-ca=/ca.pem", "not REQUIRED"),
            (
                "ssl-mode=DISABLED&ssl-cert=/c&ssl-key=/k",
                "ssl-mode=DISABLED",
            ),
            ("ssl-mode=REQUIRED&ssl-cert=/c", "needs ?ssl-key"),
            (
                "ssl-mode=REQUIRED&socket=/run/mysqld.sock",
                "never uses TLS",
            ),
            (
                "ssl-mode=VERIFY_CA&ssl-ca=/ca.pem&prefer_socket=true",
                "never uses TLS",
            ),
            // Any certificate of any public CA would pass.
            ("ssl-mode=VERIFY_CA", "needs the server's CA in ?ssl-ca="),
        ] {
            let err = parsed(&format!("mysql://h/db?{url}")).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
        }
        assert!(
            parsed("mysql://h/db?socket=/s").is_ok(),
            "PREFERRED allows a socket"
        );
    }
}
