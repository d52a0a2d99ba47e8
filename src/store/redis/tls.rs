//! TLS for the Redis store: `rediss://` with `?cacert=`, `?cert=` and `?key=`, and the line that
//! says which scheme would work when a server answers in the other one.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::store::tls::{Names, speaks_tls};

/// What `rediss://` URLs call their TLS files.
pub(super) const NAMES: Names = Names {
    mode: "rediss://",
    ca: "cacert",
    cert: "cert",
    key: Some("key"),
};

/// How long finding out whether a server that did not answer speaks the other scheme may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a connection to `host:port` that failed or hung is in the wrong scheme, if it is: a
/// `redis://` URL for a server that answers in TLS, or a `rediss://` URL for one that answers
/// a plaintext PING.
pub(super) async fn wrong_scheme(host: &str, port: u16, secure: bool) -> Option<String> {
    if !secure {
        return speaks_tls(host, port, PROBE_TIMEOUT)
            .await
            .then(|| "the server answers in TLS: write rediss:// instead of redis://".to_owned());
    }
    let probe = async {
        let mut socket = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        socket.write_all(b"PING\r\n").await.ok()?;
        let mut first = [0u8; 1];
        socket.read_exact(&mut first).await.ok()?;
        // A RESP reply: +PONG, or -NOAUTH / -ERR from a server that wants a login first.
        matches!(first[0], b'+' | b'-').then(|| {
            "the server did not answer in TLS but in plaintext: write redis:// instead of rediss://"
                .to_owned()
        })
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .ok()
        .flatten()
}
