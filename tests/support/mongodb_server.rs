//! SecantusDB, a MongoDB-wire-compatible server from PyPI (MongoDB's own server cannot be
//! installed here), for the MongoDB store's tests. `scripts/install-test-deps` puts it in
//! `target/test-venv`; `SINGLETON_SECANTUSD` may name another `secantusd-py`.
//!
//! The servers are each started once per test run and shared: an open one, one with `--auth`
//! and a user (provisioned on a persistent store without `--auth` first, as SecantusDB wants),
//! and TLS-only ones that present the test certificates ([`super::certs`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mongodb::bson::doc;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::certs::{self, TlsServer};
use super::hosts::Host;
use super::servers::{Server, free_port, require_binary, spawn_tied, wait_for_port};

/// The database the tests use.
pub const DATABASE: &str = "locks";
/// The user of the `--auth` server, allowed to read and write [`DATABASE`].
pub const USER: &str = "locker";
/// Its password: distinctive, so a test can assert that no message shows it.
pub const PASSWORD: &str = "pw-Zq7-never-printed";

/// A running SecantusDB.
pub struct Mongo {
    pub server: Server,
    /// `mongodb://[user:password@]127.0.0.1:PORT/locks` (the host's address for a server on a
    /// simulated host).
    pub url: String,
}

impl Mongo {
    /// The store URL with `?options` appended.
    pub fn url_with(&self, options: &str) -> String {
        format!("{}?{options}", self.url)
    }
}

/// A TLS-only server, listening on 127.0.0.1 only (hence [`TlsServer::misnamed`]).
fn tls_server(tls: TlsServer) -> Mongo {
    let server = start_with(
        tempfile::tempdir().expect("temp dir"),
        None,
        false,
        Some(tls),
        None,
    );
    let url = format!("mongodb://127.0.0.1:{}/{DATABASE}", server.port);
    Mongo { server, url }
}

/// The TLS-only server with the test server certificate, shared by the tests of this run.
pub fn tls() -> &'static Mongo {
    static SHARED: OnceLock<Mongo> = OnceLock::new();
    SHARED.get_or_init(|| tls_server(TlsServer::verified()))
}

/// The TLS-only server whose certificate names `wrong.example` only.
pub fn tls_misnamed() -> &'static Mongo {
    static SHARED: OnceLock<Mongo> = OnceLock::new();
    SHARED.get_or_init(|| tls_server(TlsServer::misnamed()))
}

/// The TLS-only server whose certificate has expired.
pub fn tls_expired() -> &'static Mongo {
    static SHARED: OnceLock<Mongo> = OnceLock::new();
    SHARED.get_or_init(|| tls_server(TlsServer::expired()))
}

/// The TLS-only server that requires a client certificate signed by the test CA.
pub fn tls_with_client_certificates() -> &'static Mongo {
    static SHARED: OnceLock<Mongo> = OnceLock::new();
    SHARED.get_or_init(|| tls_server(TlsServer::verified().with_client_certificates()))
}

/// The open server shared by the tests of this run.
pub fn shared() -> &'static Mongo {
    static SHARED: OnceLock<Mongo> = OnceLock::new();
    SHARED.get_or_init(|| {
        let server = start(tempfile::tempdir().expect("temp dir"), None, false);
        let url = format!("mongodb://127.0.0.1:{}/{DATABASE}", server.port);
        Mongo { server, url }
    })
}

/// A server of the caller's own, for tests that pause or crash it; it keeps its data on disk,
/// so that it finds it again when restarted.
pub fn own() -> Mongo {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = start(dir, Some(&data), false);
    let url = format!("mongodb://127.0.0.1:{}/{DATABASE}", server.port);
    Mongo { server, url }
}

/// A server of the caller's own on the simulated `host`, listening on the host's address: only
/// programs on hosts of the same network reach it. It keeps its data in memory.
pub fn start_in(host: &Host) -> Mongo {
    let server = start_with(
        tempfile::tempdir().expect("temp dir"),
        None,
        false,
        None,
        Some(host.clone()),
    );
    let url = format!("mongodb://{}:{}/{DATABASE}", host.address(), server.port);
    Mongo { server, url }
}

/// The `--auth` server with [`USER`] shared by the tests of this run; its URL carries the
/// right password.
pub fn with_auth() -> &'static Mongo {
    static AUTH: OnceLock<Mongo> = OnceLock::new();
    AUTH.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let setup = start(dir, Some(&data), false);
        run_admin(
            setup.port,
            doc! {
                "createUser": USER,
                "pwd": PASSWORD,
                "roles": [{ "role": "readWrite", "db": DATABASE }],
            },
        );
        let dir = stop(setup);
        let server = start(dir, Some(&data), true);
        let url = format!(
            "mongodb://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}?authSource=admin",
            server.port
        );
        Mongo { server, url }
    })
}

