//! A private MariaDB server (Debian's `mariadb-server` package) for the tests:
//! `mariadb-install-db` into a temporary data directory and `mariadbd` on a free loopback port
//! with its own socket and pid file, and a TCP user with a password. Started once per test run
//! and shared: a plain one ([`shared`]), a TLS-only one ([`tls`]) and, on first use, a TLS-only
//! one that presents an expired certificate ([`tls_expired`]).

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::certs::{self, TlsServer};
use super::hosts::Host;
use super::servers::{Server, free_port, require_binary, spawn_tied, wait_for_log};

const INSTALL: &str = "apt-get install mariadb-server (or scripts/install-test-deps)";

/// The test user's name, password and database.
pub const USER: &str = "singleton";
pub const PASSWORD: &str = "my-secret-4711";
pub const DATABASE: &str = "singleton_test";
/// A user of the TLS servers that must present a client certificate (`REQUIRE X509`).
pub const X509_USER: &str = "singleton_x509";

/// The shared server, started on first use.
pub struct Mariadb {
    pub server: Server,
    /// Where clients reach it: 127.0.0.1, or a simulated host's address.
    pub address: String,
}

impl Mariadb {
    /// `mysql://` URL of the test database, with the right password.
    pub fn url(&self) -> String {
        self.url_with(PASSWORD)
    }

    /// The URL without our options, for the driver itself.
    pub fn raw_url(&self) -> String {
        format!(
            "mysql://{USER}:{PASSWORD}@{}:{}/{DATABASE}?prefer_socket=false",
            self.address, self.server.port
        )
    }

    /// The same URL with `password`. The connect timeout is generous: the test machine may be
    /// busy compiling.
    pub fn url_with(&self, password: &str) -> String {
        self.url_to(&self.address, USER, password, "")
    }

    /// The URL of `user` with `password` on the server's address `host`, with `params` (each
    /// `&key=value`) after our own.
    pub fn url_to(&self, host: &str, user: &str, password: &str, params: &str) -> String {
        format!(
            "mysql://{user}:{password}@{host}:{}/{DATABASE}?connect_timeout=30s{params}",
            self.server.port
        )
    }
}

/// The plain (no TLS) server of this test run.
pub fn shared() -> &'static Mariadb {
    static SERVER: OnceLock<Mariadb> = OnceLock::new();
    SERVER.get_or_init(|| start(None, None))
}

/// The TLS server of this test run: only TLS connections (`require_secure_transport`), the
/// certificate for `localhost` and 127.0.0.1 ([`certs::Certs::server`]), listening on
/// 127.0.0.1 and on [`certs::MISNAMED_HOST`], and the user [`X509_USER`].
pub fn tls() -> &'static Mariadb {
    static SERVER: OnceLock<Mariadb> = OnceLock::new();
    SERVER.get_or_init(|| start(Some(TlsServer::verified()), None))
}

/// A TLS server like [`tls`] whose certificate expired ([`certs::Certs::expired`]).
pub fn tls_expired() -> &'static Mariadb {
    static SERVER: OnceLock<Mariadb> = OnceLock::new();
    SERVER.get_or_init(|| start(Some(TlsServer::expired()), None))
}

const SBIN: &[&str] = &["/usr/sbin", "/usr/bin"];

/// A server of the caller's own, for tests that pause or kill it.
pub fn own() -> Mariadb {
    start(None, None)
}

/// A server of the caller's own with more `mariadbd` options, which override the throwaway
/// defaults: say `--innodb-flush-log-at-trx-commit=1`.
pub fn own_with(options: &[&str]) -> Mariadb {
    start_with(None, None, options)
}

/// A server of the caller's own on the simulated `host`, listening on the host's address: only
/// programs on hosts of the same network reach it.
pub fn start_in(host: &Host) -> Mariadb {
    start(None, Some(host.clone()))
}

/// Starts a server, with TLS only if `tls` is given, on the simulated `host` if one is.
fn start(tls: Option<TlsServer>, host: Option<Host>) -> Mariadb {
    start_with(tls, host, &[])
}

