//! Single-node etcd servers for the tests: a plain one and TLS ones, each started once per test
//! run and shared (tests isolate themselves by unique names and prefixes), or of a test's own
//! for tests that pause or kill it. Every variant is an [`Options`] away from the plain one.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::certs::{self, TlsServer};
use super::hosts::Host;
use super::servers::{Server, free_port, require_binary, spawn_tied, wait_for_port};

/// A running `etcd` and the URL of its store.
pub struct EtcdServer {
    pub server: Server,
    /// `etcd://127.0.0.1:PORT?allow_unsafe_version=true` (`etcds://…&cacert=…` for a TLS
    /// server, with the client certificate when the server asks for one): Debian's etcd
    /// (3.4.23) predates the first releases with etcd's lease fixes, which the store refuses
    /// without the override.
    pub url: String,
    /// `127.0.0.1:PORT` (the host's address for a server on a simulated host), for tests that
    /// build URLs of their own.
    pub address: String,
}

/// How a test server differs from the plain one.
#[derive(Default, Clone)]
pub struct Options {
    /// Serve TLS (only), on 127.0.0.1 and on [`certs::MISNAMED_HOST`].
    pub tls: Option<TlsServer>,
    /// `--auth-token-ttl` in seconds: how long a simple auth token lives unused.
    pub auth_token_ttl: Option<u32>,
    /// Enable authentication with a `root` user ([`ROOT_PASSWORD`]), a user [`USER`]
    /// ([`USER_PASSWORD`]) whose role may read and write the keys under [`USER_PREFIX`], and
    /// [`NOBODY`], who may do nothing.
    pub login: bool,
    /// Run on this simulated host, serving clients on its address (and on its own loopback).
    pub host: Option<Host>,
}

/// The users of a server started with [`Options::login`].
pub const ROOT_PASSWORD: &str = "root-pw";
pub const USER: &str = "singleton";
pub const USER_PASSWORD: &str = "s3cret-pw";
pub const USER_PREFIX: &str = "granted/";
/// A user without any role ([`USER_PASSWORD`] too).
pub const NOBODY: &str = "nobody";

/// The shared plain etcd server.
pub fn shared() -> &'static EtcdServer {
    static SERVER: OnceLock<EtcdServer> = OnceLock::new();
    SERVER.get_or_init(|| start(Options::default()))
}

/// The shared TLS server that requires a client certificate; its URL carries the test CA and
/// the client certificate.
pub fn tls_with_client_certificates() -> &'static EtcdServer {
    static SERVER: OnceLock<EtcdServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        start(Options {
            tls: Some(TlsServer::verified().with_client_certificates()),
            ..Options::default()
        })
    })
}

/// The shared TLS server that presents an expired certificate.
pub fn tls_expired() -> &'static EtcdServer {
    static SERVER: OnceLock<EtcdServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        start(Options {
            tls: Some(TlsServer::expired()),
            ..Options::default()
        })
    })
}

/// The shared TLS server with authentication on (see [`Options::login`]), no client
/// certificates, and auth tokens that lapse after 2 s unused. Its URL has no user.
pub fn tls_with_login() -> &'static EtcdServer {
    static SERVER: OnceLock<EtcdServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        start(Options {
            tls: Some(TlsServer::verified()),
            auth_token_ttl: Some(2),
            login: true,
            ..Options::default()
        })
    })
}

/// A plain server of the caller's own, for tests that pause or kill it.
pub fn own() -> EtcdServer {
    start(Options::default())
}

/// A plain server of the caller's own on the simulated `host`, serving clients on the host's
/// address: only programs on hosts of the same network reach it.
pub fn start_in(host: &Host) -> EtcdServer {
    start(Options {
        host: Some(host.clone()),
        ..Options::default()
    })
}

/// A server of the caller's own with `options`.
pub fn own_with(options: Options) -> EtcdServer {
    start(options)
}

