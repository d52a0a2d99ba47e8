//! The wrapped command's processes: spawning them contained, signalling them, knowing when every
//! one is gone, and making sure none outlives a supervisor that was killed.
//!
//! # Containment
//! The command runs as the leader of a new process group, and, where the host lets us make one,
//! in a cgroup v2 of its own (`--kill-mode`). A process group is left by anything that calls
//! `setsid` or `setpgid`: a daemonizing child, a double fork, `sudo`, `nohup … &`; a cgroup is
//! not (only a process allowed to write to another cgroup's `cgroup.procs` can move itself out,
//! which in practice means one running as root that means to). The cgroup is stopped with
//! `cgroup.kill`, and `cgroup.events` says when it is empty. Making a cgroup needs root, or a
//! delegated subtree (a systemd unit with `Delegate=yes`, a user's `systemd --user` services);
//! without one, the process group is all there is, and `-v`/`--json` say so.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, kill, killpg, signal, sigprocmask};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::unistd::{ForkResult, Pid, fork, pipe2};
use singleton_process::BootInstant;
use tokio::process::{Child, Command};

/// How the command's processes are kept together and stopped (`--kill-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KillMode {
    /// A cgroup v2 of its own where one can be made, else the process group.
    Auto,
    /// A cgroup v2 of its own; refuse to run if none can be made.
    Cgroup,
    /// The process group only: processes that leave it are not stopped.
    Group,
}

/// Where the command's cgroup can be made: below the supervisor's own cgroup v2, found and
/// checked before the lease is taken so that a run that must have a cgroup holds nothing
/// while it fails.
#[derive(Debug)]
pub struct CgroupPlace {
    parent: PathBuf,
}

impl CgroupPlace {
    /// The supervisor's own cgroup, if a cgroup for the command can be made below it: we may
    /// create directories there and move processes out of it. Says why not otherwise.
    pub fn find() -> Result<CgroupPlace, String> {
        let parent = own_cgroup_dir()?;
        for (path, what) in [
            (parent.clone(), "create a cgroup in"),
            // Moving a process needs write access to the cgroup it comes from, too.
            (parent.join("cgroup.procs"), "move processes out of"),
        ] {
            nix::unistd::access(&path, nix::unistd::AccessFlags::W_OK)
                .map_err(|err| format!("may not {what} {}: {}", parent.display(), err.desc()))?;
        }
        Ok(CgroupPlace { parent })
    }

    /// Makes the command's cgroup, just before it is spawned (an empty cgroup of a supervisor
    /// that is gone is removed by one that makes its own here later).
    pub fn create(&self) -> Result<Cgroup, String> {
        // Stale ones are rare (both a supervisor and its watchdog must have been SIGKILLed) and
        // harmless while they wait: look for them now and then, not on every run.
        if fastrand::u8(..8) == 0 {
            sweep_stale(&self.parent);
        }
        let dir = self.parent.join(format!(
            "singleton-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir(&dir)
            .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
        let procs = match open_write(&dir.join("cgroup.procs")) {
            Ok(procs) => procs,
            Err(err) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(format!(
                    "cannot move processes into {}: {err}",
                    dir.display()
                ));
            }
        };
        let kill = open_write(&dir.join("cgroup.kill")).ok();
        Ok(Cgroup { dir, procs, kill })
    }
}

/// A cgroup v2 made for one run of the command, removed when dropped once it is empty.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    /// `cgroup.procs`, open for writing: where the kernel cannot start the command inside the
    /// cgroup, the command moves itself in between fork and exec.
    procs: OwnedFd,
    /// `cgroup.kill` (Linux 5.14+), open for writing.
    kill: Option<OwnedFd>,
}

impl Cgroup {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether any live process is in the cgroup or below it (`populated` of
    /// `cgroup.events`; zombies do not count). A cgroup that cannot be read counts as
    /// populated: nothing is released on a guess.
    pub fn populated(&self) -> bool {
        match std::fs::read_to_string(self.dir.join("cgroup.events")) {
            Ok(events) => !events.lines().any(|line| line.trim() == "populated 0"),
            Err(_) => true,
        }
    }

    /// The processes in the cgroup and in any the command made below it.
    fn pids(&self) -> Vec<Pid> {
        let mut pids = Vec::new();
        let mut dirs = vec![self.dir.clone()];
        while let Some(dir) = dirs.pop() {
            pids.extend(
                std::fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|pid| pid.parse().ok())
                    .filter(|&pid| pid > 1)
                    .map(Pid::from_raw),
            );
            let children = std::fs::read_dir(&dir).into_iter().flatten().flatten();
            dirs.extend(
                children
                    .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
                    .map(|entry| entry.path()),
            );
        }
        pids
    }

    /// Sends `signal` to every process in the cgroup and below it.
    fn signal(&self, signal: Signal) {
        for pid in self.pids() {
            let _ = kill(pid, signal);
        }
    }

