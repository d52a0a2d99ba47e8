//! Simulated hosts for the multi-host tests (SPEC §12): each host is a Linux network namespace
//! with an address of its own and a host name of its own, and the hosts of one [`Network`] are
//! joined by a bridge that lives in a namespace of its own, the "switch". Nothing is ever
//! changed in the namespace the tests run in: every link is a veth pair between the switch and a
//! host, so deleting the namespaces removes every link.
//!
//! ```text
//!   switch namespace:  br0 ── p0 ── p1 ── p2 …       (the bridge and one port per host)
//!                              │     │     │
//!   host namespaces:         eth0  eth0  eth0         10.X.Y.1, 10.X.Y.2, 10.X.Y.3 …
//! ```
//!
//! A test makes a [`Network`], its hosts with [`Network::host`], and runs programs on them with
//! [`Host::command`] or [`Host::singleton`]; servers go on hosts of their own (say
//! [`super::redis_server::start_in`]). The test process itself stays in its own namespace and
//! cannot reach the hosts' addresses: every client runs on a host.
//!
//! Cleaning up: dropping the [`Network`] (also when the test panics) kills every process still
//! in its namespaces and deletes them. A run that was killed outright leaves namespaces behind;
//! the next [`Network::new`] sweeps those whose test process is gone (names start with
//! `sgt<pid>-`).
//!
//! Partitions: [`Host::cut`] takes the host's link down at the switch; [`Host::drop_all`],
//! [`Host::drop_outgoing`] and [`Host::drop_incoming`] make its packets vanish with nftables
//! rules in the host's own namespace (never in the tests' namespace), in both directions or one;
//! [`Host::heal`] undoes both kinds.
//!
//! Needs root, iproute2's `ip`, util-linux's `unshare` and, for the drops, nftables' `nft`, as
//! CI has; without them the test fails and says what to do, it is never skipped.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::servers::require_binary;

/// Every namespace of the harness is named `sgt<pid>-<network>-<part>`.
const PREFIX: &str = "sgt";

/// The hosts of one test, joined by a switch; every namespace is deleted on drop.
pub struct Network {
    /// `sgt<pid>-<n>-`, the start of every namespace name of this network.
    prefix: String,
    /// The namespace that holds the bridge.
    switch: String,
    /// The first three octets of the hosts' /24.
    subnet: [u8; 3],
    /// Every host made so far, to be cleaned up on drop.
    hosts: Vec<Host>,
}

/// One simulated host: a network namespace with one link to the switch, an address, and a host
/// name that the programs it runs see. Cheap to clone; it is only names.
#[derive(Debug, Clone)]
pub struct Host {
    name: String,
    netns: String,
    address: Ipv4Addr,
    /// The switch's namespace and the switch's end of this host's link (`p<index>`).
    switch: String,
    port: String,
}

impl Network {
    /// A new, empty network with a switch of its own and a /24 of its own.
    pub fn new() -> Network {
        require_tools();
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_leftovers);

        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("{PREFIX}{pid}-{n}-");
        // Each network is closed off in namespaces of its own, so addresses could repeat
        // between networks; distinct ones keep logs and error messages unambiguous.
        let subnet = [10, 100 + (pid % 100) as u8, (n % 256) as u8];
        let network = Network {
            switch: format!("{prefix}switch"),
            prefix,
            subnet,
            hosts: Vec::new(),
        };
        // From here on a failure drops `network`, which deletes whatever was made.
        ip(&["netns", "add", &network.switch]);
        ip_in(&network.switch, &["link", "add", "br0", "type", "bridge"]);
        ip_in(&network.switch, &["link", "set", "br0", "up"]);
        network
    }

    /// `sgt<pid>-<n>-`, the start of the name of every namespace of this network.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A new host called `name` (letters, digits and `-`; also its host name), linked to the
    /// switch, with the next address of the network's /24 and `lo` up.
    pub fn host(&mut self, name: &str) -> Host {
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "a host name is letters, digits and '-': {name:?}"
        );
        assert!(
            name != "switch" && self.hosts.iter().all(|host| host.name != name),
            "there is already a host {name:?} (or the switch)"
        );
        let index = self.hosts.len();
        assert!(index < 254, "a network has at most 254 hosts");
        let [a, b, c] = self.subnet;
        let host = Host {
            name: name.to_owned(),
            netns: format!("{}{name}", self.prefix),
            address: Ipv4Addr::new(a, b, c, index as u8 + 1),
            switch: self.switch.clone(),
            port: format!("p{index}"),
        };
        ip(&["netns", "add", &host.netns]);
        self.hosts.push(host.clone());
        // Both ends are made from the switch's side, straight into their namespaces.
        ip_in(
            &self.switch,
            &[
                "link",
                "add",
                &host.port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &host.netns,
            ],
        );
        ip_in(&self.switch, &["link", "set", &host.port, "master", "br0"]);
        ip_in(&self.switch, &["link", "set", &host.port, "up"]);
        let address = format!("{}/24", host.address);
        ip_in(&host.netns, &["addr", "add", &address, "dev", "eth0"]);
        ip_in(&host.netns, &["link", "set", "eth0", "up"]);
        ip_in(&host.netns, &["link", "set", "lo", "up"]);
        host
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Hosts first: their links go with them, then the bridge with the switch.
        let namespaces = self
            .hosts
            .iter()
            .map(|host| host.netns.clone())
            .chain([self.switch.clone()]);
        for netns in namespaces {
            remove_namespace(&netns);
        }
    }
}