fn start(options: Options) -> EtcdServer {
    let binary = require_binary("etcd", &[], "apt-get install etcd-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let (client, peer, metrics) = (free_port(), free_port(), free_port());
    let home = dir.path().to_owned();
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let address = match &options.host {
        Some(host) => {
            assert!(
                options.tls.is_none() && !options.login,
                "only plain etcd on a simulated host yet"
            );
            format!("{}:{client}", host.address())
        }
        None => format!("127.0.0.1:{client}"),
    };
    let mut client_urls = vec![format!("{scheme}://{address}")];
    if options.host.is_some() {
        // The host's own loopback too: the readiness check below connects there.
        client_urls.push(format!("{scheme}://127.0.0.1:{client}"));
    }
    if options.tls.is_some() {
        client_urls.push(format!("{scheme}://{}:{client}", certs::MISNAMED_HOST));
    }
    let launch_options = options.clone();
    let server = Server::start(client, dir, move || {
        let options = &launch_options;
        let listen = client_urls.join(",");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(home.join("etcd.log")).expect("etcd log");
        let mut command = match &options.host {
            Some(host) => host.command(&binary),
            None => Command::new(&binary),
        };
        command
            .args(["--name", "test"])
            .arg("--data-dir")
            .arg(home.join("data"))
            .args(["--listen-client-urls", &listen])
            .args(["--advertise-client-urls", &client_urls[0]])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            // Plain HTTP /health, whatever the client port serves.
            .args([
                "--listen-metrics-urls",
                &format!("http://127.0.0.1:{metrics}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(tls) = &options.tls {
            command
                .arg("--cert-file")
                .arg(&tls.pair.cert)
                .arg("--key-file")
                .arg(&tls.pair.key);
            if tls.client_certificates {
                command
                    .arg("--client-cert-auth")
                    .arg("--trusted-ca-file")
                    .arg(&certs::shared().ca);
            }
        }
        if let Some(ttl) = options.auth_token_ttl {
            command.arg(format!("--auth-token-ttl={ttl}"));
        }
        let mut child = spawn_tied(command).expect("start etcd");
        match &options.host {
            // Its ports are on the host's loopback, which only the host reaches.
            Some(host) => host.enter(|| {
                wait_for_port(client, Duration::from_secs(20), &mut child, "etcd");
                wait_healthy(metrics, Duration::from_secs(20));
            }),
            None => {
                wait_for_port(client, Duration::from_secs(20), &mut child, "etcd");
                wait_healthy(metrics, Duration::from_secs(20));
            }
        }
        child
    });
    if options.login {
        enable_login(&address, options.tls.is_some());
    }
    let url = match &options.tls {
        None => format!("etcd://{address}?allow_unsafe_version=true"),
        Some(tls) => {
            let mut url = format!(
                "etcds://{address}?allow_unsafe_version=true&cacert={}",
                path(&certs::shared().ca)
            );
            if tls.client_certificates {
                let client = &certs::shared().client;
                url += &format!("&cert={}&key={}", path(&client.cert), path(&client.key));
            }
            url
        }
    };
    EtcdServer {
        server,
        url,
        address,
    }
}

/// A file's path for a URL query (the test's temporary paths need no encoding).
pub fn path(file: &std::path::Path) -> String {
    let text = file.to_str().expect("a UTF-8 path").to_owned();
    assert!(
        !text.contains(['&', '#', '%', '+', ' ']),
        "encode {text} for a URL"
    );
    text
}

/// Adds the users of [`Options::login`] and turns authentication on (Debian packages no
/// `etcdctl`, so with the client library), on a thread and runtime of its own: the caller may
/// be a test's runtime.
#[cfg(feature = "etcd")]
fn enable_login(address: &str, tls: bool) {
    let address = address.to_owned();
    std::thread::spawn(move || set_up_users(&address, tls))
        .join()
        .expect("set up the users");
}

#[cfg(not(feature = "etcd"))]
fn enable_login(_: &str, _: bool) {
    panic!("Options::login sets up the users with the etcd client: test with --features etcd");
}

#[cfg(feature = "etcd")]
fn set_up_users(address: &str, tls: bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (endpoint, options) = if tls {
            let ca = std::fs::read(&certs::shared().ca).expect("read the CA");
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(ca));
            (
                format!("https://{address}"),
                Some(etcd_client::ConnectOptions::new().with_tls(tls)),
            )
        } else {
            (format!("http://{address}"), None)
        };
        let mut admin = etcd_client::Client::connect([endpoint], options)
            .await
            .expect("connect to set up users");
        admin
            .user_add("root", ROOT_PASSWORD, None)
            .await
            .expect("add root");
        admin
            .user_grant_role("root", "root")
            .await
            .expect("make root root");
        admin.role_add("lease-writer").await.expect("add a role");
        admin
            .role_grant_permission(
                "lease-writer",
                etcd_client::Permission::read_write(USER_PREFIX).with_prefix(),
            )
            .await
            .expect("grant the role the prefix");
        admin
            .user_add(USER, USER_PASSWORD, None)
            .await
            .expect("add the user");
        admin
            .user_grant_role(USER, "lease-writer")
            .await
            .expect("give the user its role");
        admin
            .user_add(NOBODY, USER_PASSWORD, None)
            .await
            .expect("add a user without roles");
        admin.auth_enable().await.expect("enable authentication");
    });
}

/// Waits until etcd's `/health` (on its plain metrics port) reports a leader, so the first
/// test does not race the election.
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