    /// SIGKILLs every process in the cgroup and below it, forks included.
    fn kill(&self) {
        match &self.kill {
            Some(kill) => {
                let _ = nix::unistd::write(kill, b"1");
            }
            None => self.signal(Signal::SIGKILL),
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Fails while processes remain: the watchdog then removes it once they are gone.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn open_write(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new().write(true).open(path)?.into())
}

/// The directory of the cgroup v2 this process is in, found through the cgroup2 mount in
/// `/proc/self/mountinfo` (beside the v1 hierarchies on hybrid hosts, at /sys/fs/cgroup on
/// pure v2 ones) and our path in `/proc/self/cgroup`.
fn own_cgroup_dir() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let (root, mount_point) =
        cgroup2_mount(&mountinfo).ok_or("no cgroup2 file system is mounted")?;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let own = cgroups
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2")?;
    let relative = own
        .strip_prefix(root.trim_end_matches('/'))
        .ok_or_else(|| format!("our cgroup {own} is outside the cgroup2 mount's root {root}"))?;
    Ok(mount_point.join(relative.trim_start_matches('/')))
}

/// The root and mount point of the first cgroup2 mount in a mountinfo text.
fn cgroup2_mount(mountinfo: &str) -> Option<(String, PathBuf)> {
    mountinfo.lines().find_map(|line| {
        let (fields, rest) = line.split_once(" - ")?;
        if rest.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = fields.split_whitespace().skip(3);
        let root = unescape_mountinfo(fields.next()?);
        let mount_point = unescape_mountinfo(fields.next()?);
        Some((root, PathBuf::from(mount_point)))
    })
}

/// Mountinfo writes space, tab, newline and backslash in paths as octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How old an empty command cgroup must be before another supervisor removes it: a supervisor
/// makes its cgroup just before it spawns the command into it, so a younger empty one may be
/// about to be used (maybe by a supervisor in another PID namespace, whose pid means nothing
/// here).
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes the empty cgroups that supervisors which are gone left under `parent` (when both a
/// supervisor and its watchdog were SIGKILLed). A populated one cannot be removed.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ours = name
            .to_str()
            .is_some_and(|name| name.starts_with("singleton-"));
        let old = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if ours && old {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// The command's processes: its process group, and its cgroup where it has one.
#[derive(Debug)]
pub struct Job {
    group: Pid,
    cgroup: Option<Cgroup>,
}

impl Job {
    /// The command's process group (its leader's pid).
    pub fn group(&self) -> Pid {
        self.group
    }

    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// A signal from the user or the service manager, passed on as a shell would: to the
    /// command's process group.
    pub fn forward(&self, signal: Signal) {
        signal_group(self.group, signal);
    }

    /// Sends `signal` to every process of the command: its group and its cgroup.
    pub fn signal_all(&self, signal: Signal) {
        signal_group(self.group, signal);
        if let Some(cgroup) = &self.cgroup {
            cgroup.signal(signal);
        }
    }

    /// SIGKILLs every process of the command.
    pub fn kill_all(&self) {
        signal_group(self.group, Signal::SIGKILL);
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill();
        }
    }

    /// Whether every process of the command is gone, once the command itself has been waited
    /// for. Zombies count as gone (they run no code); those that are our own children (orphans
    /// come to us when we are PID 1, as in a container) are reaped here, or they would stay.
    pub fn is_gone(&self) -> bool {
        reap_group(self.group);
        !group_alive(self.group) && self.cgroup.as_ref().is_none_or(|c| !c.populated())
    }
}

/// Reaps the members of `group` that are our children and have exited.
fn reap_group(group: Pid) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    if group.as_raw() <= 1 {
        return;
    }
    while let Ok(status) = waitpid(Pid::from_raw(-group.as_raw()), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            return;
        }
    }
}

/// Whether any process of `group` is alive: a zombie is not. When in doubt (no /proc), yes.
fn group_alive(group: Pid) -> bool {
    if !group_exists(group) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|name| !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_digit()));
        if !is_pid {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // After the parenthesised command: state, ppid, pgrp.
        let mut fields = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace();
        let state = fields.next().unwrap_or("");
        let pgrp = fields.nth(1).and_then(|pgrp| pgrp.parse::<i32>().ok());
        pgrp == Some(group.as_raw()) && !matches!(state, "Z" | "X")
    })
}

/// Spawns `command` directly (no shell) as the leader of a new process group, inside `cgroup`
/// if given: born there where the kernel can do that (Linux 5.7+), else moved in before it
/// executes anything; either way nothing it starts is outside. On Linux the command is killed
/// by the kernel if the supervisor dies. With `terminal`, the new group becomes the terminal's
/// foreground group, so that an interactive command can read from it (and gets Ctrl-C
/// directly), as a shell would do for it.
pub fn spawn(
    command: &[OsString],
    env: &[(&str, String)],
    terminal: bool,
    cgroup: Option<Cgroup>,
) -> std::io::Result<(Spawned, Job)> {
    if command.is_empty() {
        return Err(std::io::Error::other("no command given"));
    }
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        let born = match &cgroup {
            Some(cgroup) => born::spawn(command, env, terminal, cgroup.dir())?,
            None => None,
        };
        if let Some(born) = born {
            let group = Pid::from_raw(born.pid());
            return Ok((Spawned::Born(born), Job { group, cgroup }));
        }
    }
    spawn_moving_in(command, env, terminal, cgroup)
}

