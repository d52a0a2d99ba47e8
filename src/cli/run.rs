//! `singleton run`: the supervisor. Acquire (or wait), run the command in its own process group,
//! forward signals, stop the command if the lease is lost, release on every way out.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::json;
use singleton_process::{Error, Event, LeaseGuard, Lock, Options, Singleton, Store};
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};
use tokio::sync::broadcast;
use tokio::time::{Instant, sleep_until};

use super::label::label;
use super::output::Output;
use super::process::{self, Watchdog};
use super::{RunArgs, exit};

/// The signals that are forwarded to the command (and end a wait).
const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// How often leftover processes of the group are checked for while they are given time to exit.
const GROUP_POLL: Duration = Duration::from_millis(20);

pub async fn run(args: RunArgs, store: Arc<dyn Store>, out: &Output) -> Result<i32, Error> {
    // Listen before anything else, so that a signal during the wait is not lost.
    let mut signals = Signals::new()?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => default_name(&args.command),
    };
    let mut options = Options::default()
        .lock_expire(args.ttl)
        .renew(!args.no_renew)
        .label(label(args.label.as_deref(), &args.command));
    if let Some(grace) = args.grace {
        options = options.grace(grace);
    }
    let singleton = Singleton::new(name, store, options)?;
    let mut events = singleton.events();

    let attempt = async {
        if args.wait {
            singleton.lock_wait(args.timeout).await
        } else {
            singleton.lock().await
        }
    };
    let outcome = tokio::select! {
        outcome = with_events(attempt, &mut events, out) => outcome?,
        sig = signals.recv() => {
            drain(&mut events, out);
            out.note("signal", json!({ "signal": sig.as_str() }),
                &format!("received {} while waiting for the lease; exiting", sig.as_str()), true);
            return Ok(128 + sig as i32);
        }
    };
    drain(&mut events, out);
    let guard = match outcome {
        Lock::Locked(guard) => guard,
        Lock::Conflict(_) if args.wait => return Ok(exit::WAIT_TIMEOUT),
        Lock::Conflict(_) => return Ok(i32::from(args.conflict_exit)),
    };

    let code = supervise(&args, &singleton, &guard, &mut signals, &mut events, out).await;
    let released = guard.release().await;
    drain(&mut events, out);
    match released {
        // The store that lost the lease is often one that cannot be reached: the failed release
        // was reported as an `error` event, and the exit code still says that the lease was lost.
        Err(_) if code == exit::LOST => Ok(code),
        released => released.map(|_| code),
    }
}

