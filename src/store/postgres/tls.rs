//! TLS for the PostgreSQL store, with libpq's parameters and meanings, so that a connection
//! string that works with `psql` works here: `sslmode` (`disable`, `prefer` (the default),
//! `require`, `verify-ca`, `verify-full`), `sslrootcert` (a CA file, or `system`), `sslcert` and
//! `sslkey`, with libpq's files under `~/.postgresql/` as the defaults.
//!
//! tokio-postgres's own URL parser knows neither the `verify-*` modes nor the files, so they are
//! taken out of the URL before it sees them: the driver is told only whether to ask for TLS
//! (`disable`, `prefer`, `require`), and the rustls configuration it is handed decides how the
//! server's certificate is checked. `prefer` falls back to plaintext only when the server
//! answers that it has no TLS at all (the driver does that); every other mode fails instead.

use std::path::{Path, PathBuf};

use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};
use crate::store::sql::{OneLine, SqlUrl};
use crate::store::tls::{self, Cause, Mode, Names, Tls, TlsError};

/// libpq's names for the TLS parameters.
const NAMES: Names = Names {
    mode: "sslmode",
    ca: "sslrootcert",
    cert: "sslcert",
    key: Some("sslkey"),
};

/// The `sslmode` values, as libpq spells them.
const MODES: [(&str, Mode); 5] = [
    ("disable", Mode::Disable),
    ("prefer", Mode::Prefer),
    ("require", Mode::Require),
    ("verify-ca", Mode::VerifyCa),
    ("verify-full", Mode::VerifyFull),
];

/// `sslrootcert=system`: the system's CAs (libpq 16).
const SYSTEM: &str = "system";

/// The TLS settings of one URL, and what the driver is told.
#[derive(Debug)]
pub(super) struct Settings {
    tls: Tls,
    /// `sslmode` as the user wrote it (or the default), for messages: the mode in force may be
    /// stricter (`require` with a CA file checks it, as libpq's does).
    asked: &'static str,
}

impl Settings {
    /// Takes `sslmode`, `sslrootcert`, `sslcert` and `sslkey` out of the driver's part of
    /// `url` and reads them as libpq does; a value that cannot work is [`Error::InvalidUrl`].
    pub fn take(url: &mut SqlUrl) -> Result<Self> {
        let mut tls = Tls::new(Mode::Prefer, &NAMES);
        let mut mode = None;
        url.take_params(|key, value| {
            if key == NAMES.mode {
                mode = Some(value.to_owned());
                true
            } else {
                tls.take(key, value)
            }
        });
        let invalid = |reason: String| Error::InvalidUrl {
            url: url.masked.clone(),
            reason,
        };
        let asked = match mode.as_deref() {
            None => None,
            Some(value) => {
                Some(tls::mode_named(&MODES, NAMES.mode, value, false).map_err(invalid)?)
            }
        };
        let system = tls.ca.as_deref() == Some(Path::new(SYSTEM));
        let (asked, mode) = match asked {
            Some(&(name, mode)) => (name, mode),
            // libpq 16: the system's CAs are only worth trusting with the host name checked,
            // so they make verify-full the default, ...
            None if system => ("verify-full", Mode::VerifyFull),
            None => ("prefer", Mode::Prefer),
        };
        if system {
            // ... and refuse a weaker mode rather than trust any certificate they signed.
            if mode != Mode::VerifyFull {
                return Err(invalid(format!(
                    "sslrootcert=system needs sslmode=verify-full, not sslmode={asked}"
                )));
            }
            tls.ca = None;
        }
        tls.mode = mode;
        match mode {
            // libpq ignores the files when it does not use TLS or does not check the server.
            Mode::Disable => return Ok(Settings::plaintext(asked)),
            Mode::Prefer => tls.ca = None,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => {
                if tls.ca.is_none() && !system {
                    tls.ca = libpq_default("root.crt");
                }
                // As in libpq: a CA to check the server with is used, even by `require`.
                if mode == Mode::Require && tls.ca.is_some() {
                    tls.mode = Mode::VerifyCa;
                }
            }
        }
        if tls.cert.is_none() {
            tls.cert = libpq_default("postgresql.crt");
        }
        if tls.cert.is_some() && tls.key.is_none() {
            tls.key = libpq_default("postgresql.key");
        }
        tls.check().map_err(invalid)?;
        Ok(Settings { tls, asked })
    }