/// [`spawn`] by tokio: the command moves itself into `cgroup` between fork and exec.
fn spawn_moving_in(
    command: &[OsString],
    env: &[(&str, String)],
    terminal: bool,
    cgroup: Option<Cgroup>,
) -> std::io::Result<(Spawned, Job)> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::other("no command given"))?;
    let mut cmd = Command::new(program);
    cmd.args(args).process_group(0);
    for (key, value) in env {
        cmd.env(key, value);
    }
    if let Some(cgroup) = &cgroup {
        let procs: RawFd = cgroup.procs.as_raw_fd();
        // SAFETY: the closure runs between fork and exec and only makes the async-signal-safe
        // write(2) on a descriptor that stays open until the spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                // "0" moves the writing process itself. If it cannot, the command does not run.
                let written = nix::libc::write(procs, b"0".as_ptr().cast(), 1);
                if written == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    if terminal {
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (sigprocmask, tcsetpgrp, getpid).
        unsafe {
            cmd.pre_exec(|| Ok(take_the_terminal()?));
        }
    }
    #[cfg(target_os = "linux")]
    {
        let supervisor = nix::unistd::getpid();
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (prctl, getppid, kill).
        unsafe {
            cmd.pre_exec(move || Ok(die_with(supervisor)?));
        }
    }
    let child = cmd.spawn()?;
    let group = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .filter(|&pid| pid > 1)
        .map(Pid::from_raw)
        .ok_or_else(|| std::io::Error::other("the command has no process id"))?;
    Ok((Spawned::Tokio(child), Job { group, cgroup }))
}

/// Between fork and exec: makes the new process group the terminal's foreground group.
/// Async-signal-safe (sigprocmask, tcsetpgrp, getpid).
fn take_the_terminal() -> nix::Result<()> {
    // SAFETY: descriptor 0 stays open while this runs. (Not `std::io::stdin()`, which may
    // allocate on first use.)
    let stdin = unsafe { std::os::fd::BorrowedFd::borrow_raw(0) };
    with_sigttou_blocked(|| nix::unistd::tcsetpgrp(stdin, nix::unistd::getpid()))
}

/// Between fork and exec, on Linux: has the kernel SIGKILL the command when `supervisor`
/// dies, and kills it now if the supervisor is gone already. Async-signal-safe (prctl,
/// getppid, getpid, kill; not `raise`, which uses glibc's cache of the thread id, stale in a
/// child of a raw clone).
#[cfg(target_os = "linux")]
fn die_with(supervisor: Pid) -> nix::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    // The supervisor may have died before the line above took effect.
    if nix::unistd::getppid() != supervisor {
        kill(nix::unistd::getpid(), Signal::SIGKILL)?;
    }
    Ok(())
}

/// The command's process as spawned: by tokio, or, where the kernel can start it inside its
/// cgroup, by us, with a pidfd to wait on.
#[derive(Debug)]
pub enum Spawned {
    Tokio(Child),
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    Born(born::Born),
}

impl Spawned {
    /// Waits for the command to exit and reaps it. Cancel-safe.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Spawned::Tokio(child) => child.wait().await,
            #[cfg(all(
                target_os = "linux",
                any(target_arch = "x86_64", target_arch = "aarch64")
            ))]
            Spawned::Born(born) => born.wait().await,
        }
    }
}

