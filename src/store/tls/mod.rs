//! TLS for the network stores, parsed once into one shape: each store reads its own client's URL
//! parameters (libpq's `sslmode`/`sslrootcert`, MySQL's `ssl-mode`/`ssl-ca`, etcdctl's
//! `cacert`, …) into a [`Tls`], and turns that into its driver's configuration: a rustls
//! [`ClientConfig`](rustls::ClientConfig) ([`Tls::client_config`]) or the checked files a driver
//! reads itself ([`Tls::ca_pem`], [`Tls::identity_pem`]).
//!
//! Every failure is one line that names the cause and the parameter to look at, so that a user
//! can fix it without reading a handshake trace: [`Tls::client_config`] and friends check the
//! files before anything connects, and [`explain`] turns a driver's handshake error into such a
//! line. A mode that requires TLS never falls back to plaintext; only [`Mode::Prefer`] does, and
//! only when the server says it has no TLS at all (the store decides that, as only it can read
//! the server's answer).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

#[cfg(feature = "etcd")]
pub(crate) use probe::handshake;
pub(crate) use probe::speaks_tls;
use verify::{AnyName, Unverified};

mod probe;
mod verify;

/// Makes ring the process's rustls crypto provider unless the program has chosen one: drivers
/// that build their rustls configuration themselves (Redis, MySQL) need one, and rustls refuses
/// to pick one by itself when a build enables more than one.
pub(crate) fn ensure_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How much TLS a connection gets, from nothing to a fully verified server; libpq's `sslmode`
/// values, which the other stores' options map onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Plaintext.
    Disable,
    /// TLS without checking the server's certificate, or plaintext when the server has no TLS.
    Prefer,
    /// TLS without checking the server's certificate.
    Require,
    /// TLS with a server certificate signed by a trusted CA, for any host name.
    VerifyCa,
    /// TLS with a server certificate signed by a trusted CA and valid for the host connected to.
    VerifyFull,
}

/// The entry of `modes` (a store's names for its modes) that `value` of the URL parameter
/// `param` names, matched exactly or, with `any_case`, in any case; the error lists them all.
pub(crate) fn mode_named(
    modes: &'static [(&'static str, Mode)],
    param: &str,
    value: &str,
    any_case: bool,
) -> Result<&'static (&'static str, Mode), String> {
    modes
        .iter()
        .find(|(name, _)| *name == value || any_case && name.eq_ignore_ascii_case(value))
        .ok_or_else(|| {
            let names: Vec<&str> = modes.iter().map(|(name, _)| *name).collect();
            format!("{param}={value} is not one of {}", names.join(", "))
        })
}

impl Mode {
    /// Whether the connection uses TLS at all (or may, for [`Mode::Prefer`]).
    pub fn wants_tls(self) -> bool {
        self != Mode::Disable
    }

    /// Whether the server's certificate must be signed by a trusted CA.
    pub fn verifies_chain(self) -> bool {
        matches!(self, Mode::VerifyCa | Mode::VerifyFull)
    }

    /// Whether the server's certificate must name the host connected to.
    pub fn verifies_name(self) -> bool {
        self == Mode::VerifyFull
    }
}

/// What a store's URL calls its TLS parameters, for messages that point at the one to fix.
#[derive(Debug)]
pub(crate) struct Names {
    /// The parameter (or scheme) that chose the mode, e.g. `sslmode`.
    pub mode: &'static str,
    /// The CA certificates file, e.g. `sslrootcert`.
    pub ca: &'static str,
    /// The client certificate file, e.g. `sslcert`.
    pub cert: &'static str,
    /// The client key file, e.g. `sslkey`; `None` when the certificate file holds the key too
    /// (MongoDB's `tlsCertificateKeyFile`).
    pub key: Option<&'static str>,
}

/// The TLS settings of one store URL.
#[derive(Debug)]
pub(crate) struct Tls {
    /// How much TLS.
    pub mode: Mode,
    /// The CA certificates to trust; `None` trusts the system's.
    pub ca: Option<PathBuf>,
    /// The client certificate (chain) to present, if any.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
    names: &'static Names,
}

/// A client certificate (chain) and its private key, as PEM text.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// A TLS setting that cannot work (an unreadable file, a key that does not match), or a failed
/// handshake, as one line. Stores report it as [`Error::Refused`](crate::Error::Refused): trying
/// again will not help.
#[derive(Debug)]
pub(crate) struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl TlsError {
    pub fn new(message: impl Into<String>) -> Self {
        TlsError(message.into())
    }
}

