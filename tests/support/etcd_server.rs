//! A single-node etcd for the tests, started once per test run and shared (tests isolate
//! themselves by unique names and prefixes).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::servers::{Server, free_port, require_binary, spawn_tied, wait_for_port};

/// A running `etcd` and the URL of its store.
pub struct EtcdServer {
    pub server: Server,
    /// `etcd://127.0.0.1:PORT?allow_unsafe_version=true`: Debian's etcd (3.4.23) predates the
    /// first releases with etcd's lease fixes, which the store refuses without the override.
    pub url: String,
    /// `127.0.0.1:PORT`, for tests that build URLs of their own.
    pub address: String,
}

/// The shared etcd server.
pub fn shared() -> &'static EtcdServer {
    static SERVER: OnceLock<EtcdServer> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// A server of the caller's own, for tests that pause or kill it.
pub fn own() -> EtcdServer {
    start()
}

fn start() -> EtcdServer {
    let binary = require_binary("etcd", &[], "apt-get install etcd-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let (client, peer) = (free_port(), free_port());
    let home = dir.path().to_owned();
    let server = Server::start(client, dir, move || {
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(home.join("etcd.log")).expect("etcd log");
        let mut command = Command::new(&binary);
        command
            .args(["--name", "test"])
            .arg("--data-dir")
            .arg(home.join("data"))
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = spawn_tied(command).expect("start etcd");
        wait_for_port(client, Duration::from_secs(20), &mut child, "etcd");
        wait_healthy(client, Duration::from_secs(20));
        child
    });
    EtcdServer {
        server,
        url: format!("etcd://127.0.0.1:{client}?allow_unsafe_version=true"),
        address: format!("127.0.0.1:{client}"),
    }
}

/// Waits until etcd's `/health` reports a leader, so the first test does not race the election.
fn wait_healthy(port: u16, limit: Duration) {
    let started = Instant::now();
    loop {
        let mut answer = String::new();
        let asked = TcpStream::connect(("127.0.0.1", port)).and_then(|mut stream| {
            stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            stream.read_to_string(&mut answer)
        });
        if asked.is_ok() && answer.contains(r#""health":"true""#) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "etcd was not healthy within {limit:?}: {answer}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl super::servers::StoreServer for EtcdServer {
    fn store_url(&self) -> String {
        self.url.clone()
    }

    fn server(&mut self) -> &mut Server {
        &mut self.server
    }
}