/// Starting the command inside its cgroup with `clone3(CLONE_INTO_CGROUP)` (Linux 5.7+): the
/// kernel creates it there, so it never has to move. Moving a process (writing to
/// `cgroup.procs`) waits for every CPU to pass a quiescent point, which made up most of the
/// cost of starting a contained command, and its long tail on a busy host. On the 64-bit x86
/// and ARM hosts that this was tested on; elsewhere the command moves itself in.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod born {
    use std::ffi::{CString, OsString};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::ExitStatusExt;
    use std::path::Path;
    use std::process::ExitStatus;

    use nix::fcntl::OFlag;
    use nix::libc;
    use nix::unistd::Pid;
    use tokio::io::unix::AsyncFd;

    /// From <linux/sched.h>: libc's constant is a `c_int`, which this value overflows.
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

    /// A command we started ourselves: its pid, how we learn that it exited, and its status
    /// once it has.
    #[derive(Debug)]
    pub struct Born {
        pid: libc::pid_t,
        exit: Exit,
        status: Option<ExitStatus>,
    }

    #[derive(Debug)]
    enum Exit {
        /// Its pidfd, readable once it has exited.
        Pidfd(AsyncFd<OwnedFd>),
        /// A blocking wait on a thread of its own, where the pidfd could not be registered
        /// (the command runs by then, and must be waited for like any other).
        Blocking(Option<tokio::task::JoinHandle<io::Result<Option<ExitStatus>>>>),
    }

    impl Born {
        pub fn pid(&self) -> libc::pid_t {
            self.pid
        }

        /// Our child `pid`, waited for as where its pidfd could not be registered.
        #[cfg(test)]
        pub fn waited_on_a_thread(pid: libc::pid_t) -> Born {
            Born {
                pid,
                exit: Exit::Blocking(None),
                status: None,
            }
        }

        pub async fn wait(&mut self) -> io::Result<ExitStatus> {
            loop {
                if let Some(status) = self.status {
                    return Ok(status);
                }
                let pid = self.pid;
                match &mut self.exit {
                    Exit::Pidfd(pidfd) => {
                        let mut ready = pidfd.readable().await?;
                        match reap(pid, libc::WNOHANG)? {
                            None => ready.clear_ready(),
                            status => self.status = status,
                        }
                    }
                    Exit::Blocking(waiting) => {
                        let waiting = waiting.get_or_insert_with(|| {
                            tokio::task::spawn_blocking(move || reap(pid, 0))
                        });
                        self.status = waiting.await.map_err(io::Error::other)??;
                    }
                }
            }
        }
    }

    /// Reaps our child `pid` with `waitpid(options)`: its status, or `None` while it runs
    /// (with `WNOHANG`). Without `WNOHANG`, waits for it to exit.
    fn reap(pid: libc::pid_t, options: libc::c_int) -> io::Result<Option<ExitStatus>> {
        loop {
            let mut raw = 0;
            // SAFETY: waitpid only writes the status; the pid is our unreaped child.
            match unsafe { libc::waitpid(pid, &mut raw, options) } {
                0 => return Ok(None),
                -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                -1 => return Err(io::Error::last_os_error()),
                _ => return Ok(Some(ExitStatus::from_raw(raw))),
            }
        }
    }

    /// What the child needs, made before the clone: it may not allocate.
    struct Prepared {
        /// The program is the first.
        argv: Vec<CString>,
        envp: Vec<CString>,
    }

    fn c_string(bytes: &[u8]) -> io::Result<CString> {
        CString::new(bytes).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "an argument contains a NUL byte",
            )
        })
    }

    fn prepare(command: &[OsString], env: &[(&str, String)]) -> io::Result<Prepared> {
        let argv = command
            .iter()
            .map(|arg| c_string(arg.as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let mut envp = Vec::new();
        for (key, value) in std::env::vars_os() {
            if env
                .iter()
                .any(|(ours, _)| key.as_bytes() == ours.as_bytes())
            {
                continue;
            }
            let mut pair = key.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            envp.push(c_string(&pair)?);
        }
        for (key, value) in env {
            envp.push(c_string(format!("{key}={value}").as_bytes())?);
        }
        Ok(Prepared { argv, envp })
    }

    /// A NULL-terminated array of pointers to `strings`, as `execvpe` takes them.
    fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
        strings
            .iter()
            .map(|string| string.as_ptr())
            .chain([std::ptr::null()])
            .collect()
    }

    /// Starts `command` in `cgroup` (its directory), as the leader of a new process group, as
    /// `super::spawn` does; `Ok(None)` where this kernel (or a seccomp filter) does not let us,
    /// and the caller moves the command in instead.
    pub fn spawn(
        command: &[OsString],
        env: &[(&str, String)],
        terminal: bool,
        cgroup: &Path,
    ) -> io::Result<Option<Born>> {
        let prepared = prepare(command, env)?;
        let Ok(dir) = nix::fcntl::open(
            cgroup,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) else {
            return Ok(None);
        };
        let (argv, envp) = (pointers(&prepared.argv), pointers(&prepared.envp));
        // Tells us why the exec failed; closed by a successful one.
        let (failed_read, failed_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let supervisor = nix::unistd::getpid().as_raw();
        let mut pidfd: libc::c_int = -1;
        // SAFETY: an all-zero clone_args is valid (no flags, no stack: fork-like).
        let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
        args.flags = CLONE_INTO_CGROUP | libc::CLONE_PIDFD as u64;
        args.pidfd = std::ptr::from_mut(&mut pidfd) as u64;
        args.exit_signal = libc::SIGCHLD as u64;
        args.cgroup = dir.as_raw_fd() as u64;
        // SAFETY: clone3 without CLONE_VM gives the child a copy of this thread and memory, as
        // fork does; the child only makes async-signal-safe system calls on memory prepared
        // above and then executes or exits (`child` never returns).
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                std::ptr::from_mut(&mut args),
                std::mem::size_of::<libc::clone_args>(),
            )
        };
        if pid == 0 {
            // SAFETY: in the child, see above.
            unsafe {
                child(
                    &prepared.argv[0],
                    &argv,
                    &envp,
                    terminal,
                    supervisor,
                    failed_write.as_raw_fd(),
                )
            }
        }
        drop(failed_write);
        drop(dir);
        if pid < 0 {
            // No clone3, no CLONE_INTO_CGROUP (ENOSYS, E2BIG, EINVAL on kernels before 5.7,
            // or a seccomp filter), or the cgroup refuses us: the way that moves the command
            // in is tried next, and reports what is wrong with the cgroup.
            return Ok(None);
        }
        // A pid always fits; the child's own number.
        let pid = pid as libc::pid_t;
        // SAFETY: the kernel gave us this new descriptor for the child.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let mut errno = [0u8; 4];
        let read = loop {
            match nix::unistd::read(&failed_read, &mut errno) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other,
            }
        };
        if let Ok(4) = read {
            // The child exits without executing anything: reaped, and the error reported.
            reap(pid, 0)?;
            return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
        }
        // SAFETY: Born owns the descriptor and neither closes nor replaces it while registered.
        let exit = match unsafe {
            AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        } {
            Ok(pidfd) => Exit::Pidfd(pidfd),
            // The command runs, and may have started others: it is supervised all the same.
            Err(_) => Exit::Blocking(None),
        };
        Ok(Some(Born {
            pid,
            exit,
            status: None,
        }))
    }

    /// The child's side: the steps of `spawn_moving_in`'s `pre_exec` closures (a new group,
    /// `take_the_terminal`, `die_with`), then the exec; any failure is written to `failed` as an errno, and the child exits with 127.
    ///
    /// # Safety
    /// Only in the child of a fork-like clone: it makes raw system calls and never returns.
    unsafe fn child(
        program: &CString,
        argv: &[*const libc::c_char],
        envp: &[*const libc::c_char],
        terminal: bool,
        supervisor: libc::pid_t,
        failed: RawFd,
    ) -> ! {
        // SAFETY: raw, async-signal-safe system calls on memory that stays valid; no locks,
        // no allocation (glibc's caches of this thread are the parent's, so none of its
        // wrappers that use them: `kill(getpid())`, not `raise`).
        unsafe {
            let report = |errno: i32| -> ! {
                let bytes = errno.to_ne_bytes();
                libc::write(failed, bytes.as_ptr().cast(), bytes.len());
                libc::_exit(127)
            };
            let steps = || -> nix::Result<()> {
                nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
                if terminal {
                    super::take_the_terminal()?;
                }
                super::die_with(Pid::from_raw(supervisor))
            };
            if let Err(errno) = steps() {
                report(errno as i32);
            }
            // What the command gets from a Rust spawn: SIGPIPE as the default (Rust ignores
            // it) and no signal blocked.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::execvpe(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            report(*libc::__errno_location())
        }
    }
}