impl Host {
    /// The host's name, which is also its host name (`hostname`, and the holder's host in
    /// `singleton status`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address on the network.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The name of the host's network namespace, for `ip netns exec` by hand.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// A command that runs `program` on this host: in its network namespace and in a UTS
    /// namespace of its own whose host name is the host's name. Add arguments, environment and
    /// so on as to any `Command`; its pid is `program`'s (every step `exec`s). Whatever it
    /// leaves running on the host is killed when the [`Network`] is dropped.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = ip_command();
        command
            .args(["netns", "exec", &self.netns, "unshare", "--uts", "--"])
            .args(["sh", "-c", r#"hostname "$0" && exec "$@""#, &self.name])
            .arg(program);
        command
    }

    /// The `singleton` binary under test, on this host.
    pub fn singleton(&self) -> super::Test {
        super::Test::command(self.command(super::bin()))
    }

    /// Cuts the host off the network, as a cable pulled at the switch: the switch's end of its
    /// link goes down, so its packets vanish without an error (the host's own `eth0` stays
    /// configured; connections time out rather than fail at once).
    pub fn cut(&self) {
        self.set_link(false);
    }

    /// Puts the host back on the network: its link up again after [`Host::cut`], and every
    /// drop of [`Host::drop_all`], [`Host::drop_outgoing`] and [`Host::drop_incoming`] gone.
    pub fn heal(&self) {
        self.set_link(true);
        self.nft(&format!("add table {TABLE}; delete table {TABLE}"));
    }

    /// Makes every packet to and from the host vanish, as a firewall that drops (not rejects)
    /// would: nobody is told, no reset is sent, connections time out. The link stays up. The
    /// rules are nftables rules in the host's own namespace, on its `eth0` (its loopback, and so
    /// a server talking to itself, is untouched); [`Host::heal`] removes them.
    pub fn drop_all(&self) {
        self.nft(&drop_rules(Direction::Both));
    }

    /// Makes the host's outgoing packets vanish; what others send it still arrives (a TCP
    /// handshake to it then stalls after the SYN has arrived). Its own TCP sockets are not told
    /// either: they retransmit into the void. (A UDP sender would see `EPERM`; no store here
    /// uses UDP.)
    pub fn drop_outgoing(&self) {
        self.nft(&drop_rules(Direction::Outgoing));
    }

    /// Makes the packets sent to the host vanish; what it sends still leaves.
    pub fn drop_incoming(&self) {
        self.nft(&drop_rules(Direction::Incoming));
    }

    /// A shell command that does what [`Host::drop_all`] (or `_outgoing`, `_incoming`) does,
    /// for a program (on any host, run as root) to run at a moment of its own: say a job that
    /// drops its host's packets as its last act, so that the release after it goes into the void.
    pub fn drop_command(&self, direction: Direction) -> String {
        let rules = drop_rules(direction);
        assert!(!rules.contains('\''), "the rules need no quoting");
        format!(
            "'{}' netns exec '{}' '{}' '{rules}'",
            ip_path().display(),
            self.netns,
            nft_binary().display()
        )
    }

    /// Runs `f` on a thread of its own that is in the host's network namespace, and returns
    /// what it returns: the sockets it opens are the host's, so the test process can be a
    /// client on the host (say to see whether a server on it is ready) without a program of
    /// its own. Threads that `f` starts are in the namespace too.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.netns);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let netns =
                        std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                    nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("enter {path}: {e}"));
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Waits until something accepts TCP connections on `address:port` as seen from this host,
    /// or panics after `limit` or when `server` exits, with `log` if there is one.
    pub fn wait_for_port(
        &self,
        address: Ipv4Addr,
        port: u16,
        limit: Duration,
        server: &mut std::process::Child,
        what: &str,
        log: Option<&std::path::Path>,
    ) {
        let started = Instant::now();
        loop {
            let open = self.enter(|| {
                std::net::TcpStream::connect_timeout(
                    &(address, port).into(),
                    Duration::from_millis(500),
                )
                .is_ok()
            });
            if open {
                return;
            }
            if let Ok(Some(status)) = server.try_wait() {
                let text = log
                    .map(|log| std::fs::read_to_string(log).unwrap_or_default())
                    .unwrap_or_default();
                panic!(
                    "{what} exited with {status} before it listened on {address}:{port}:\n{text}"
                );
            }
            assert!(
                started.elapsed() < limit,
                "{what} did not listen on {address}:{port} within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn set_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip_in(&self.switch, &["link", "set", &self.port, state]);
    }

    /// Runs `nft COMMANDS` (one transaction) in the host's namespace, or fails the test with
    /// what `nft` said.
    fn nft(&self, commands: &str) {
        let output = ip_command()
            .args(["netns", "exec", &self.netns])
            .arg(nft_binary())
            .arg(commands)
            .stdin(Stdio::null())
            .output()
            .expect("run nft");
        assert!(
            output.status.success(),
            "`nft {commands}` on host {} failed ({}): {}",
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
}

/// Which of a host's packets [`Host::drop_command`] makes vanish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// To and from the host ([`Host::drop_all`]).
    Both,
    /// From the host ([`Host::drop_outgoing`]).
    Outgoing,
    /// To the host ([`Host::drop_incoming`]).
    Incoming,
}

/// The harness's nftables table in a host's namespace; deleting it removes every drop.
const TABLE: &str = "inet singleton_test";

/// The nftables commands (one transaction) that add the drops of `direction` to [`TABLE`],
/// making it and its chains first if need be. The drop is at the IP layer of the host's own
/// stack, on `eth0` only: an outgoing packet is dropped before it reaches the link, so a TCP
/// socket is not told (it retransmits, as if the packet were lost on the way), and ARP still
/// works, as behind a firewall that drops.
fn drop_rules(direction: Direction) -> String {
    let mut commands = vec![format!("add table {TABLE}")];
    let mut chain = |hook: &str, rule: &str| {
        commands.push(format!(
            "add chain {TABLE} {hook} {{ type filter hook {hook} priority 0; policy accept; }}"
        ));
        commands.push(format!("add rule {TABLE} {hook} {rule} drop"));
    };
    if matches!(direction, Direction::Both | Direction::Incoming) {
        chain("input", "iifname \"eth0\"");
    }
    if matches!(direction, Direction::Both | Direction::Outgoing) {
        chain("output", "oifname \"eth0\"");
    }
    commands.join("; ")
}

/// nftables' `nft`, or a test failure saying how to install it.
fn nft_binary() -> &'static PathBuf {
    static NFT: OnceLock<PathBuf> = OnceLock::new();
    NFT.get_or_init(|| {
        require_binary(
            "nft",
            &["/usr/sbin", "/sbin"],
            "apt-get install nftables (or scripts/install-test-deps)",
        )
    })
}

/// Fails the test, saying what to do, unless it runs as root with `ip` and `unshare`.
fn require_tools() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the multi-host tests make network namespaces and must run as root (as CI does), \
         e.g. `sudo -E cargo test`"
    );
    ip_command();
    require_binary(
        "unshare",
        &["/usr/bin", "/bin"],
        "apt-get install util-linux",
    );
}