/// [`start`] with `extra` options after the others, so that they win.
fn start_with(tls: Option<TlsServer>, host: Option<Host>, extra: &[&str]) -> Mariadb {
    let extra: Vec<String> = extra.iter().map(|option| (*option).to_owned()).collect();
    let install_db = require_binary("mariadb-install-db", SBIN, INSTALL);
    let mariadbd = require_binary("mariadbd", SBIN, INSTALL);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    // Two installs at once get in each other's way (the bootstrap servers collide).
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let installing = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let install = Command::new(install_db)
        .args(["--no-defaults", "--user=root", "--skip-test-db"])
        .arg("--auth-root-authentication-method=normal")
        .arg(format!("--datadir={}", data.display()))
        .output()
        .expect("run mariadb-install-db");
    drop(installing);
    assert!(
        install.status.success(),
        "mariadb-install-db failed: {}{}",
        String::from_utf8_lossy(&install.stdout),
        String::from_utf8_lossy(&install.stderr)
    );
    // Runs before the server takes connections: the TCP users the tests log in as.
    let init = dir.path().join("init.sql");
    std::fs::write(
        &init,
        format!(
            "CREATE DATABASE IF NOT EXISTS {DATABASE};
             CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}';
             GRANT ALL ON *.* TO '{USER}'@'%';
             CREATE USER IF NOT EXISTS '{X509_USER}'@'%' IDENTIFIED BY '{PASSWORD}' REQUIRE X509;
             GRANT ALL ON *.* TO '{X509_USER}'@'%';"
        ),
    )
    .expect("write init.sql");
    let mut tls_args = vec!["--bind-address=127.0.0.1".to_owned()];
    if let Some(tls) = &tls {
        // MariaDB asks for client certificates per account (REQUIRE X509), not server-wide.
        assert!(
            !tls.client_certificates,
            "the MariaDB test server asks only {X509_USER} for a client certificate"
        );
        let own = tls.pair.copy_to(dir.path(), "server", None);
        tls_args = vec![
            format!("--bind-address=127.0.0.1,{}", certs::MISNAMED_HOST),
            format!("--ssl-cert={}", own.cert.display()),
            format!("--ssl-key={}", own.key.display()),
            // The CA that client certificates must be signed by.
            format!("--ssl-ca={}", certs::shared().ca.display()),
            "--require-secure-transport=ON".to_owned(),
        ];
    }
    let address = match &host {
        Some(host) => {
            assert!(tls.is_none(), "no TLS server on a simulated host yet");
            tls_args = vec![format!("--bind-address={}", host.address())];
            host.address().to_string()
        }
        None => "127.0.0.1".to_owned(),
    };

    let port = free_port();
    let home = dir.path().to_owned();
    let server = Server::start(port, dir, move || {
        let log = home.join("mariadbd.log");
        // The server appends to its log; a fresh one shows when this start is ready.
        let _ = std::fs::remove_file(&log);
        let mut command = match &host {
            Some(host) => host.command(&mariadbd),
            None => Command::new(&mariadbd),
        };
        command
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", home.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", home.join("mysqld.pid").display()))
            // Its own temporary tables (information_schema queries make them) beside its data.
            .arg(format!("--tmpdir={}", home.display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--init-file={}", init.display()))
            .arg(format!("--port={port}"))
            .args(&tls_args)
            .arg("--skip-name-resolve")
            // A throwaway server: small buffers and no binary log. Each commit is written to
            // the redo log before it returns (flushed to disk once a second), so a crash of the
            // server loses no committed lease.
            .args(["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M"])
            .args(["--innodb-flush-log-at-trx-commit=2", "--skip-log-bin"])
            .args(["--performance-schema=OFF", "--max-connections=1000"])
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = spawn_tied(command).expect("start mariadbd");
        // The init file has run once the server says it is ready for connections.
        wait_for_log(&log, "ready for connections", &mut child, "mariadbd");
        child
    });
    Mariadb { server, address }
}

impl super::servers::StoreServer for Mariadb {
    fn store_url(&self) -> String {
        self.url()
    }

    fn server(&mut self) -> &mut Server {
        &mut self.server
    }
}
