//! Redis servers for the tests, each started once per test run and shared (tests isolate
//! themselves by unique names and prefixes): an open one, one with a password, and TLS-only
//! ones that present the test certificates ([`super::certs`]).

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::certs::{self, TlsServer};
use super::hosts::Host;
use super::servers::{
    Server, free_port, require_binary, spawn_tied, wait_for_log, wait_for_port_logged,
};

/// The password of [`with_password`]'s server.
pub const PASSWORD: &str = "s3cret-Redis-pw";

/// The ACL user of the TLS servers, and its password.
pub const TLS_USER: &str = "locker";
pub const TLS_PASSWORD: &str = "tls-Redis-pw-77";

/// A running `redis-server` and the URL of its store.
pub struct RedisServer {
    pub server: Server,
    /// `redis://127.0.0.1:PORT` (with the password, if the server has one; the host's address
    /// for a server on a simulated host), or `rediss://127.0.0.1:PORT` for a TLS server.
    pub url: String,
}

impl RedisServer {
    /// `rediss://` to `host` with the ACL user and `?query`, for a TLS server.
    pub fn tls_url(&self, host: &str, query: &str) -> String {
        format!(
            "rediss://{TLS_USER}:{TLS_PASSWORD}@{host}:{}?{query}",
            self.server.port
        )
    }
}

/// How a test server is set up.
#[derive(Default, Clone)]
struct Setup {
    password: Option<&'static str>,
    /// TLS only, on 127.0.0.1 and [`certs::MISNAMED_HOST`], and the ACL user.
    tls: Option<TlsServer>,
    /// Runs on this simulated host, on its address, instead of on loopback.
    host: Option<Host>,
    /// More arguments for `redis-server`, say `--replicaof`.
    args: Vec<String>,
}

/// The shared Redis server without a password.
pub fn shared() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| start(Setup::default()))
}

/// The shared Redis server that requires [`PASSWORD`].
pub fn with_password() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        start(Setup {
            password: Some(PASSWORD),
            ..Setup::default()
        })
    })
}

/// The shared TLS-only server with the test server certificate; client certificates are
/// optional, but checked when given.
pub fn tls() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        start(Setup {
            tls: Some(TlsServer::verified()),
            ..Setup::default()
        })
    })
}

/// The shared TLS-only server that requires a client certificate signed by the test CA.
pub fn tls_with_client_certificates() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        start(Setup {
            tls: Some(TlsServer::verified().with_client_certificates()),
            ..Setup::default()
        })
    })
}

/// The shared TLS-only server that presents an expired certificate.
pub fn tls_expired() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        start(Setup {
            tls: Some(TlsServer::expired()),
            ..Setup::default()
        })
    })
}

/// A server of the caller's own, for tests that pause or kill it.
pub fn own() -> RedisServer {
    start(Setup::default())
}

/// A server of the caller's own on loopback with more `redis-server` arguments, say
/// `--replicaof 127.0.0.1 PORT`.
pub fn own_with(args: &[&str]) -> RedisServer {
    start(Setup {
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        ..Setup::default()
    })
}

/// A server of the caller's own on the simulated `host`, listening on the host's address: only
/// programs on hosts of the same network reach it.
pub fn start_in(host: &Host) -> RedisServer {
    start(Setup {
        host: Some(host.clone()),
        ..Setup::default()
    })
}

/// [`start_in`] with more `redis-server` arguments, say `--replicaof ADDRESS PORT`.
pub fn start_in_with(host: &Host, args: &[&str]) -> RedisServer {
    start(Setup {
        host: Some(host.clone()),
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        ..Setup::default()
    })
}

fn start(setup: Setup) -> RedisServer {
    let binary = require_binary("redis-server", &[], "apt-get install redis-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let data = dir.path().to_owned();
    let tls = setup.tls.is_some();
    let address = match &setup.host {
        Some(host) => host.address().to_string(),
        None => "127.0.0.1".to_owned(),
    };
    let url_address = address.clone();
    // The append-only file keeps every acknowledged write across a crash of the server (it is
    // written before the reply), so the tests that crash and restart the server find their data.
    let server = Server::start(port, dir, move || {
        let mut command = match &setup.host {
            Some(host) => host.command(&binary),
            None => Command::new(&binary),
        };
        command
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&data)
            .arg("--logfile")
            .arg(data.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match &setup.tls {
            None => {
                command.args(["--bind", &address, "--port", &port.to_string()]);
                if setup.host.is_some() {
                    // Without a password Redis serves only loopback clients unless told to serve
                    // all; a simulated host's network is closed off.
                    command.args(["--protected-mode", "no"]);
                }
            }
            Some(tls) => {
                command
                    .args(["--bind", "127.0.0.1", certs::MISNAMED_HOST])
                    .args(["--port", "0", "--tls-port", &port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&tls.pair.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.pair.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&certs::shared().ca)
                    .args([
                        "--tls-auth-clients",
                        if tls.client_certificates {
                            "yes"
                        } else {
                            "optional"
                        },
                    ])
                    // An ACL user with a password; the default user may do nothing.
                    .args(["--user", TLS_USER, "on", &format!(">{TLS_PASSWORD}")])
                    .args(["~*", "&*", "+@all"])
                    .args(["--user", "default", "off"]);
            }
        }
        if let Some(password) = setup.password {
            command.args(["--requirepass", password]);
        }
        command.args(&setup.args);
        let log = data.join("redis.log");
        if setup.host.is_some() {
            // A restarted server must not be taken for ready on its first start's word.
            let _ = std::fs::remove_file(&log);
        }
        let mut child = spawn_tied(command).expect("start redis-server");
        if setup.host.is_some() {
            // The test process cannot reach a host's address; the server says when it serves.
            wait_for_log(
                &log,
                "Ready to accept connections",
                &mut child,
                "redis-server",
            );
        } else {
            wait_for_port_logged(
                port,
                Duration::from_secs(20),
                &mut child,
                "redis-server",
                Some(&log),
            );
        }
        child
    });
    let url = match (tls, setup.password) {
        (true, _) => format!("rediss://{TLS_USER}:{TLS_PASSWORD}@127.0.0.1:{port}"),
        (false, Some(password)) => format!("redis://:{password}@{url_address}:{port}"),
        (false, None) => format!("redis://{url_address}:{port}"),
    };
    RedisServer { server, url }
}

impl super::servers::StoreServer for RedisServer {
    fn store_url(&self) -> String {
        self.url.clone()
    }

    fn server(&mut self) -> &mut Server {
        &mut self.server
    }
}
