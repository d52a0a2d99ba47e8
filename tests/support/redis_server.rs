//! Redis servers for the tests: one open instance and one with a password, each started once
//! per test run and shared (tests isolate themselves by unique names and prefixes).

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::servers::{Server, free_port, require_binary, spawn_tied, wait_for_port};

/// The password of [`with_password`]'s server.
pub const PASSWORD: &str = "s3cret-Redis-pw";

/// A running `redis-server` and the URL of its store.
pub struct RedisServer {
    pub server: Server,
    /// `redis://127.0.0.1:PORT` (with the password, if the server has one).
    pub url: String,
}

/// The shared Redis server without a password.
pub fn shared() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| start(None))
}

/// The shared Redis server that requires [`PASSWORD`].
pub fn with_password() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| start(Some(PASSWORD)))
}

/// A server of the caller's own, for tests that pause or kill it.
pub fn own() -> RedisServer {
    start(None)
}

fn start(password: Option<&str>) -> RedisServer {
    let binary = require_binary("redis-server", &[], "apt-get install redis-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let data = dir.path().to_owned();
    let requirepass = password.map(str::to_owned);
    // The append-only file keeps every acknowledged write across a crash of the server (it is
    // written before the reply), so the tests that crash and restart the server find their data.
    let server = Server::start(port, dir, move || {
        let mut command = Command::new(&binary);
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
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
        if let Some(password) = &requirepass {
            command.args(["--requirepass", password]);
        }
        let mut child = spawn_tied(command).expect("start redis-server");
        wait_for_port(port, Duration::from_secs(20), &mut child, "redis-server");
        child
    });
    let url = match password {
        Some(password) => format!("redis://:{password}@127.0.0.1:{port}"),
        None => format!("redis://127.0.0.1:{port}"),
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