/// Whether we run in the foreground of the terminal on stdin, and should hand it to the command.
pub fn owns_terminal() -> bool {
    let stdin = std::io::stdin();
    nix::unistd::isatty(&stdin).unwrap_or(false)
        && nix::unistd::tcgetpgrp(&stdin).is_ok_and(|group| group == nix::unistd::getpgrp())
}

/// Takes the terminal's foreground back after the command's group had it.
pub fn reclaim_terminal() {
    let _ =
        with_sigttou_blocked(|| nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::getpgrp()));
}

/// Runs `f` with SIGTTOU blocked: a background process group may then take the terminal's
/// foreground instead of being stopped for trying.
fn with_sigttou_blocked<T>(f: impl FnOnce() -> nix::Result<T>) -> nix::Result<T> {
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut previous = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut previous))?;
    let result = f();
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&previous), None)?;
    result
}

/// Sends `signal` to every process of the group; `false` if the group no longer exists. Never
/// signals group 0 or 1, which would mean our own group or every process.
fn signal_group(group: Pid, signal: Signal) -> bool {
    group.as_raw() > 1 && killpg(group, signal).is_ok()
}

/// Whether any process of the group is still alive (or not yet reaped).
fn group_exists(group: Pid) -> bool {
    group.as_raw() > 1 && !matches!(killpg(group, None), Err(Errno::ESRCH))
}

/// A watchdog process that enforces the lease's safe deadline on all of the command's
/// processes, independently of the supervisor:
///
/// - if the supervisor dies (`kill -9`, OOM) without standing it down, it SIGKILLs the command's
///   process group and cgroup at once. The kernel's parent-death signal reaches only the direct
///   child; a shell script's own children would otherwise run on unsupervised while the lease
///   expires and another host starts the job;
/// - if the safe deadline passes while the command still runs, because the supervisor is stalled
///   (stopped, starved, swapped out) and could not renew or stop it, it SIGKILLs them then,
///   before the store can hand the lease to anyone else.
///
/// It is started before the command, so that no moment of the command's life is unguarded, and
/// learns the command's process group once it is spawned. After a kill it waits (up to a minute)
/// for the cgroup to empty and removes it. Deadlines are on the boot clock (`CLOCK_BOOTTIME`), so
/// a suspend of the host counts. The supervisor sends each new deadline (after every renewal)
/// through a pipe. The watchdog keeps no other descriptor of the supervisor's open.
#[derive(Debug)]
pub struct Watchdog {
    /// Messages go in as 16 bytes, a kind and a value; closing it without a stand-down message
    /// makes the watchdog kill. Non-blocking: a stopped watchdog whose pipe is full must not stop
    /// the supervisor (it then enforces an earlier deadline, the safe way round).
    pipe: Option<OwnedFd>,
}

/// Message kinds: stand down (the command is finished with), ...
const STAND_DOWN: u64 = 0;
/// ... a new deadline (nanoseconds of the boot clock, or [`NO_DEADLINE`]), ...
const DEADLINE: u64 = 1;
/// ... the command's process group.
const GROUP: u64 = 2;
/// The deadline of a lease that never expires.
const NO_DEADLINE: u64 = u64::MAX;

/// What the watchdog needs of a cgroup, prepared before the fork.
struct WatchedCgroup {
    /// `cgroup.kill`, open for writing, if the kernel has it.
    kill: Option<RawFd>,
    /// The directory, `cgroup.events` and `cgroup.procs` as C strings.
    dir: CString,
    events: CString,
    procs: CString,
}