    /// `sslmode=disable`: no TLS, no files.
    fn plaintext(asked: &'static str) -> Self {
        Settings {
            tls: Tls::new(Mode::Disable, &NAMES),
            asked,
        }
    }

    /// Whether the driver asks the server for TLS, and whether it may go on without.
    pub fn ssl_mode(&self) -> SslMode {
        match self.tls.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// The driver's TLS connector, with the files read and checked now, before anything goes
    /// on the wire: a file that cannot be used is [`Error::Refused`], as trying again will
    /// not help. With `sslmode=disable` the driver never uses it.
    pub fn connector(&self, url: &SqlUrl) -> Result<MakeRustlsConnect> {
        self.tls
            .client_config()
            .map(MakeRustlsConnect::new)
            .map_err(|e| Error::refused(&url.masked, "connect", e))
    }

    /// The one-line cause of a failed connection, when it is about TLS: the server has none
    /// though the mode requires it, or the handshake failed (see [`Tls::explain`]).
    pub fn explain(&self, err: &tokio_postgres::Error) -> Option<TlsError> {
        if let Some(db) = err.as_db_error() {
            // The server's login rules (pg_hba.conf `cert`, `clientcert=`) report a missing
            // client certificate in a message of their own. Any other message from the
            // server is not about TLS, whatever words it contains (a lease's name, say).
            return if db.message().contains("requires a valid client certificate") {
                Some(self.tls.line(Cause::ClientCertificateRequired, ""))
            } else {
                None
            };
        }
        let text = OneLine::of(err).to_string();
        if text.contains("server does not support TLS") {
            return Some(TlsError::new(format!(
                "TLS: the server does not offer TLS, which sslmode={} requires",
                self.asked
            )));
        }
        self.tls.explain(&text)
    }
}

/// `~/.postgresql/<file>`, where libpq looks for the CA file and the client certificate and
/// key when the URL names none, if it exists.
fn libpq_default(file: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".postgresql").join(file);
    path.is_file().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(query: &str) -> Result<(Settings, SqlUrl)> {
        let mut url = SqlUrl::parse(&format!("postgres://u:secret@h/db?{query}"))?;
        let settings = Settings::take(&mut url)?;
        Ok((settings, url))
    }

    #[test]
    fn libpq_modes_are_read_and_taken_from_the_driver() {
        let (s, url) =
            settings("application_name=x&sslmode=verify-full&sslrootcert=/ca%20file.pem")
                .expect("valid");
        assert_eq!(s.tls.mode, Mode::VerifyFull);
        assert_eq!(s.tls.ca.as_deref(), Some(Path::new("/ca file.pem")));
        assert_eq!(s.ssl_mode(), SslMode::Require);
        assert_eq!(
            url.driver_url(&[]),
            "postgres://u:secret@h/db?application_name=x"
        );

        let (s, _) = settings("").expect("valid");
        assert_eq!((s.tls.mode, s.asked), (Mode::Prefer, "prefer"));
        assert_eq!(s.ssl_mode(), SslMode::Prefer);

        // `require` with a CA checks it, as in libpq.
        let (s, _) = settings("sslmode=require&sslrootcert=/ca.pem").expect("valid");
        assert_eq!((s.tls.mode, s.asked), (Mode::VerifyCa, "require"));

        // `system` makes verify-full the default and refuses weaker modes.
        let (s, _) = settings("sslrootcert=system").expect("valid");
        assert_eq!((s.tls.mode, s.tls.ca.as_deref()), (Mode::VerifyFull, None));
        let err = settings("sslrootcert=system&sslmode=require").unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{err}");

        let (s, _) = settings("sslmode=disable&sslrootcert=/ca.pem").expect("valid");
        assert_eq!(s.ssl_mode(), SslMode::Disable);
    }

    #[test]
    fn unknown_modes_and_half_identities_are_usage_errors() {
        let err = settings("sslmode=verify_full").unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(
                "sslmode=verify_full is not one of disable, prefer, require, verify-ca, verify-full"
            ),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");

        let err = settings("sslmode=require&sslkey=/client.key").unwrap_err();
        assert!(
            err.to_string().contains("?sslkey needs ?sslcert too"),
            "{err}"
        );
    }
}
