//! How the store's gRPC channel connects: timeouts, pings, the login and TLS, from a
//! [`Target`]; and the one-line cause of a connection that TLS (or its absence) made fail.
//!
//! The channel's TLS settings apply to every endpoint and to every call on it, the watch and
//! keep-alive streams included: etcd-client builds each endpoint of the one channel from the
//! same options (and refuses TLS options for an `http://` endpoint).

use std::time::Duration;

use std::io::{ErrorKind, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;

use etcd_client::{ConnectOptions, Identity, TlsOptions};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::url::{Target, host_of};
use crate::store::tls::{self, Cause, Mode, Tls, TlsError};
use crate::store::{kv, reconnect};

/// HTTP/2 pings on an idle channel, and how long one may go unanswered before the channel drops
/// its connection (and connects afresh), so that a dead connection is noticed even when no
/// request is waiting on it, such as under a waiter's watch. etcd refuses pings closer together
/// than its `--grpc-keepalive-min-time` (5 s by default).
const PING_INTERVAL: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel's options for `target`. The TLS files are read and checked here, before
/// anything goes on the wire.
pub(super) fn connect_options(target: &Target) -> Result<ConnectOptions, TlsError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(target.connect_timeout)
        .with_timeout(kv::RESPONSE_TIMEOUT)
        .with_keep_alive(PING_INTERVAL, PING_TIMEOUT)
        .with_keep_alive_while_idle(true)
        .with_tcp_keepalive(reconnect::KEEPALIVE_IDLE);
    if let Some((user, password)) = &target.user {
        // etcd lets an auth token lapse (after `--auth-token-ttl` unused, 5 min by default):
        // the client then logs in again and sends the refused request once more, rather than
        // fail every request from then on.
        options = options
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    if let Some(tls) = &target.tls {
        options = options.with_tls(tls_options(tls, target.connect_timeout)?);
    }
    Ok(options)
}

/// tonic's TLS settings: the server's certificate is checked against the CA file, or the
/// system's CAs without one (tonic itself would trust none), and its host name against the
/// endpoint's, as etcdctl does.
fn tls_options(tls: &Tls, handshake_timeout: Duration) -> Result<TlsOptions, TlsError> {
    // Checks every file, and that the key fits the certificate, with the words every store
    // uses; tonic builds its own configuration from the same files.
    tls.client_config()?;
    let mut options = TlsOptions::new()
        .trust_anchors(tls.root_store()?.roots)
        .timeout(handshake_timeout);
    if let Some(identity) = tls.identity_pem()? {
        options = options.identity(Identity::from_pem(identity.cert, identity.key));
    }
    Ok(options)
}

/// The one-line cause of a failed request whose error reads `text` (the client's error and its
/// sources, flattened), when TLS explains it: a failed handshake with `tls`, or, without it, a
/// server that answers in TLS.
pub(super) fn explain(text: &str, tls: Option<&Tls>) -> Option<TlsError> {
    let Some(tls) = tls else {
        return text.contains(ANSWERS_IN_TLS).then(|| {
            TlsError::new(format!(
                "the server {ANSWERS_IN_TLS}, not plaintext: write etcds://… (with ?cacert= for its CA)"
            ))
        });
    };
    match tls::explain(text)? {
        // Some servers (Go's, before 1.21 or in TLS 1.2) refuse a missing certificate with
        // the alert that refuses a bad one.
        Cause::ClientCertificateRefused if tls.cert.is_none() => Some(TlsError::new(format!(
            "{} (give one with ?{}=)",
            Cause::ClientCertificateRequired.line(text),
            super::url::NAMES.cert
        ))),
        _ => tls.explain(text),
    }
}

const ANSWERS_IN_TLS: &str = "answers in TLS";

/// The cause of a connection that failed without saying why (a closed connection, a broken
/// pipe, an EOF in the handshake: all that tonic reports of, say, a server that refused our
/// client certificate after a TLS 1.3 handshake, or of a plaintext port), found by a TLS
/// handshake of our own with each endpoint, with the URL's settings (`tls`), which reads the
/// server's alert; without TLS, whether the server answers in TLS. `None` when no handshake
/// tells: the connection's own error stands.
pub(super) async fn diagnose(
    endpoints: &[String],
    tls: Option<&Tls>,
    timeout: Duration,
) -> Option<TlsError> {
    let config = match tls {
        Some(tls) => tls.client_config(),
        // Any certificate: only whether the server speaks TLS at all matters.
        None => Tls::new(Mode::Require, &super::url::NAMES).client_config(),
    };
    let mut config = config.ok()?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let config = Arc::new(config);
    let asking = endpoints.iter().map(|endpoint| {
        let (config, host) = (config.clone(), host_of(endpoint).to_owned());
        tokio::task::spawn_blocking(move || handshake(&host, config, timeout))
    });
    // The threads end by their sockets' timeouts if they outlive this one.
    let said = tokio::time::timeout(timeout, futures_util::future::join_all(asking))
        .await
        .ok()?;
    said.into_iter()
        .filter_map(|answer| answer.ok())
        .find_map(|answer| match (tls, answer) {
            (Some(tls), Err(text)) => {
                explain(&text, Some(tls)).or_else(|| eof(&text).then(|| Cause::NotTls.line("")))
            }
            (Some(_), Ok(())) => None,
            // A handshake, or a TLS alert: the server speaks TLS.
            (None, Ok(())) => explain(ANSWERS_IN_TLS, None),
            // A TLS alert: it speaks TLS too.
            (None, Err(text)) => match tls::explain(&text) {
                Some(Cause::NotTls) | None => None,
                Some(_) => explain(ANSWERS_IN_TLS, None),
            },
        })
}

/// Whether a handshake ended with the server closing the connection before it said anything.
fn eof(text: &str) -> bool {
    text.contains("unexpected end of file") || text.contains("UnexpectedEof")
}

/// A TLS handshake with `host` (`name:port`, IPv6 in brackets) and one read after it, for a
/// refusal that a TLS 1.3 server sends only after the handshake; the error as text. Blocking,
/// each step bounded by `timeout`.
fn handshake(host: &str, config: Arc<ClientConfig>, timeout: Duration) -> Result<(), String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let (name, _) = host.rsplit_once(':').ok_or_else(|| host.to_owned())?;
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let server = ServerName::try_from(name.to_owned()).map_err(|e| text(&e))?;
    let address = host
        .to_socket_addrs()
        .map_err(|e| text(&e))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let mut tcp = TcpStream::connect_timeout(&address, timeout).map_err(|e| text(&e))?;
    tcp.set_read_timeout(Some(timeout)).map_err(|e| text(&e))?;
    tcp.set_write_timeout(Some(timeout)).map_err(|e| text(&e))?;
    let mut tls = ClientConnection::new(config, server).map_err(|e| text(&e))?;
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).map_err(|e| text(&e))?;
    }
    // The server's answer to our finished handshake: its HTTP/2 settings, or its refusal.
    tcp.set_read_timeout(Some(timeout.min(Duration::from_secs(1))))
        .map_err(|e| text(&e))?;
    let mut byte = [0; 1];
    match rustls::Stream::new(&mut tls, &mut tcp).read(&mut byte) {
        Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(text(&e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonics_words_are_explained() {
        let mut tls = Tls::new(Mode::VerifyFull, &super::super::url::NAMES);
        let misnamed = "Unavailable: invalid peer certificate: certificate not valid for name \"127.0.0.2\"; certificate is only valid for DnsName(\"localhost\") or IpAddress(127.0.0.1): transport error";
        let line = explain(misnamed, Some(&tls)).expect("a cause").to_string();
        assert_eq!(
            line,
            "TLS: the server's certificate is not valid for \"127.0.0.2\" (it names localhost, 127.0.0.1); connect by a name it lists"
        );
        // Go's servers refuse a missing client certificate as a bad one.
        let refused = "Unknown: received fatal alert: BadCertificate";
        let line = explain(refused, Some(&tls)).expect("a cause").to_string();
        assert!(line.contains("requires a client certificate"), "{line}");
        tls.cert = Some("/c.pem".into());
        let line = explain(refused, Some(&tls)).expect("a cause").to_string();
        assert!(line.contains("refused our client certificate"), "{line}");

        assert!(explain("Unavailable: tcp connect error: Connection refused", None).is_none());
        assert!(explain("Unavailable: tcp connect error", Some(&tls)).is_none());
    }
}