impl Watchdog {
    /// Forks the watchdog for a command about to run in `cgroup` (if any), enforcing
    /// `deadline` (`None`: no deadline). Tell it the command's group with
    /// [`guard`](Self::guard) once it is spawned.
    pub fn start(cgroup: Option<&Cgroup>, deadline: Option<BootInstant>) -> nix::Result<Watchdog> {
        let (read_end, write_end) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        nix::fcntl::fcntl(
            &write_end,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        let timer = TimerFd::new(ClockId::CLOCK_BOOTTIME, TimerFlags::TFD_CLOEXEC)?;
        let cgroup = match cgroup {
            Some(cgroup) => {
                let c = |path: &Path| {
                    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
                };
                Some(WatchedCgroup {
                    kill: cgroup.kill.as_ref().map(AsRawFd::as_raw_fd),
                    dir: c(&cgroup.dir)?,
                    events: c(&cgroup.dir.join("cgroup.events"))?,
                    procs: c(&cgroup.dir.join("cgroup.procs"))?,
                })
            }
            None => None,
        };
        let first = boot_ns(deadline);
        // SAFETY: the child only calls async-signal-safe functions (setpgid, signal, open, dup2,
        // close, close_range, poll, read, write, timerfd_settime, kill, rmdir, usleep, _exit)
        // and never returns into code that could allocate or take a lock another thread held at
        // fork time.
        match unsafe { fork() }? {
            ForkResult::Child => unsafe {
                watch(cgroup.as_ref(), first, read_end, write_end, timer)
            },
            ForkResult::Parent { .. } => {
                drop(read_end);
                Ok(Watchdog {
                    pipe: Some(write_end),
                })
            }
        }
    }

    /// Tells the watchdog the command's process group, to kill along with the cgroup.
    pub fn guard(&self, group: Pid) {
        if group.as_raw() > 1 {
            self.send(GROUP, group.as_raw() as u64);
        }
    }

    /// Moves the deadline (after a renewal, or to an earlier kill).
    pub fn set_deadline(&self, deadline: Option<BootInstant>) {
        self.send(DEADLINE, boot_ns(deadline));
    }

    /// Tells the watchdog that the command is finished with; it exits without killing.
    pub fn stand_down(mut self) {
        self.send(STAND_DOWN, 0);
        self.pipe = None;
    }

    fn send(&self, kind: u64, value: u64) {
        if let Some(fd) = &self.pipe {
            let mut message = [0u8; 16];
            message[..8].copy_from_slice(&kind.to_le_bytes());
            message[8..].copy_from_slice(&value.to_le_bytes());
            // 16 bytes are below PIPE_BUF, so the write is atomic.
            let _ = nix::unistd::write(fd, &message);
        }
    }
}

/// `deadline` as nanoseconds of the boot clock.
fn boot_ns(deadline: Option<BootInstant>) -> u64 {
    let Some(deadline) = deadline else {
        return NO_DEADLINE;
    };
    u64::try_from(deadline.since_start().as_nanos())
        .unwrap_or(u64::MAX)
        .clamp(1, NO_DEADLINE - 1)
}

/// The watchdog's whole life, in the forked child.
///
/// # Safety
/// Must only be called in a freshly forked child of a possibly multi-threaded process.
unsafe fn watch(
    cgroup: Option<&WatchedCgroup>,
    mut deadline: u64,
    read_end: OwnedFd,
    write_end: OwnedFd,
    timer: TimerFd,
) -> ! {
    // Our own process group keeps a terminal's Ctrl-C (meant for the supervisor) away from us.
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: ignoring a signal installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    // Only the supervisor may hold the write end, or we would never see it close.
    drop(write_end);
    // We print nothing, and must not keep the supervisor's output, its store connections or
    // anything else of it open after it exits (cron, or a caller reading its output, waits for
    // the end of it).
    let mut keep = [
        read_end.as_raw_fd(),
        timer.as_fd().as_raw_fd(),
        cgroup.and_then(|c| c.kill).unwrap_or(-1),
    ];
    // SAFETY: async-signal-safe calls on descriptors of our own.
    unsafe { keep_only(&mut keep) };

    let mut group: Option<Pid> = None;
    let kill = loop {
        let armed = if deadline == NO_DEADLINE {
            timer.unset()
        } else {
            let at = TimeSpec::new(
                (deadline / 1_000_000_000) as _,
                (deadline % 1_000_000_000) as _,
            );
            // Absolute on CLOCK_BOOTTIME: due at once if it passed while the host slept.
            timer.set(
                Expiration::OneShot(at),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            )
        };
        if armed.is_err() {
            break true;
        }
        let mut fds = [
            PollFd::new(read_end.as_fd(), PollFlags::POLLIN),
            PollFd::new(timer.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => break true,
        }
        if deadline != NO_DEADLINE
            && fds[1]
                .revents()
                .is_some_and(|events| events.contains(PollFlags::POLLIN))
        {
            break true;
        }
        if fds[0].revents().is_none_or(|events| events.is_empty()) {
            continue;
        }
        let mut message = [0u8; 16];
        match nix::unistd::read(&read_end, &mut message) {
            Ok(16) => {
                let (kind, value) = message.split_at(8);
                let value = u64::from_le_bytes(value.try_into().unwrap_or([0; 8]));
                match u64::from_le_bytes(kind.try_into().unwrap_or([0; 8])) {
                    STAND_DOWN => break false,
                    DEADLINE => deadline = value,
                    GROUP => group = i32::try_from(value).ok().map(Pid::from_raw),
                    _ => break true,
                }
            }
            Err(Errno::EINTR) => continue,
            // End of file: the supervisor died without standing us down.
            _ => break true,
        }
    };
    if kill {
        if let Some(group) = group {
            let _ = signal_group(group, Signal::SIGKILL);
        }
        if let Some(cgroup) = cgroup {
            // SAFETY: only async-signal-safe calls on prepared strings and descriptors.
            unsafe { kill_and_remove(cgroup) };
        }
    }
    // SAFETY: `_exit` skips atexit handlers and destructors, as required after fork.
    unsafe { nix::libc::_exit(0) }
}

/// Points stdin, stdout and stderr at /dev/null and closes every other descriptor but those in
/// `keep` (-1 for none).
///
/// # Safety
/// Async-signal-safe; for the forked watchdog.
unsafe fn keep_only(keep: &mut [RawFd]) {
    // SAFETY: open, dup2 and close on a static path and our own descriptors.
    unsafe {
        let null = nix::libc::open(c"/dev/null".as_ptr(), nix::libc::O_RDWR);
        if null >= 0 {
            for fd in 0..=2 {
                nix::libc::dup2(null, fd);
            }
            if null > 2 && !keep.contains(&null) {
                nix::libc::close(null);
            }
        }
    }
    keep.sort_unstable();
    let mut from: RawFd = 3;
    for &fd in keep.iter().filter(|&&fd| fd >= 3) {
        if fd > from {
            // SAFETY: as for this function.
            unsafe { close_range(from, fd - 1) };
        }
        from = from.max(fd + 1);
    }
    // SAFETY: as for this function.
    unsafe { close_range(from, RawFd::MAX) };
}

/// Closes the descriptors `first..=last` (close_range(2), Linux 5.9; one by one before it, up
/// to 4096).
///
/// # Safety
/// Async-signal-safe.
unsafe fn close_range(first: RawFd, last: RawFd) {
    // SAFETY: a plain system call on descriptors of our own.
    let done = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            first as nix::libc::c_uint,
            last as nix::libc::c_uint,
            0 as nix::libc::c_uint,
        )
    };
    if done != 0 {
        for fd in first..=last.min(4096) {
            // SAFETY: as above.
            unsafe { nix::libc::close(fd) };
        }
    }
}