impl Tls {
    /// Settings with `mode` and no files, whose parameters are called `names`.
    pub fn new(mode: Mode, names: &'static Names) -> Self {
        Tls {
            mode,
            ca: None,
            cert: None,
            key: None,
            names,
        }
    }

    /// Takes the URL parameter `key=value` (value still percent-encoded) when it names one of
    /// the files; `false` leaves it to the caller.
    pub fn take(&mut self, key: &str, value: &str) -> bool {
        let slot = if key == self.names.ca {
            &mut self.ca
        } else if key == self.names.cert {
            &mut self.cert
        } else if Some(key) == self.names.key {
            &mut self.key
        } else {
            return false;
        };
        let path = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        *slot = Some(PathBuf::from(path.as_ref()));
        true
    }

    /// [`Tls::take`] for a value that was already percent-decoded.
    pub fn take_decoded(&mut self, key: &str, value: &str) -> bool {
        let encoded =
            percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC);
        self.take(key, &encoded.to_string())
    }

    /// Whether any file was given: a CA, a client certificate or a key.
    pub fn has_files(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Why these settings cannot be used, for a usage error: a client key without its
    /// certificate or the other way round.
    pub fn check(&self) -> Result<(), String> {
        if self.mode == Mode::VerifyCa && self.ca.is_none() {
            // Checked against the system's CAs, but for any host name, any certificate that
            // any public CA signed would pass: no authentication at all.
            return Err(format!(
                "a {} that checks the CA but not the host name needs the server's CA in ?{}=; \
                 with the system's CAs any certificate they signed, for any host, would pass",
                self.names.mode, self.names.ca
            ));
        }
        let Some(key_name) = self.names.key else {
            return Ok(());
        };
        match (&self.cert, &self.key) {
            (Some(_), None) => Err(format!("?{} needs ?{key_name} too", self.names.cert)),
            (None, Some(_)) => Err(format!("?{key_name} needs ?{} too", self.names.cert)),
            _ => Ok(()),
        }
    }

    /// The PEM text of the CA certificates file, checked to hold at least one certificate;
    /// `None` when the settings trust the system's CAs.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, TlsError> {
        match &self.ca {
            Some(path) => {
                let pem = self.read(path, self.names.ca, "CA certificates")?;
                self.certificates(&pem, path, self.names.ca)?;
                Ok(Some(pem))
            }
            None => Ok(None),
        }
    }

    /// The PEM text of the client certificate and of its key, each checked to hold one;
    /// `None` without a client certificate. With no separate key parameter, the certificate
    /// file's text is returned for both.
    pub fn identity_pem(&self) -> Result<Option<Identity>, TlsError> {
        let Some(cert_path) = &self.cert else {
            return Ok(None);
        };
        let cert = self.read(cert_path, self.names.cert, "client certificate")?;
        self.certificates(&cert, cert_path, self.names.cert)?;
        let (key_path, key_name) = match (&self.key, self.names.key) {
            (Some(path), Some(name)) => (path, name),
            _ => (cert_path, self.names.cert),
        };
        let key = if key_path == cert_path {
            cert.clone()
        } else {
            self.read(key_path, key_name, "client key")?
        };
        if PrivateKeyDer::from_pem_slice(&key).is_err() {
            return Err(TlsError(format!(
                "no private key in {} (?{key_name})",
                key_path.display()
            )));
        }
        Ok(Some(Identity { cert, key }))
    }

    /// A rustls client configuration for these settings (mode, CAs, client certificate), with
    /// ring as the crypto provider. For [`Mode::Disable`] too, though it then goes unused.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS set-up: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = if self.mode.verifies_chain() {
            let roots = Arc::new(self.roots()?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| TlsError(format!("TLS set-up: {e}")))?;
            if self.mode.verifies_name() {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            }
        } else {
            Arc::new(Unverified(provider))
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match self.identity_pem()? {
            None => Ok(builder.with_no_client_auth()),
            Some(Identity { cert, key }) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
                    .filter_map(|c| c.ok())
                    .collect();
                let key = PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|e| TlsError(format!("client key: {e}")))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    TlsError(format!(
                        "the client key does not fit the client certificate (?{}): {e}",
                        self.names.cert
                    ))
                })
            }
        }
    }

    /// The CAs to trust: the CA file's, or the system's (for a driver that takes trust anchors
    /// rather than a [`ClientConfig`], such as etcd's tonic).
    pub fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        match &self.ca {
            Some(path) => {
                let pem = self.read(path, self.names.ca, "CA certificates")?;
                for cert in self.certificates(&pem, path, self.names.ca)? {
                    roots.add(cert).map_err(|e| {
                        TlsError(format!(
                            "a certificate in {} (?{}) cannot be a CA: {e}",
                            path.display(),
                            self.names.ca
                        ))
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(TlsError(format!(
                        "no CA certificates found on this system to check the server with; \
                         name a CA file with ?{}=",
                        self.names.ca
                    )));
                }
            }
        }
        Ok(roots)
    }

    fn read(&self, path: &Path, param: &str, what: &str) -> Result<Vec<u8>, TlsError> {
        std::fs::read(path).map_err(|e| {
            TlsError(format!(
                "cannot read the {what} file {} (?{param}): {e}",
                path.display()
            ))
        })
    }

    /// The certificates in `pem`, at least one.
    fn certificates(
        &self,
        pem: &[u8],
        path: &Path,
        param: &str,
    ) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
            .filter_map(|c| c.ok())
            .collect();
        if certs.is_empty() {
            return Err(TlsError(format!(
                "no PEM certificate in {} (?{param})",
                path.display()
            )));
        }
        Ok(certs)
    }

    /// The one-line cause of a failed connection whose driver error reads `text`, when it is a
    /// TLS failure these settings can explain; see [`explain`].
    pub fn explain(&self, text: &str) -> Option<TlsError> {
        explain(text).map(|cause| self.line(cause, text))
    }

    /// The line for `cause`, found in the driver's error text `text`, with a hint of the
    /// parameter to change.
    pub fn line(&self, cause: Cause, text: &str) -> TlsError {
        let hint = match cause {
            Cause::UnknownIssuer => match &self.ca {
                Some(ca) => format!(" (?{}={})", self.names.ca, ca.display()),
                None => format!(
                    " (the system's CAs; name the server's CA with ?{}=)",
                    self.names.ca
                ),
            },
            Cause::WrongName => "; connect by a name it lists".to_owned(),
            Cause::ClientCertificateRequired => {
                format!(" (give one with ?{}=)", self.names.cert)
            }
            _ => String::new(),
        };
        TlsError(format!("TLS: {}{hint}", cause.describe(text)))
    }
}

