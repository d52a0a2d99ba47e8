//! TLS handshakes of our own, to find out why a driver's connection failed when the driver does
//! not say: whether a port speaks TLS at all, or what a server answered our handshake with.

use std::io::{ErrorKind, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::verify::Unverified;

/// Whether the server at `host:port` answers a TLS handshake, found within about `limit`: for
/// the line that tells a user who connected in plaintext to a TLS port to switch schemes
/// (such a server would otherwise just let the connection time out). Any TLS answer counts,
/// an alert too; a reply that is not TLS, silence or a closed connection do not.
pub(crate) async fn speaks_tls(host: &str, port: u16, limit: Duration) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(builder) =
        ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = Arc::new(
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth(),
    );
    let probe = tokio::task::spawn_blocking(move || handshake(&address, config, limit, false));
    match tokio::time::timeout(limit + limit, probe).await {
        Ok(Ok(Ok(()))) => true,
        // An alert is an answer in TLS; garbage, silence or a hang-up is not.
        Ok(Ok(Err(text))) => text.contains("fatal alert"),
        _ => false,
    }
}

/// A TLS handshake with `host` (`name:port`, IPv6 in brackets) with `config`, and with
/// `read_after` one read after it, for a refusal that a TLS 1.3 server sends only after the
/// handshake; the failure as text. Blocking, each step bounded by `timeout`.
pub(crate) fn handshake(
    host: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
    read_after: bool,
) -> Result<(), String> {
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
    if !read_after {
        return Ok(());
    }
    // The server's answer to our finished handshake: its first words, or its refusal.
    tcp.set_read_timeout(Some(timeout.min(Duration::from_secs(1))))
        .map_err(|e| text(&e))?;
    let mut byte = [0; 1];
    match rustls::Stream::new(&mut tls, &mut tcp).read(&mut byte) {
        Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(text(&e)),
        _ => Ok(()),
    }
}