/// The `secantusd-py` to run, or a failure saying how to install it.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SINGLETON_SECANTUSD") {
        return PathBuf::from(path);
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-venv/bin");
    require_binary(
        "secantusd-py",
        &[venv],
        "scripts/install-test-deps (a venv in target/test-venv with `pip install SecantusDB`)",
    )
}

/// Starts SecantusDB on a free port, keeping its data in `data` (in memory if `None`), and
/// waits until it answers `ping`.
fn start(dir: tempfile::TempDir, data: Option<&Path>, auth: bool) -> Server {
    start_with(dir, data, auth, None, None)
}

/// [`start`], with TLS if `tls` says so, on the simulated `host` if one is given.
fn start_with(
    dir: tempfile::TempDir,
    data: Option<&Path>,
    auth: bool,
    tls: Option<TlsServer>,
    host: Option<Host>,
) -> Server {
    let port = free_port();
    let binary = binary();
    let home = dir.path().to_owned();
    let storage = data.map_or_else(|| ":memory:".into(), |d| d.as_os_str().to_owned());
    let address = match &host {
        Some(host) => {
            assert!(tls.is_none(), "no TLS server on a simulated host yet");
            host.address().to_string()
        }
        None => "127.0.0.1".to_owned(),
    };
    Server::start(port, dir, move || {
        let log = home.join("secantusd.log");
        let mut command = match &host {
            Some(host) => host.command(&binary),
            None => Command::new(&binary),
        };
        command
            .args(["--host", &address, "--port", &port.to_string()])
            .arg("--storage-path")
            .arg(&storage)
            .args(["--log-level", "WARNING"])
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")));
        if auth {
            command.arg("--auth");
        }
        if let Some(tls) = &tls {
            command
                .arg("--tls-cert-file")
                .arg(&tls.pair.cert)
                .arg("--tls-key-file")
                .arg(&tls.pair.key)
                .arg("--tls-ca-file")
                .arg(&certs::shared().ca);
            if tls.client_certificates {
                command.arg("--tls-require-client-cert");
            }
        }
        let mut child = spawn_tied(command).expect("start secantusd-py");
        let started = Instant::now();
        let ready = |child: &mut std::process::Child| match &host {
            None => {
                wait_for_port(port, Duration::from_secs(30), child, "secantusd-py");
                // `ping` needs no authentication, so it works on the --auth server too.
                ping("127.0.0.1", port, tls.as_ref())
            }
            // Only the host reaches its address.
            Some(host) => {
                let ip = host.address();
                host.wait_for_port(
                    ip,
                    port,
                    Duration::from_secs(30),
                    child,
                    "secantusd-py",
                    Some(&log),
                );
                host.enter(|| ping(&address, port, None))
            }
        };
        while !ready(&mut child) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "secantusd-py on port {port} does not answer ping; see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    })
}

/// Stops a server cleanly (so that its data is on disk) and hands back its directory.
fn stop(mut server: Server) -> tempfile::TempDir {
    let _ = kill(Pid::from_raw(server.pid()), Signal::SIGTERM);
    let started = Instant::now();
    while server.child.try_wait().ok().flatten().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "secantusd-py did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::mem::replace(&mut server.dir, dir)
}

fn ping(address: &str, port: u16, tls: Option<&TlsServer>) -> bool {
    let options = match tls {
        None => String::new(),
        // Any certificate will do here: the tests check the certificates.
        Some(tls) => {
            let mut options = "&tls=true&tlsAllowInvalidCertificates=true".to_owned();
            if tls.client_certificates {
                options += &format!(
                    "&tlsCertificateKeyFile={}",
                    certs::shared().client.combined().display()
                );
            }
            options
        }
    };
    admin_command(address, port, &options, doc! { "ping": 1 }).is_ok()
}

fn run_admin(port: u16, command: mongodb::bson::Document) {
    admin_command("127.0.0.1", port, "", command)
        .unwrap_or_else(|e| panic!("admin command on port {port}: {e}"));
}

/// Runs one command against `admin` from a thread of its own, since callers may be inside a
/// tokio runtime already.
fn admin_command(
    address: &str,
    port: u16,
    options: &str,
    command: mongodb::bson::Document,
) -> mongodb::error::Result<()> {
    let options = options.to_owned();
    let address = address.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut options = mongodb::options::ClientOptions::parse(format!(
                "mongodb://{address}:{port}/?directConnection=true{options}"
            ))
            .await?;
            options.server_selection_timeout = Some(Duration::from_secs(2));
            let client = mongodb::Client::with_options(options)?;
            client.database("admin").run_command(command).await?;
            client.shutdown().await;
            Ok(())
        })
    })
    .join()
    .expect("admin thread")
}

impl super::servers::StoreServer for Mongo {
    fn store_url(&self) -> String {
        self.url.clone()
    }

    fn server(&mut self) -> &mut Server {
        &mut self.server
    }
}
