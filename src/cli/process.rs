//! The wrapped command's process group: spawning it, signalling it, and making sure it cannot
//! outlive a supervisor that was killed.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::{SigHandler, Signal, killpg, signal};
use nix::unistd::{ForkResult, Pid, fork, pipe2};
use tokio::process::{Child, Command};

/// Spawns `command` directly (no shell) as the leader of a new process group. On Linux the
/// command is killed by the kernel if the supervisor dies.
pub fn spawn(command: &[OsString], env: &[(&str, String)]) -> std::io::Result<Child> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::other("no command given"))?;
    let mut cmd = Command::new(program);
    cmd.args(args).process_group(0);
    for (key, value) in env {
        cmd.env(key, value);
    }
    #[cfg(target_os = "linux")]
    {
        let supervisor = nix::unistd::getpid();
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (prctl, getppid, kill).
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The supervisor may have died before the line above took effect.
                if nix::unistd::getppid() != supervisor {
                    nix::sys::signal::raise(Signal::SIGKILL)?;
                }
                Ok(())
            });
        }
    }
    cmd.spawn()
}

/// Sends `signal` to every process of the group; `false` if the group no longer exists.
pub fn signal_group(group: Pid, signal: Signal) -> bool {
    killpg(group, signal).is_ok()
}

/// Whether any process of the group is still alive (or not yet reaped).
pub fn group_exists(group: Pid) -> bool {
    !matches!(killpg(group, None), Err(Errno::ESRCH))
}

/// A watchdog process that SIGKILLs the command's whole process group if the supervisor dies
/// without standing it down. The kernel's parent-death signal reaches only the direct child; a
/// shell script's own children would otherwise run on unsupervised after a `kill -9` or an OOM
/// kill of the supervisor, while the lease expires and another host starts the job.
#[derive(Debug)]
pub struct Watchdog {
    /// Writing a byte stands the watchdog down; closing this end without one makes it kill.
    stand_down: Option<OwnedFd>,
}

impl Watchdog {
    /// Forks the watchdog for `group`.
    pub fn start(group: Pid) -> nix::Result<Watchdog> {
        let (read_end, write_end) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: the child only calls async-signal-safe functions (setpgid, signal, close,
        // read, kill, _exit) and never returns into Rust code that could allocate or lock.
        match unsafe { fork() }? {
            ForkResult::Child => unsafe { watch(group, read_end, write_end) },
            ForkResult::Parent { .. } => {
                drop(read_end);
                Ok(Watchdog {
                    stand_down: Some(write_end),
                })
            }
        }
    }

    /// Tells the watchdog that the group is finished with; it exits without killing.
    pub fn stand_down(mut self) {
        if let Some(fd) = self.stand_down.take() {
            let _ = nix::unistd::write(&fd, b"x");
        }
    }
}

/// The watchdog's whole life, in the forked child.
///
/// # Safety
/// Must only be called in a freshly forked child of a possibly multi-threaded process.
unsafe fn watch(group: Pid, read_end: OwnedFd, write_end: OwnedFd) -> ! {
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
    let raw_write = write_end.as_raw_fd();
    std::mem::forget(write_end);
    // SAFETY: `raw_write` is a descriptor we own and no longer use.
    unsafe { nix::libc::close(raw_write) };
    let mut byte = [0u8; 1];
    let stood_down = loop {
        match nix::unistd::read(&read_end, &mut byte) {
            Ok(1) => break true,
            Err(Errno::EINTR) => continue,
            // End of file: the supervisor died without standing us down.
            _ => break false,
        }
    };
    if !stood_down {
        let _ = killpg(group, Signal::SIGKILL);
    }
    // SAFETY: `_exit` skips atexit handlers and destructors, as required after fork.
    unsafe { nix::libc::_exit(0) }
}
