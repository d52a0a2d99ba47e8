//! A private PostgreSQL cluster (Debian's `postgresql` package) for the tests: `initdb` into a
//! temporary directory and `postgres` on a free loopback port, run as the `postgres` system
//! user because the server refuses to run as root. Started once per test run and shared.
//!
//! Next to the plain server, TLS servers ([`tls`], [`tls_expired`]): `ssl=on` with a
//! [`TlsServer`], listening on 127.0.0.1 and [`certs::MISNAMED_HOST`], accepting
//! only TLS connections (`hostssl`), and the user [`CERT_USER`] only with a client certificate
//! signed by the test CA.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::certs::{self, TlsServer};
use super::hosts::Host;
use super::servers::{Server, free_port, require_binary, spawn_tied, wait_for_log};

pub(super) const INSTALL: &str = "apt-get install postgresql (or scripts/install-test-deps)";

/// The superuser's password in the test cluster.
pub const PASSWORD: &str = "pg-secret-4711";

/// On the TLS servers, the user who logs in with the client certificate [`certs::Certs::client`]
/// (its CN) and no password, and cannot log in without it.
pub const CERT_USER: &str = "singleton-test";

/// The TLS servers' login rules: TLS only (no `host` line, so plaintext finds no rule),
/// [`CERT_USER`] by client certificate, everybody else by password.
const TLS_HBA: &str = "local all all trust
hostssl all singleton-test 127.0.0.0/8 cert
hostssl all all 127.0.0.0/8 scram-sha-256
";

/// The shared server, started on first use.
pub struct Postgres {
    pub server: Server,
    /// Where clients reach it: 127.0.0.1, or a simulated host's address.
    pub address: String,
}

impl Postgres {
    /// `postgres://` URL of the test database, with the right password.
    pub fn url(&self) -> String {
        self.url_with(PASSWORD)
    }

    /// The URL without our options, for the driver itself.
    pub fn raw_url(&self) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@{}:{}/postgres",
            self.address, self.server.port
        )
    }

    /// The same URL with `password`. The connect timeout is generous: the test machine may be
    /// busy compiling.
    pub fn url_with(&self, password: &str) -> String {
        self.url_for(&format!("postgres:{password}"), &self.address, "")
    }

    /// The URL of the test database as `user_info` (`user[:password]`) on `host`, with
    /// `query` (say `sslmode=require`) after our options.
    pub fn url_for(&self, user_info: &str, host: &str, query: &str) -> String {
        let url = format!(
            "postgres://{user_info}@{host}:{}/postgres?connect_timeout=30s",
            self.server.port
        );
        if query.is_empty() {
            url
        } else {
            format!("{url}&{query}")
        }
    }

    /// The server's log; the TLS servers log every connection, with its TLS protocol.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.server.dir.path().join("postgres.log"))
            .expect("read the server log")
    }
}

/// The one server of this test run.
pub fn shared() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| start(None, None))
}

/// The TLS server of this test run, presenting [`certs::Certs::server`].
pub fn tls() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| start(Some(TlsServer::verified()), None))
}

/// A TLS server presenting [`certs::Certs::expired`], started on first use: only one test
/// needs it.
pub fn tls_expired() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| start(Some(TlsServer::expired()), None))
}

/// `/usr/lib/postgresql/<newest version>/bin`, where Debian keeps the server binaries.
pub(super) fn bin_dir() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.filter_map(|entry| entry.ok())
                .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    match versions.into_iter().max() {
        Some(version) => PathBuf::from(format!("/usr/lib/postgresql/{version}/bin")),
        None => PathBuf::from("/usr/lib/postgresql/missing/bin"),
    }
}

/// The `postgres` system user's uid and gid, when we are root and must switch to it.
pub(super) fn postgres_user() -> Option<(u32, u32)> {
    // /proc/self belongs to the effective user.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let ids = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    });
    Some(ids.unwrap_or_else(|| panic!("no `postgres` system user; {INSTALL}")))
}