/// What went wrong in a TLS handshake, read from a driver's error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The server's certificate is not signed by a CA we trust.
    UnknownIssuer,
    /// The server's certificate is not valid for the host name connected to.
    WrongName,
    /// The server's certificate has expired.
    Expired,
    /// The server's certificate is not valid yet.
    NotYetValid,
    /// The server wants a client certificate and got none.
    ClientCertificateRequired,
    /// The server refused the client certificate.
    ClientCertificateRefused,
    /// The server says the client certificate has expired or was revoked.
    ClientCertificateExpired,
    /// The server did not answer in TLS: a plaintext port.
    NotTls,
}

impl Cause {
    fn describe(self, text: &str) -> String {
        match self {
            Cause::UnknownIssuer => {
                "the server's certificate is not signed by a trusted CA".to_owned()
            }
            Cause::WrongName => match name_detail(text) {
                Some(detail) => format!("the server's certificate is not valid for {detail}"),
                None => "the server's certificate is not valid for the host name connected to"
                    .to_owned(),
            },
            Cause::Expired => "the server's certificate has expired".to_owned(),
            Cause::NotYetValid => "the server's certificate is not valid yet".to_owned(),
            Cause::ClientCertificateRequired => {
                "the server requires a client certificate".to_owned()
            }
            Cause::ClientCertificateRefused => {
                "the server refused our client certificate".to_owned()
            }
            Cause::ClientCertificateExpired => {
                "the server refused our client certificate: it has expired or was revoked"
                    .to_owned()
            }
            Cause::NotTls => {
                "the server did not answer in TLS (is this a plaintext port?)".to_owned()
            }
        }
    }
}

/// The cause of a TLS failure in a driver's error text (the error and its sources, flattened),
/// if it names one: drivers pass rustls's errors on as text, so the text is what all of them
/// share.
pub(crate) fn explain(text: &str) -> Option<Cause> {
    let has = |needle: &str| text.contains(needle);
    // An alert is the server's word on our side of the handshake (our certificate), so it
    // goes first: `CertificateExpired` is about our certificate, not the server's.
    let alert = ["fatal alert: ", "AlertReceived("]
        .iter()
        .find_map(|start| Some(&text[text.find(start)? + start.len()..]));
    if let Some(alert) = alert {
        let alert = alert.split(|c: char| !c.is_ascii_alphanumeric()).next()?;
        return match alert {
            "CertificateRequired" => Some(Cause::ClientCertificateRequired),
            "CertificateExpired" | "CertificateRevoked" => Some(Cause::ClientCertificateExpired),
            "BadCertificate"
            | "UnknownCA"
            | "CertificateUnknown"
            | "DecryptError"
            | "AccessDenied"
            | "UnsupportedCertificate" => Some(Cause::ClientCertificateRefused),
            _ => None,
        };
    }
    if has("UnknownIssuer") || has("unknown issuer") {
        Some(Cause::UnknownIssuer)
    } else if has("NotValidForName") || has("not valid for name") {
        Some(Cause::WrongName)
    } else if has("certificate expired")
        || has("peer certificate: Expired")
        || has("InvalidCertificate(Expired")
    {
        Some(Cause::Expired)
    } else if has("NotValidYet") || has("not valid yet") {
        Some(Cause::NotYetValid)
    } else if has("corrupt message") || has("InvalidContentType") || has("invalid content type") {
        Some(Cause::NotTls)
    } else {
        None
    }
}