/// A command that runs iproute2's `ip`, found also where PATH may not look (`sbin`).
pub fn ip_command() -> Command {
    Command::new(ip_path())
}

fn ip_path() -> &'static PathBuf {
    static IP: OnceLock<PathBuf> = OnceLock::new();
    IP.get_or_init(|| require_binary("ip", &["/usr/sbin", "/sbin"], "apt-get install iproute2"))
}

/// Runs `ip ARGS`, or fails the test with what `ip` said.
fn ip(args: &[&str]) {
    let output = ip_command()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    assert!(
        output.status.success(),
        "`ip {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Runs `ip ARGS` in the namespace `netns`.
fn ip_in(netns: &str, args: &[&str]) {
    let mut all = vec!["-n", netns];
    all.extend_from_slice(args);
    ip(&all);
}

/// The pids of every process in the namespace `netns` (none if it is gone).
fn pids_in(netns: &str) -> Vec<i32> {
    ip_command()
        .args(["netns", "pids", netns])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|output| {
            String::from_utf8_lossy(&output.stdout)
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every process in `netns`, waits (a while) until they are gone, and deletes it. Never
/// panics, as it runs in `drop`, also while a failed test unwinds; what it cannot do it says.
fn remove_namespace(netns: &str) {
    let started = Instant::now();
    loop {
        let pids = pids_in(netns);
        if pids.is_empty() {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            eprintln!("hosts: processes {pids:?} in {netns} outlived SIGKILL for 10 s");
            break;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let deleted = ip_command()
        .args(["netns", "delete", netns])
        .stdin(Stdio::null())
        .output();
    match deleted {
        Ok(output) if output.status.success() => {}
        Ok(output) => eprintln!(
            "hosts: `ip netns delete {netns}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(err) => eprintln!("hosts: `ip netns delete {netns}`: {err}"),
    }
}

/// Every namespace whose name `ip netns list` shows.
pub fn namespaces() -> Vec<String> {
    let output = ip_command()
        .args(["netns", "list"])
        .stdin(Stdio::null())
        .output()
        .expect("run ip netns list");
    assert!(output.status.success(), "`ip netns list` failed");
    // Lines are `NAME` or `NAME (id: N)`.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Removes the namespaces of test runs that were killed before they could (`sgt<pid>-…` whose
/// pid is no running process). A reused pid only delays the sweep to a later run.
fn sweep_leftovers() {
    for netns in namespaces() {
        let Some(pid) = netns
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if !super::alive(pid) {
            eprintln!("hosts: removing {netns}, left by test process {pid}");
            remove_namespace(&netns);
        }
    }
}
