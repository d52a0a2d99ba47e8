//! The wrapped command's process group: spawning it, signalling it, and making sure it cannot
//! outlive a supervisor that was killed.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, killpg, signal, sigprocmask};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::{ForkResult, Pid, fork, pipe2};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Spawns `command` directly (no shell) as the leader of a new process group. On Linux the
/// command is killed by the kernel if the supervisor dies. With `terminal`, the new group becomes
/// the terminal's foreground group, so that an interactive command can read from it (and gets
/// Ctrl-C directly), as a shell would do for it.
pub fn spawn(
    command: &[OsString],
    env: &[(&str, String)],
    terminal: bool,
) -> std::io::Result<Child> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::other("no command given"))?;
    let mut cmd = Command::new(program);
    cmd.args(args).process_group(0);
    for (key, value) in env {
        cmd.env(key, value);
    }
    if terminal {
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (sigprocmask, tcsetpgrp, getpid).
        unsafe {
            cmd.pre_exec(|| {
                with_sigttou_blocked(|| {
                    nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::getpid())
                })?;
                Ok(())
            });
        }
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

/// Sends `signal` to every process of the group; `false` if the group no longer exists.
pub fn signal_group(group: Pid, signal: Signal) -> bool {
    killpg(group, signal).is_ok()
}

/// Whether any process of the group is still alive (or not yet reaped).
pub fn group_exists(group: Pid) -> bool {
    !matches!(killpg(group, None), Err(Errno::ESRCH))
}

/// A watchdog process that enforces the lease's safe deadline on the command's whole process
/// group, independently of the supervisor:
///
/// - if the supervisor dies (`kill -9`, OOM) without standing it down, it SIGKILLs the group at
///   once. The kernel's parent-death signal reaches only the direct child; a shell script's own
///   children would otherwise run on unsupervised while the lease expires and another host starts
///   the job;
/// - if the safe deadline passes while the group still runs, because the supervisor is stalled
///   (stopped, starved, swapped out) and could not renew or stop the command, it SIGKILLs the group
///   then, before the store can hand the lease to anyone else.
///
/// The supervisor sends each new deadline (after every renewal) through a pipe.
#[derive(Debug)]
pub struct Watchdog {
    /// Deadlines go in as 8-byte CLOCK_MONOTONIC nanoseconds; closing it without a stand-down
    /// message makes the watchdog kill.
    pipe: Option<OwnedFd>,
}

/// The message that stands the watchdog down.
const STAND_DOWN: u64 = 0;
/// The deadline of a lease that never expires.
const NO_DEADLINE: u64 = u64::MAX;

impl Watchdog {
    /// Forks the watchdog for `group`, enforcing `deadline` (`None`: no deadline).
    pub fn start(group: Pid, deadline: Option<Instant>) -> nix::Result<Watchdog> {
        let (read_end, write_end) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let first = monotonic_ns(deadline);
        // SAFETY: the child only calls async-signal-safe functions (setpgid, signal, close, poll,
        // read, clock_gettime, kill, _exit) and never returns into code that could allocate or
        // take a lock another thread held at fork time.
        match unsafe { fork() }? {
            ForkResult::Child => unsafe { watch(group, first, read_end, write_end) },
            ForkResult::Parent { .. } => {
                drop(read_end);
                Ok(Watchdog {
                    pipe: Some(write_end),
                })
            }
        }
    }

    /// Moves the deadline (after a renewal).
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        self.send(monotonic_ns(deadline));
    }

    /// Tells the watchdog that the group is finished with; it exits without killing.
    pub fn stand_down(mut self) {
        self.send(STAND_DOWN);
        self.pipe = None;
    }

    fn send(&self, message: u64) {
        if let Some(fd) = &self.pipe {
            // 8 bytes are below PIPE_BUF, so the write is atomic.
            let _ = nix::unistd::write(fd, &message.to_le_bytes());
        }
    }
}

/// `deadline` as CLOCK_MONOTONIC nanoseconds, the clock tokio's `Instant` is based on.
fn monotonic_ns(deadline: Option<Instant>) -> u64 {
    let Some(deadline) = deadline else {
        return NO_DEADLINE;
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    now_ns()
        .saturating_add(u64::try_from(remaining.as_nanos()).unwrap_or(u64::MAX))
        .clamp(1, NO_DEADLINE - 1)
}

fn now_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(now) => (now.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(now.tv_nsec() as u64),
        // Cannot happen for CLOCK_MONOTONIC; "now" makes the watchdog act rather than wait.
        Err(_) => 0,
    }
}

/// The watchdog's whole life, in the forked child.
///
/// # Safety
/// Must only be called in a freshly forked child of a possibly multi-threaded process.
unsafe fn watch(group: Pid, mut deadline: u64, read_end: OwnedFd, write_end: OwnedFd) -> ! {
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

    let kill = loop {
        let now = now_ns();
        if deadline != NO_DEADLINE && now >= deadline {
            break true;
        }
        let timeout = if deadline == NO_DEADLINE {
            PollTimeout::NONE
        } else {
            // Round up so that we never wake just before the deadline and spin.
            let ms = (deadline - now).div_ceil(1_000_000);
            PollTimeout::try_from(ms.min(i32::MAX as u64) as i32).unwrap_or(PollTimeout::MAX)
        };
        let mut fds = [PollFd::new(read_end.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => break true,
        }
        let mut message = [0u8; 8];
        match nix::unistd::read(&read_end, &mut message) {
            Ok(8) => match u64::from_le_bytes(message) {
                STAND_DOWN => break false,
                next => deadline = next,
            },
            Err(Errno::EINTR) => continue,
            // End of file: the supervisor died without standing us down.
            _ => break true,
        }
    };
    if kill {
        let _ = killpg(group, Signal::SIGKILL);
    }
    // SAFETY: `_exit` skips atexit handlers and destructors, as required after fork.
    unsafe { nix::libc::_exit(0) }
}