/// `"127.0.0.2" (it names localhost, 127.0.0.1)` from rustls's name error, when it is there.
fn name_detail(text: &str) -> Option<String> {
    let start = text.find("not valid for name ")? + "not valid for name ".len();
    let rest = &text[start..];
    let expected = rest.split(';').next().unwrap_or(rest).trim();
    let mut names = Vec::new();
    if let Some(at) = rest.find("is only valid for ") {
        // The list ends rustls's sentence: a driver may add its own words after ": ".
        let mut list = rest[at..].split([':', '\n']).next().unwrap_or_default();
        // rustls lists them as DnsName("localhost") or IpAddress(127.0.0.1).
        while let Some(open) = list.find('(') {
            let Some(close) = list[open..].find(')') else {
                break;
            };
            names.push(list[open + 1..open + close].trim_matches('"').to_owned());
            list = &list[open + close + 1..];
        }
    }
    if names.is_empty() {
        Some(expected.to_owned())
    } else {
        Some(format!("{expected} (it names {})", names.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: Names = Names {
        mode: "sslmode",
        ca: "sslrootcert",
        cert: "sslcert",
        key: Some("sslkey"),
    };

    #[test]
    fn handshake_failures_are_named() {
        let cases = [
            (
                "invalid peer certificate: UnknownIssuer",
                Cause::UnknownIssuer,
            ),
            (
                "io error: invalid peer certificate: certificate not valid for name \"127.0.0.2\"; certificate is only valid for DnsName(\"localhost\") or IpAddress(127.0.0.1)",
                Cause::WrongName,
            ),
            (
                "invalid peer certificate: certificate expired: verification time 1 (UNIX), but certificate is not valid after 0 (1 seconds ago)",
                Cause::Expired,
            ),
            (
                "received fatal alert: CertificateRequired",
                Cause::ClientCertificateRequired,
            ),
            (
                "received fatal alert: UnknownCA",
                Cause::ClientCertificateRefused,
            ),
            (
                "received corrupt message of type InvalidContentType",
                Cause::NotTls,
            ),
        ];
        for (text, cause) in cases {
            assert_eq!(explain(text), Some(cause), "{text}");
        }
        assert_eq!(explain("connection refused"), None);
        let tls = Tls::new(Mode::VerifyFull, &NAMES);
        let line = tls
            .explain(cases[1].0)
            .expect("a name mismatch")
            .to_string();
        assert!(
            line.contains("not valid for \"127.0.0.2\" (it names localhost, 127.0.0.1)"),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn files_are_checked_before_connecting() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut tls = Tls::new(Mode::VerifyFull, &NAMES);
        assert!(tls.take("sslrootcert", "/no/such%20file.pem"));
        assert!(!tls.take("sslmode", "verify-full"));
        assert_eq!(tls.ca.as_deref(), Some(Path::new("/no/such file.pem")));
        let err = tls.client_config().unwrap_err().to_string();
        assert!(
            err.starts_with(
                "cannot read the CA certificates file /no/such file.pem (?sslrootcert)"
            ),
            "{err}"
        );

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        tls.ca = Some(junk.clone());
        let err = tls.client_config().unwrap_err().to_string();
        assert!(err.starts_with("no PEM certificate in"), "{err}");

        let mut tls = Tls::new(Mode::Require, &NAMES);
        tls.take("sslcert", junk.to_str().expect("utf-8"));
        assert_eq!(tls.check().unwrap_err(), "?sslcert needs ?sslkey too");

        // The system's CAs without a name check would let any of their certificates pass.
        let err = Tls::new(Mode::VerifyCa, &NAMES).check().unwrap_err();
        assert!(
            err.contains("needs the server's CA in ?sslrootcert="),
            "{err}"
        );
        assert!(Tls::new(Mode::VerifyFull, &NAMES).check().is_ok());
    }
}