/// SIGKILLs everything in the cgroup, waits up to a minute for it to empty, and removes it.
///
/// # Safety
/// Async-signal-safe; for the forked watchdog.
unsafe fn kill_and_remove(cgroup: &WatchedCgroup) {
    for _ in 0..1200 {
        match cgroup.kill {
            Some(fd) => {
                // SAFETY: a descriptor we own, a static buffer.
                unsafe { nix::libc::write(fd, b"1".as_ptr().cast(), 1) };
            }
            // SAFETY: as for this function.
            None => unsafe { kill_listed(&cgroup.procs) },
        }
        // SAFETY: as for this function.
        if unsafe { !populated(&cgroup.events) } {
            // SAFETY: a NUL-terminated path.
            unsafe { nix::libc::rmdir(cgroup.dir.as_ptr()) };
            return;
        }
        // SAFETY: a plain sleep.
        unsafe { nix::libc::usleep(50_000) };
    }
}

/// Reads a small cgroup file into `buf`; the number of bytes read.
///
/// # Safety
/// Async-signal-safe.
unsafe fn read_small(path: &CString, buf: &mut [u8]) -> usize {
    // SAFETY: a NUL-terminated path; the descriptor is closed before returning.
    unsafe {
        let fd = nix::libc::open(path.as_ptr(), nix::libc::O_RDONLY | nix::libc::O_CLOEXEC);
        if fd < 0 {
            return 0;
        }
        let n = nix::libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        nix::libc::close(fd);
        n.max(0) as usize
    }
}

/// Whether `cgroup.events` says the cgroup is populated (unreadable: yes).
///
/// # Safety
/// Async-signal-safe.
unsafe fn populated(events: &CString) -> bool {
    let mut buf = [0u8; 256];
    // SAFETY: as for this function.
    let n = unsafe { read_small(events, &mut buf) };
    !buf[..n].windows(11).any(|w| w == b"populated 0")
}