/// Runs the command under the lease and returns the exit code to give.
async fn supervise(
    args: &RunArgs,
    singleton: &Singleton,
    guard: &LeaseGuard,
    signals: &mut Signals,
    events: &mut broadcast::Receiver<Event>,
    out: &Output,
) -> i32 {
    let env = [
        ("SINGLETON_NAME", singleton.name().to_owned()),
        ("SINGLETON_TOKEN", guard.token().to_string()),
        ("SINGLETON_HOLDER", guard.holder().id),
    ];
    let terminal = process::owns_terminal();
    let spawned = process::spawn(&args.command, &env, terminal);
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            let program = args.command[0].to_string_lossy();
            out.note(
                "spawn_failed",
                json!({ "command": program, "error": err.to_string() }),
                &format!("cannot run {program:?}: {err}"),
                true,
            );
            return match err.kind() {
                std::io::ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_EXECUTE,
            };
        }
    };
    let pid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .unwrap_or(0);
    let group = Pid::from_raw(pid);
    out.note(
        "started",
        json!({ "pid": pid, "token": guard.token() }),
        &format!(
            "started {:?} as pid {pid} (token {})",
            label(args.label.as_deref(), &args.command),
            guard.token()
        ),
        false,
    );
    let mut deadlines = guard.safe_until_changes();
    let watchdog = match Watchdog::start(group, *deadlines.borrow_and_update()) {
        Ok(watchdog) => Some(watchdog),
        Err(err) => {
            out.note("watchdog_failed", json!({ "error": err.to_string() }),
                &format!("cannot start the watchdog ({err}); the command is protected only by the parent-death signal"), true);
            None
        }
    };

    let mut lost = false;
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            sig = signals.recv() => {
                out.note("signal", json!({ "signal": sig.as_str(), "pid": pid }),
                    &format!("forwarding {} to the command", sig.as_str()), false);
                process::signal_group(group, sig);
            }
            _ = guard.lost(), if !lost => {
                lost = true;
                drain(events, out);
                let grace = singleton.grace();
                let now = Instant::now();
                let deadline = guard.safe_until().map_or(now + grace, |safe| safe.min(now + grace));
                kill_at = Some(deadline.max(now));
                out.note("terminating", json!({ "pid": pid, "signal": "SIGTERM", "kill_in_ms": grace.as_millis() as u64 }),
                    &format!("lease lost: sending SIGTERM to the command, SIGKILL in {}", humantime::format_duration(deadline.saturating_duration_since(now))), true);
                process::signal_group(group, Signal::SIGTERM);
            }
            _ = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                kill_at = None;
                out.note("killing", json!({ "pid": pid, "signal": "SIGKILL" }),
                    "the command did not stop in time: sending SIGKILL", true);
                process::signal_group(group, Signal::SIGKILL);
            }
            Ok(()) = deadlines.changed(), if watchdog.is_some() => {
                if let Some(watchdog) = &watchdog {
                    watchdog.set_deadline(*deadlines.borrow_and_update());
                }
            }
            Ok(event) = events.recv() => out.event(&event),
        }
    };
    if terminal {
        process::reclaim_terminal();
    }
    // The lease must not outlive the command's group: whatever it left behind stops too.
    stop_leftovers(group, singleton.grace(), out).await;
    if let Some(watchdog) = watchdog {
        watchdog.stand_down();
    }
    let code = match status {
        Ok(status) => exit_code_of(status),
        Err(err) => {
            out.note(
                "wait_failed",
                json!({ "error": err.to_string() }),
                &format!("lost track of the command: {err}"),
                true,
            );
            exit::INTERNAL
        }
    };
    out.note(
        "exited",
        json!({ "pid": pid, "code": code }),
        &format!("command exited with code {code}"),
        false,
    );
    // A supervisor that was stalled past its deadline may see the command's death (by the
    // watchdog) before its own keeper has declared the loss.
    let lost = lost
        || guard.is_lost()
        || guard
            .safe_until()
            .is_some_and(|safe| safe <= Instant::now());
    if lost { exit::LOST } else { code }
}

/// Processes the command left running in its group get SIGTERM, then SIGKILL after `grace`.
async fn stop_leftovers(group: Pid, grace: Duration, out: &Output) {
    if !process::group_exists(group) {
        return;
    }
    out.note(
        "terminating",
        json!({ "group": group.as_raw(), "signal": "SIGTERM" }),
        "the command left processes behind in its group: sending them SIGTERM",
        true,
    );
    process::signal_group(group, Signal::SIGTERM);
    let give_up = Instant::now() + grace;
    while process::group_exists(group) && Instant::now() < give_up {
        tokio::time::sleep(GROUP_POLL).await;
    }
    if process::group_exists(group) {
        process::signal_group(group, Signal::SIGKILL);
    }
}

fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => exit::INTERNAL,
    }
}

/// Polls `future` while printing the events it emits.
async fn with_events<T>(
    future: impl Future<Output = T>,
    events: &mut broadcast::Receiver<Event>,
    out: &Output,
) -> T {
    tokio::pin!(future);
    loop {
        tokio::select! {
            result = &mut future => return result,
            Ok(event) = events.recv() => out.event(&event),
        }
    }
}

/// Prints the events already emitted.
fn drain(events: &mut broadcast::Receiver<Event>, out: &Output) {
    loop {
        match events.try_recv() {
            Ok(event) => out.event(&event),
            Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => return,
        }
    }
}

fn default_name(command: &[OsString]) -> String {
    command
        .first()
        .map(Path::new)
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The forwarded signals as one stream.
struct Signals {
    streams: Vec<(Signal, SignalStream)>,
}

impl Signals {
    fn new() -> Result<Self, Error> {
        let streams = FORWARDED
            .iter()
            .map(|&sig| {
                signal(SignalKind::from_raw(sig as i32))
                    .map(|stream| (sig, stream))
                    .map_err(|e| Error::InvalidOptions {
                        reason: format!("cannot listen for {}: {e}", sig.as_str()),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Signals { streams })
    }

    /// The next forwarded signal received.
    async fn recv(&mut self) -> Signal {
        std::future::poll_fn(|cx| {
            for (sig, stream) in &mut self.streams {
                if stream.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*sig);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}
