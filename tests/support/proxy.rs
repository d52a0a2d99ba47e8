//! A TCP proxy on a free loopback port in front of a test server, which can freeze the
//! connections it carries.
//!
//! [`Proxy::freeze`] makes every connection open at that moment stop passing bytes in both
//! directions, silently: no FIN, no RST, the sockets stay open and the kernel still
//! acknowledges what arrives, as when the peer's process hangs or a firewall drops the packet
//! stream. Connections made afterwards are forwarded normally, so a store that opens a new
//! connection gets through, and one that reuses a frozen connection waits for ever.
//!
//! Each connection is two plain threads, one per direction, that poll their socket so that they
//! can see the freeze and the end of the proxy. Dropping the [`Proxy`] (also while a failing test
//! unwinds) stops the acceptor, shuts every socket down and joins every thread.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a waiting thread looks at the freeze and stop flags.
const POLL: Duration = Duration::from_millis(10);

/// A proxy from `127.0.0.1:{port}` to one server; see the module docs.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    stop: AtomicBool,
    links: Mutex<Vec<Link>>,
}

/// One proxied connection: its two sockets (for shutting them down) and its two threads.
struct Link {
    frozen: Arc<AtomicBool>,
    sockets: [TcpStream; 2],
    pumps: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy in front of the server on `127.0.0.1:{server_port}`.
    pub fn start(server_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let shared = Arc::new(Shared {
            target: SocketAddr::from(([127, 0, 0, 1], server_port)),
            stop: AtomicBool::new(false),
            links: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        let acceptor = std::thread::spawn(move || accept(&listener, &accepting));
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `url` with the server's `127.0.0.1:{server_port}` replaced by the proxy's address.
    pub fn route(&self, url: &str, server_port: u16) -> String {
        let server = format!("127.0.0.1:{server_port}");
        assert!(url.contains(&server), "{url} does not name {server}");
        url.replace(&server, &format!("127.0.0.1:{}", self.port))
    }

    /// Freezes every connection open now and returns how many there are.
    pub fn freeze(&self) -> usize {
        let links = self.shared.links.lock().unwrap_or_else(|e| e.into_inner());
        for link in links.iter() {
            link.frozen.store(true, Ordering::SeqCst);
        }
        links.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let links =
            std::mem::take(&mut *self.shared.links.lock().unwrap_or_else(|e| e.into_inner()));
        for link in links {
            for socket in &link.sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
            for pump in link.pumps {
                let _ = pump.join();
            }
        }
    }
}

/// Accepts connections until the proxy stops, connecting each to the server.
fn accept(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(_) => continue,
        };
        // Refused by the server: the client sees its connection closed, as it would directly.
        let Ok(server) = TcpStream::connect_timeout(&shared.target, Duration::from_secs(5)) else {
            continue;
        };
        if let Some(link) = link(client, server, shared) {
            shared
                .links
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(link);
        }
    }
}

fn link(client: TcpStream, server: TcpStream, shared: &Arc<Shared>) -> Option<Link> {
    let frozen = Arc::new(AtomicBool::new(false));
    let mut pumps = Vec::with_capacity(2);
    for (from, to) in [(&client, &server), (&server, &client)] {
        let (from, to) = (from.try_clone().ok()?, to.try_clone().ok()?);
        let (frozen, shared) = (Arc::clone(&frozen), Arc::clone(shared));
        pumps.push(std::thread::spawn(move || pump(from, to, &frozen, &shared)));
    }
    Some(Link {
        frozen,
        sockets: [client, server],
        pumps,
    })
}

/// Copies bytes from `from` to `to` until either side closes or the proxy stops. Once frozen it
/// reads nothing more, and drops what it had read but not yet passed on.
fn pump(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool, shared: &Shared) {
    // Accepted sockets may inherit the listener's non-blocking mode.
    if from.set_nonblocking(false).is_err() || from.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut buffer = [0u8; 16 * 1024];
    while !shared.stop.load(Ordering::SeqCst) {
        if frozen.load(Ordering::SeqCst) {
            std::thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buffer) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(read) => {
                if !frozen.load(Ordering::SeqCst) && to.write_all(&buffer[..read]).is_err() {
                    return;
                }
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