/// SIGKILLs each process listed in `cgroup.procs` (kernels without `cgroup.kill`).
///
/// # Safety
/// Async-signal-safe.
unsafe fn kill_listed(procs: &CString) {
    let mut buf = [0u8; 4096];
    // SAFETY: as for this function.
    let n = unsafe { read_small(procs, &mut buf) };
    let mut pid: i32 = 0;
    for &byte in &buf[..n] {
        if byte.is_ascii_digit() {
            pid = pid
                .saturating_mul(10)
                .saturating_add(i32::from(byte - b'0'));
        } else {
            if pid > 1 {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            pid = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this build starts commands inside their cgroup (see `born`).
    const BORN_INSIDE: bool = cfg!(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ));

    /// Runs `sh -c script` into a new cgroup by `spawn` and by `spawn_moving_in`, and hands back
    /// what each wrote to the file `$OUT`, and the cgroup and group of each run.
    async fn both_ways(script: &str) -> Vec<(String, PathBuf, Pid, std::process::ExitStatus)> {
        let place = CgroupPlace::find()
            .unwrap_or_else(|reason| panic!("these tests need a cgroup v2 to write to: {reason}"));
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut seen = Vec::new();
        for (way, born) in [("spawn", true), ("moving_in", false)] {
            let out = dir.path().join(way);
            let command: Vec<OsString> = ["sh", "-c", script].map(OsString::from).into();
            let env = [("OUT", out.display().to_string())];
            let cgroup = place.create().expect("a cgroup");
            let (mut child, job) = if born {
                spawn(&command, &env, false, Some(cgroup)).expect("spawned")
            } else {
                spawn_moving_in(&command, &env, false, Some(cgroup)).expect("spawned")
            };
            let by_tokio = matches!(child, Spawned::Tokio(_));
            assert_eq!(!by_tokio, born && BORN_INSIDE, "{way}");
            let status = child.wait().await.expect("waited");
            let written = std::fs::read_to_string(&out).unwrap_or_default();
            let cgroup = job.cgroup().expect("its cgroup").dir().to_owned();
            seen.push((written, cgroup, job.group(), status));
        }
        seen
    }

    #[tokio::test]
    async fn the_command_runs_in_its_cgroup_and_group_whichever_way_it_is_started() {
        use std::os::unix::process::ExitStatusExt;
        let script = "cat /proc/self/cgroup > \"$OUT\"; \
                      echo \"pid $$ group $(cut -d' ' -f5 /proc/$$/stat)\" >> \"$OUT\"; \
                      while read -r l; do case $l in Sig*) echo \"$l\";; esac; done \
                      < /proc/$$/status >> \"$OUT\"; \
                      exit 7";
        for (written, cgroup, group, status) in both_ways(script).await {
            let name = cgroup.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                written
                    .lines()
                    .any(|line| line.starts_with("0::") && line.ends_with(&*name)),
                "not in {name}: {written}"
            );
            let pid = group.as_raw();
            assert!(
                written.contains(&format!("pid {pid} group {pid}\n")),
                "{written}"
            );
            assert!(written.contains("SigBlk:\t0000000000000000"), "{written}");
            // Rust ignores SIGPIPE; the command gets the default back.
            let ignored = written
                .lines()
                .find_map(|line| line.strip_prefix("SigIgn:\t"))
                .and_then(|mask| u64::from_str_radix(mask, 16).ok())
                .expect("SigIgn");
            assert_eq!(ignored & (1 << (nix::libc::SIGPIPE - 1)), 0, "{written}");
            assert_eq!(status.code(), Some(7));
        }
        // Killed by a signal, each reports it.
        for (_, _, _, status) in both_ways("kill -9 $$").await {
            assert_eq!(status.signal(), Some(9));
        }
    }

    /// Where the pidfd cannot be registered, the command is waited for on a thread instead.
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    #[tokio::test]
    // Born reaps it, not std.
    #[allow(clippy::zombie_processes)]
    async fn a_command_whose_pidfd_is_not_registered_is_waited_for_all_the_same() {
        let child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.2; exit 5"])
            .spawn()
            .expect("spawned");
        let mut born = born::Born::waited_on_a_thread(child.id() as i32);
        // Cancelled waits lose nothing.
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), born.wait()).await;
        assert!(early.is_err(), "{early:?}");
        assert_eq!(born.wait().await.expect("waited").code(), Some(5));
        assert_eq!(born.wait().await.expect("again").code(), Some(5));
    }

    #[tokio::test]
    async fn a_command_that_cannot_be_executed_is_reported_whichever_way_it_is_started() {
        let place = CgroupPlace::find().expect("a cgroup v2 to write to");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let not_executable = dir.path().join("not-executable");
        std::fs::write(&not_executable, "#!/bin/sh\n").expect("a file");
        let not_executable = not_executable.display().to_string();
        for born in [true, false] {
            for (program, kind) in [
                ("/nonexistent/program", std::io::ErrorKind::NotFound),
                ("no-such-program-on-the-path", std::io::ErrorKind::NotFound),
                (&*not_executable, std::io::ErrorKind::PermissionDenied),
            ] {
                let command = [OsString::from(program)];
                let cgroup = place.create().expect("a cgroup");
                let spawned = if born {
                    spawn(&command, &[], false, Some(cgroup))
                } else {
                    spawn_moving_in(&command, &[], false, Some(cgroup))
                };
                let err = spawned.err().unwrap_or_else(|| panic!("{program} ran"));
                assert_eq!(err.kind(), kind, "{program}: {err}");
            }
        }
    }

    #[test]
    fn the_cgroup2_mount_is_found_beside_v1_hierarchies_and_alone() {
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(("/".into(), PathBuf::from("/sys/fs/cgroup/unified")))
        );
        let pure = "26 1 0:23 / / rw - ext4 /dev/vda rw\n\
                    30 26 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(pure),
            Some(("/".into(), PathBuf::from("/sys/fs/cgroup")))
        );
        let escaped = "30 26 0:26 /a\\040b /mnt/c\\040g rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(escaped),
            Some(("/a b".into(), PathBuf::from("/mnt/c g")))
        );
        assert_eq!(
            cgroup2_mount("32 31 0:29 / /x rw - cgroup cgroup rw,cpu\n"),
            None
        );
    }

    #[test]
    fn signalling_never_reaches_our_own_group_or_everyone() {
        assert!(!signal_group(Pid::from_raw(0), Signal::SIGCONT));
        assert!(!signal_group(Pid::from_raw(1), Signal::SIGCONT));
        assert!(!group_exists(Pid::from_raw(0)));
    }
}
