//! TLS for the MongoDB store: the driver reads `tls=true`, `tlsCAFile` and
//! `tlsCertificateKeyFile` itself; the store checks the files before connecting and turns a
//! failed first connection into one line that names the cause.

use std::time::Duration;

use mongodb::options::ClientOptions;

use crate::error::Error;
use crate::store::tls::{Mode, Names, Tls, speaks_tls};

/// What MongoDB URLs call their TLS settings.
const NAMES: Names = Names {
    mode: "tls",
    ca: "tlsCAFile",
    cert: "tlsCertificateKeyFile",
    key: None,
};

/// The TLS settings the driver parsed from the URL, in our shape, when TLS is on.
pub(super) fn settings(options: &ClientOptions) -> Option<Tls> {
    let Some(mongodb::options::Tls::Enabled(driver)) = &options.tls else {
        return None;
    };
    let mode = if driver.allow_invalid_certificates == Some(true) {
        Mode::Require
    } else {
        Mode::VerifyFull
    };
    let mut tls = Tls::new(mode, &NAMES);
    tls.ca = driver.ca_file_path.clone();
    tls.cert = driver.cert_key_file_path.clone();
    Some(tls)
}

/// A failed first connection as one line that names the cause, when it was TLS: a failed
/// handshake (a refusal: trying again will not help), or a scheme that does not match the
/// server (TLS to a plaintext server, or plaintext to a TLS one).
pub(super) async fn explain_connect(
    store: &str,
    err: Error,
    tls: Option<&Tls>,
    hosts: &[mongodb::options::ServerAddress],
) -> Error {
    // The driver's words only: ours carry the URL, whose names and paths could read as a cause.
    let text = match &err {
        Error::Store { source, .. } => source.to_string(),
        _ => String::new(),
    };
    if let Some(cause) = tls.and_then(|tls| tls.explain(&text)) {
        return Error::refused(store, "connect", cause);
    }
    for host in hosts {
        let mongodb::options::ServerAddress::Tcp { host, port } = host else {
            continue;
        };
        let port = port.unwrap_or(27017);
        let speaks_tls = speaks_tls(host, port, PROBE_TIMEOUT).await;
        if tls.is_none() && speaks_tls {
            return Error::refused(
                store,
                "connect",
                format!("the server at {host}:{port} answers in TLS: add ?tls=true"),
            );
        }
        let reachable = tokio::time::timeout(
            PROBE_TIMEOUT,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .is_ok_and(|connected| connected.is_ok());
        if tls.is_some() && !speaks_tls && reachable {
            // Not a refusal: a server too busy to answer the probe in time looks the same.
            return Error::store(
                store,
                "connect",
                format!(
                    "the server at {host}:{port} did not answer in TLS within {}: if it is a \
                     plaintext port, drop tls=true",
                    humantime::format_duration(PROBE_TIMEOUT)
                ),
            );
        }
    }
    err
}

/// How long finding out whether a server that did not answer speaks TLS may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