/// Hands `path` to the `postgres` user, if we switch to it.
pub(super) fn give(path: &Path, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

pub(super) fn as_postgres(mut command: Command, user: Option<(u32, u32)>, dir: &Path) -> Command {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command.current_dir(dir).env_remove("PGDATA");
    command
}

/// A server of the caller's own, for tests that pause or kill it.
pub fn own() -> Postgres {
    start(None, None)
}

/// A server of the caller's own with more settings (`-c NAME=VALUE`), which override the
/// throwaway defaults: say `fsync=on`.
pub fn own_with(settings: &[&str]) -> Postgres {
    start_with(None, None, settings)
}

/// A server of the caller's own on the simulated `host`, listening on the host's address (and
/// taking password logins from any address): only programs on hosts of the same network reach
/// it. Run as the `postgres` user by `setpriv` once on the host.
pub fn start_in(host: &Host) -> Postgres {
    start(None, Some(host.clone()))
}

/// Makes a new cluster in `dir/data` (handing `dir` to `user`, the server's user) whose
/// superuser `postgres` has the password [`PASSWORD`], and returns the data directory.
pub(super) fn init(dir: &Path, user: Option<(u32, u32)>) -> PathBuf {
    let bin = bin_dir();
    let initdb = require_binary("initdb", &[&bin.to_string_lossy()], INSTALL);
    give(dir, user);
    let data = dir.join("data");
    let pwfile = dir.join("pwfile");
    std::fs::write(&pwfile, PASSWORD).expect("write the password file");
    let init = as_postgres(Command::new(initdb), user, dir)
        .args([
            "--no-sync",
            "--no-instructions",
            "-U",
            "postgres",
            "-E",
            "UTF8",
        ])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .arg("-D")
        .arg(&data)
        .output()
        .expect("run initdb");
    assert!(
        init.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    data
}

/// Starts a server; with `tls`, a TLS server (see the module docs); with `host`, on that
/// simulated host.
fn start(tls: Option<TlsServer>, host: Option<Host>) -> Postgres {
    start_with(tls, host, &[])
}

/// [`start`] with `extra` settings after the others, so that they win.
fn start_with(tls: Option<TlsServer>, host: Option<Host>, extra: &[&str]) -> Postgres {
    let bin = bin_dir();
    let bin_str = bin.to_string_lossy().into_owned();
    let postgres = require_binary("postgres", &[&bin_str], INSTALL);
    let user = postgres_user();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = init(dir.path(), user);

    // With TLS, the server presents its own copy of the certificate: PostgreSQL wants the key
    // owned by the server's user and readable by it alone.
    let mut settings: Vec<String> = Vec::new();
    let mut listen = "127.0.0.1".to_owned();
    if let Some(tls) = &tls {
        // Only CERT_USER's rule asks for a client certificate; everybody else logs in without.
        assert!(
            !tls.client_certificates,
            "the PostgreSQL test server asks only {CERT_USER} for a client certificate"
        );
        let copy = tls.pair.copy_to(dir.path(), "server", user);
        std::fs::write(data.join("pg_hba.conf"), TLS_HBA).expect("write pg_hba.conf");
        settings.extend([
            "ssl=on".to_owned(),
            format!("ssl_cert_file={}", copy.cert.display()),
            format!("ssl_key_file={}", copy.key.display()),
            // Client certificates signed by the test CA are accepted.
            format!("ssl_ca_file={}", certs::shared().ca.display()),
            "log_connections=on".to_owned(),
        ]);
        listen = format!("127.0.0.1,{}", certs::MISNAMED_HOST);
    }
    settings.extend(extra.iter().map(|setting| (*setting).to_owned()));
    if let Some(host) = &host {
        assert!(tls.is_none(), "no TLS server on a simulated host yet");
        listen = host.address().to_string();
        // initdb allows password logins from loopback only; the hosts' clients come from their
        // own addresses.
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        rules.push_str("host all all 0.0.0.0/0 scram-sha-256\n");
        std::fs::write(&hba, rules).expect("write pg_hba.conf");
    }
    let address = if host.is_some() {
        listen.clone()
    } else {
        "127.0.0.1".to_owned()
    };

    let port = free_port();
    let home = dir.path().to_owned();
    let socket_dir = home.clone();
    let server = Server::start(port, dir, move || {
        let log = home.join("postgres.log");
        let log_file = std::fs::File::create(&log).expect("create the server log");
        // On a host, the steps into its namespaces need root: the switch to the `postgres`
        // user comes last, by `setpriv`.
        let mut command = match &host {
            None => as_postgres(Command::new(&postgres), user, &home),
            Some(host) => {
                let setpriv = require_binary(
                    "setpriv",
                    &["/usr/bin", "/bin"],
                    "apt-get install util-linux",
                );
                let mut command = host.command(setpriv);
                if let Some((uid, gid)) = user {
                    command.args([
                        format!("--reuid={uid}"),
                        format!("--regid={gid}"),
                        "--clear-groups".to_owned(),
                    ]);
                }
                command
                    .arg("--")
                    .arg(&postgres)
                    .current_dir(&home)
                    .env_remove("PGDATA");
                command
            }
        };
        command
            .arg("-D")
            .arg(&data)
            .args(["-h", &listen, "-p", &port.to_string()])
            .arg("-k")
            .arg(&home)
            // A throwaway cluster, small and quick: no fsync, but every commit is written to
            // the WAL before it returns, so a crash of the server loses no committed lease.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=on"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=1000"])
            .args(["-c", "shared_buffers=16MB"])
            .args(settings.iter().flat_map(|setting| ["-c", setting.as_str()]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let mut child = spawn_tied(command).expect("start postgres");
        // The port opens before the server accepts sessions; its log says when it does.
        wait_for_log(&log, "ready to accept connections", &mut child, "postgres");
        child
    });
    if tls.is_some() {
        let psql = require_binary("psql", &[&bin_str], INSTALL);
        let role = format!("CREATE ROLE \"{CERT_USER}\" LOGIN SUPERUSER");
        let made = Command::new(psql)
            .arg("-h")
            .arg(&socket_dir)
            .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
            .args(["-v", "ON_ERROR_STOP=1", "-qc", &role])
            .env_remove("PGDATA")
            .output()
            .expect("run psql");
        assert!(
            made.status.success(),
            "creating the certificate user failed: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    Postgres { server, address }
}

impl super::servers::StoreServer for Postgres {
    fn store_url(&self) -> String {
        self.url()
    }

    fn server(&mut self) -> &mut Server {
        &mut self.server
    }
}
