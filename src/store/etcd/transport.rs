//! How the store's gRPC channel connects: timeouts, pings, the login and TLS, from a
//! [`Target`]; and the one-line cause of a connection that TLS (or its absence) made fail.
//!
//! The channel's TLS settings apply to every endpoint and to every call on it, the watch and
//! keep-alive streams included: etcd-client builds each endpoint of the one channel from the
//! same options (and refuses TLS options for an `http://` endpoint).

use std::time::Duration;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;

use etcd_client::{ConnectOptions, Identity, TlsOptions};

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
        .trust_anchors(tls.roots()?.roots)
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
        Cause::ClientCertificateRefused if tls.cert.is_none() => {
            Some(tls.line(Cause::ClientCertificateRequired, text))
        }
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
) -> Option<Diagnosis> {
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
        tokio::task::spawn_blocking(move || {
            let answer = tls::handshake(&host, config, timeout, true);
            // A hang-up is no proof of a plaintext port (a restarting member, a balancer
            // without backends hang up too): a plaintext HTTP/2 answer is.
            let plaintext =
                matches!(&answer, Err(text) if eof(text)) && answers_plaintext_h2(&host, timeout);
            (answer, plaintext)
        })
    });
    // The threads end by their sockets' timeouts if they outlive this one.
    let said = tokio::time::timeout(timeout, futures_util::future::join_all(asking))
        .await
        .ok()?;
    said.into_iter()
        .filter_map(|answer| answer.ok())
        .find_map(|answer| match (tls, answer) {
            (Some(_), (_, true)) => Some(Diagnosis::Certain(TlsError::new(
                "the server did not answer in TLS but in plaintext: write etcd:// instead of etcds://",
            ))),
            (Some(tls), (Err(text), false)) => explain(&text, Some(tls))
                .map(Diagnosis::Certain)
                .or_else(|| {
                    eof(&text).then(|| {
                        Diagnosis::Hint(TlsError::new(
                            "the server hung up on our TLS handshake (a plaintext port, or a \
                             member that is restarting?)",
                        ))
                    })
                }),
            (Some(_), (Ok(()), false)) => None,
            // A handshake, or a TLS alert: the server speaks TLS.
            (None, (Ok(()), _)) => explain(ANSWERS_IN_TLS, None).map(Diagnosis::Certain),
            // A TLS alert: it speaks TLS too.
            (None, (Err(text), _)) => match tls::explain(&text) {
                Some(Cause::NotTls) | None => None,
                Some(_) => explain(ANSWERS_IN_TLS, None).map(Diagnosis::Certain),
            },
        })
}

/// What [`diagnose`] found: a cause that retrying cannot change, or only a likely one.
pub(super) enum Diagnosis {
    Certain(TlsError),
    Hint(TlsError),
}

/// Whether the server at `host` (`name:port`) answers an HTTP/2 connection preface in
/// plaintext with its SETTINGS frame, as a plaintext etcd does. Blocking, bounded by `timeout`.
fn answers_plaintext_h2(host: &str, timeout: Duration) -> bool {
    // The client preface, then an empty SETTINGS frame (length 0, type 4, no flags, stream 0).
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let Some(address) = host
        .to_socket_addrs()
        .ok()
        .and_then(|mut found| found.next())
    else {
        return false;
    };
    let Ok(mut tcp) = TcpStream::connect_timeout(&address, timeout) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let mut header = [0u8; 9];
    tcp.write_all(PREFACE).is_ok() && tcp.read_exact(&mut header).is_ok() && header[3] == 0x04
}

/// Whether a handshake ended with the server closing the connection before it said anything.
fn eof(text: &str) -> bool {
    text.contains("unexpected end of file") || text.contains("UnexpectedEof")
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
