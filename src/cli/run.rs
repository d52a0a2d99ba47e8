//! `singleton run`: the supervisor. Acquire (or wait), run the command contained in its own
//! process group and cgroup, forward signals, stop the command if the lease is lost, and
//! release on every way out once every process of the command is gone.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use singleton_process::clock::{self, BootInstant};
use singleton_process::{
    Error, Event, Holder, LeaseGuard, Lock, Loss, Options, Outcome, Released, Singleton, Store,
};
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};
use tokio::sync::broadcast;

use super::label::label;
use super::metrics::{MetricsFile, RunMetrics};
use super::output::Output;
use super::process::{self, CgroupPlace, KillMode, Watchdog};
use super::{RunArgs, exit};

/// The signals that are forwarded to the command (and end a wait).
const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// How often leftover processes of the command are checked for while they are given time to
/// exit.
const GROUP_POLL: Duration = Duration::from_millis(20);

/// The longest a command gets between SIGTERM and SIGKILL when the store said its lease is gone
/// (`--grace` applies when a renewal could not be confirmed): somebody else may hold it already.
const GONE_GRACE: Duration = Duration::from_secs(1);

/// The longest pause between tries to reach the store while `--wait` waits for it.
const CONNECT_PAUSE_MAX: Duration = Duration::from_secs(5);

/// Either go on with a value, or exit with a code.
enum Step<T> {
    Go(T),
    Exit(i32),
}

pub async fn run(args: RunArgs, url: &str, out: &Output) -> Result<i32, Error> {
    // Checked before anything is held, so that a metrics file that could never be written is
    // a usage error rather than a warning after the job ran.
    let metrics_file = args
        .metrics_file
        .as_deref()
        .map(MetricsFile::new)
        .transpose()?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => default_name(&args.command),
    };
    let mut metrics = RunMetrics::start(name.clone(), Holder::current("").host);
    let result = acquire_and_run(&args, name, url, &mut metrics, out).await;
    if let Some(file) = metrics_file {
        metrics.end(match &result {
            Ok(code) => *code,
            Err(err) => super::exit_code(err),
        });
        // The job's outcome stands whatever becomes of its report.
        if let Err(err) = file.write(&metrics) {
            let path = file.path().display();
            out.note(
                "metrics_failed",
                json!({ "path": path.to_string(), "error": err.to_string() }),
                &format!("cannot write the metrics file {path}: {err}"),
                true,
            );
        }
    }
    result
}

/// `run` up to its exit code, noting in `metrics` whether it acquired, met a holder or lost.
async fn acquire_and_run(
    args: &RunArgs,
    name: String,
    url: &str,
    metrics: &mut RunMetrics,
    out: &Output,
) -> Result<i32, Error> {
    // Listen before anything else, so that a signal during the wait is not lost.
    let mut signals = Signals::new()?;
    let give_up =
        match args.timeout {
            Some(timeout) => Some(BootInstant::now().checked_add(timeout).ok_or_else(|| {
                Error::InvalidOptions {
                    reason: "the wait timeout is too large".into(),
                }
            })?),
            None => None,
        };
    // Made before the lease is taken: if the command cannot be contained as asked, nothing is
    // held meanwhile.
    let place = contain(args.kill_mode, out)?;
    let store = match connect(args, url, give_up, &mut signals, out).await? {
        Step::Go(store) => store,
        Step::Exit(code) => return Ok(code),
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
            singleton
                .lock_wait(give_up.map(BootInstant::remaining))
                .await
        } else {
            singleton.lock().await
        }
    };
    let outcome = tokio::select! {
        outcome = with_events(attempt, &mut events, out) => outcome,
        sig = signals.recv() => {
            drain(&mut events, out);
            return Ok(ended_waiting(sig, out));
        }
    };
    let guard = match outcome {
        // The store could not be reached until the wait ran out: its `error` event says so.
        Err(Error::Timeout {
            operation: "wait", ..
        }) => {
            drain(&mut events, out);
            return Ok(exit::WAIT_TIMEOUT);
        }
        // Reported once, by the caller, as the run's failure.
        Err(err) => return Err(err),
        Ok(outcome) => {
            drain(&mut events, out);
            metrics.conflict = matches!(outcome, Lock::Conflict(_));
            match outcome {
                Lock::Locked(guard) => guard,
                Lock::Conflict(_) if args.wait => return Ok(exit::WAIT_TIMEOUT),
                Lock::Conflict(_) => return Ok(i32::from(args.conflict_exit)),
            }
        }
    };

    metrics.acquired = true;
    let (code, outcome, all_gone) = supervise(
        args,
        &singleton,
        &guard,
        place.as_ref(),
        &mut signals,
        &mut events,
        out,
    )
    .await;
    metrics.lost = outcome == Outcome::Lost || !all_gone;
    if !all_gone {
        // Releasing now could let the next holder start beside what is left of this run.
        drain(&mut events, out);
        out.note(
            "not_released",
            json!({ "token": guard.token() }),
            "processes of the command are still running after SIGKILL (stuck in the kernel?): the lease is not given back and expires by itself",
            true,
        );
        std::mem::forget(guard);
        return Ok(exit::LOST);
    }
    // The run's end, its outcome on record and, with --hold-at-least, the lease left to expire
    // at acquisition + DUR: one store operation.
    let released = guard.finish(outcome, args.hold_at_least).await;
    drain(&mut events, out);
    match released {
        Ok(Released::Released | Released::Kept { .. }) => Ok(code),
        // The lease was no longer ours when we gave it back: another holder may have started
        // while the command ran. The `lost` event said so.
        Ok(Released::NotHeld) => {
            metrics.lost = true;
            Ok(exit::LOST)
        }
        // The store that lost the lease is often one that cannot be reached: the failed release
        // was reported as an `error` event, and the exit code still says that the lease was lost.
        Err(_) if code == exit::LOST => Ok(code),
        Err(err) => Err(err),
    }
}

/// Where the command's cgroup will be made, as `--kill-mode` asks: checked before the lease is
/// taken, so that a run that cannot be contained as asked holds nothing meanwhile.
fn contain(mode: KillMode, out: &Output) -> Result<Option<CgroupPlace>, Error> {
    match mode {
        KillMode::Group => Ok(None),
        KillMode::Cgroup => CgroupPlace::find()
            .map(Some)
            .map_err(|reason| no_cgroup_here(&reason)),
        KillMode::Auto => match CgroupPlace::find() {
            Ok(place) => Ok(Some(place)),
            Err(reason) => {
                group_only(&reason, out);
                Ok(None)
            }
        },
    }
}

fn no_cgroup_here(reason: &str) -> Error {
    Error::InvalidOptions {
        reason: format!(
            "--kill-mode cgroup: {reason}; run as root or in a delegated cgroup subtree, or use --kill-mode auto"
        ),
    }
}

/// Says (with -v or --json) that the command is contained by its process group only.
fn group_only(reason: &str, out: &Output) {
    out.note(
        "containment",
        json!({ "kill_mode": "group", "reason": reason }),
        &format!(
            "cannot make a cgroup for the command ({reason}): it is contained by its process group only, so processes that leave the group (setsid, daemons) are not stopped with it"
        ),
        false,
    );
}

/// Opens the store. With `--wait`, a store that cannot be reached yet is tried again with
/// backoff until it answers, the wait times out, or a signal ends it; a bad URL or refused
/// credentials end it at once.
async fn connect(
    args: &RunArgs,
    url: &str,
    give_up: Option<BootInstant>,
    signals: &mut Signals,
    out: &Output,
) -> Result<Step<Arc<dyn Store>>, Error> {
    let until_give_up = || async move {
        match give_up {
            Some(at) => clock::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let mut pause = Duration::from_millis(100);
    let mut reported = false;
    loop {
        let err = tokio::select! {
            opened = super::open_store(url) => match opened {
                Ok(store) => return Ok(Step::Go(store)),
                Err(err) => err,
            },
            sig = signals.recv() => return Ok(Step::Exit(ended_waiting(sig, out))),
            () = until_give_up(), if args.wait => return Ok(Step::Exit(store_never_answered(args, out))),
        };
        if !args.wait || !matches!(err, Error::Store { .. } | Error::Timeout { .. }) {
            return Err(err);
        }
        if !reported {
            reported = true;
            out.note(
                "error",
                json!({ "error": err.to_string() }),
                &format!("{err}; still waiting, and trying again"),
                true,
            );
        }
        tokio::select! {
            () = tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64())) => {}
            sig = signals.recv() => return Ok(Step::Exit(ended_waiting(sig, out))),
            () = until_give_up() => return Ok(Step::Exit(store_never_answered(args, out))),
        }
        pause = (pause * 2).min(CONNECT_PAUSE_MAX);
    }
}

fn store_never_answered(args: &RunArgs, out: &Output) -> i32 {
    let waited = args.timeout.unwrap_or_default();
    out.note(
        "wait_timeout",
        json!({ "timeout_ms": waited.as_millis() as u64 }),
        &format!(
            "gave up waiting after {}: the store could not be reached",
            humantime::format_duration(waited)
        ),
        true,
    );
    exit::WAIT_TIMEOUT
}

/// A forwarded signal arrived before the command started.
fn ended_waiting(sig: Signal, out: &Output) -> i32 {
    out.note(
        "signal",
        json!({ "signal": sig.as_str() }),
        &format!(
            "received {} before the command started; exiting",
            sig.as_str()
        ),
        true,
    );
    128 + sig as i32
}

/// Runs the command under the lease; returns the exit code to give, the run's outcome for the
/// record, and whether every process of the command is gone (only then may the lease be given
/// back).
async fn supervise(
    args: &RunArgs,
    singleton: &Singleton,
    guard: &LeaseGuard,
    place: Option<&CgroupPlace>,
    signals: &mut Signals,
    events: &mut broadcast::Receiver<Event>,
    out: &Output,
) -> (i32, Outcome, bool) {
    // A stall between the acquire and now (a suspend, a stopped process) may have used the
    // lease up: then the command must not start at all.
    if guard.is_lost()
        || guard
            .safe_until()
            .is_some_and(|safe| safe <= BootInstant::now())
    {
        drain(events, out);
        out.note(
            "not_started",
            json!({ "token": guard.token() }),
            "the lease ran out before the command could start; it was not started",
            true,
        );
        return (exit::LOST, Outcome::Lost, true);
    }
    let cgroup = match place.map(CgroupPlace::create) {
        None => None,
        Some(Ok(cgroup)) => Some(cgroup),
        Some(Err(reason)) if args.kill_mode == KillMode::Cgroup => {
            out.error(&no_cgroup_here(&reason));
            return (exit::USAGE, Outcome::Exit(exit::USAGE), true);
        }
        Some(Err(reason)) => {
            group_only(&reason, out);
            None
        }
    };
    let mut deadlines = guard.safe_until_changes();
    // Armed before the command runs, so that no moment of it is unguarded.
    let watchdog = match Watchdog::start(cgroup.as_ref(), *deadlines.borrow_and_update()) {
        Ok(watchdog) => watchdog,
        Err(err) => {
            out.note(
                "watchdog_failed",
                json!({ "error": err.to_string() }),
                &format!("cannot start the watchdog ({err}); the command is not run without it"),
                true,
            );
            return (exit::INTERNAL, Outcome::Exit(exit::INTERNAL), true);
        }
    };
    let env = [
        ("SINGLETON_NAME", singleton.name().to_owned()),
        ("SINGLETON_TOKEN", guard.token().to_string()),
        ("SINGLETON_HOLDER", guard.holder().id),
    ];
    let terminal = process::owns_terminal();
    let (mut child, job) = match process::spawn(&args.command, &env, terminal, cgroup) {
        Ok(spawned) => spawned,
        Err(err) => {
            watchdog.stand_down();
            let program = args.command[0].to_string_lossy();
            out.note(
                "spawn_failed",
                json!({ "command": program, "error": err.to_string() }),
                &format!("cannot run {program:?}: {err}"),
                true,
            );
            let code = match err.kind() {
                std::io::ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_EXECUTE,
            };
            return (code, Outcome::Exit(code), true);
        }
    };
    watchdog.guard(job.group());
    let pid = job.group().as_raw();
    let cgroup = job.cgroup().map(|c| c.dir().display().to_string());
    out.note(
        "started",
        json!({ "pid": pid, "token": guard.token(), "cgroup": cgroup }),
        &format!(
            "started {:?} as pid {pid} (token {}, {})",
            label(args.label.as_deref(), &args.command),
            guard.token(),
            match &cgroup {
                Some(dir) => format!("in cgroup {dir}"),
                None => "in its process group".into(),
            }
        ),
        false,
    );

    // One loop for the command and for whatever it leaves behind: a lost lease stops both the
    // same way, and the lease is given back only once every process of the command is gone.
    let mut status = None;
    let mut lost = false;
    let mut kill_at: Option<BootInstant> = None;
    // Once SIGKILL went out: until when to wait for the processes to go.
    let mut killed: Option<Option<BootInstant>> = None;
    let mut all_gone = true;
    loop {
        tokio::select! {
            waited = child.wait(), if status.is_none() => {
                status = Some(waited);
                if terminal {
                    process::reclaim_terminal();
                }
                if job.is_gone() {
                    break;
                }
                if kill_at.is_none() && killed.is_none() {
                    // The lease must not outlive the command: whatever it left stops too.
                    out.note("terminating", json!({ "group": pid, "signal": "SIGTERM" }),
                        "the command left processes behind: sending them SIGTERM", true);
                    job.signal_all(Signal::SIGTERM);
                    kill_at = Some(after_grace(singleton.grace(), guard));
                }
            }
            sig = signals.recv() => {
                out.note("signal", json!({ "signal": sig.as_str(), "pid": pid }),
                    &format!("forwarding {} to the command", sig.as_str()), false);
                job.forward(sig);
            }
            _ = guard.lost(), if !lost => {
                lost = true;
                drain(events, out);
                if killed.is_none() {
                    let deadline = stop_deadline(singleton, guard);
                    let deadline = kill_at.map_or(deadline, |at| at.min(deadline));
                    kill_at = Some(deadline);
                    // Should this process stall from here on, the watchdog still kills in time.
                    watchdog.set_deadline(Some(deadline));
                    let kill_in = deadline.remaining();
                    out.note("terminating", json!({ "pid": pid, "signal": "SIGTERM", "kill_in_ms": kill_in.as_millis() as u64 }),
                        &format!("lease lost: sending SIGTERM to the command, SIGKILL in {}", humantime::format_duration(round_ms(kill_in))), true);
                    job.signal_all(Signal::SIGTERM);
                }
            }
            () = clock::sleep_until(kill_at.unwrap_or_else(BootInstant::now)), if kill_at.is_some() => {
                kill_at = None;
                let message = match status {
                    None => "the command did not stop in time: sending SIGKILL",
                    Some(_) => "processes the command left did not stop in time: sending SIGKILL",
                };
                out.note("killing", json!({ "pid": pid, "signal": "SIGKILL" }), message, true);
                job.kill_all();
                // Renewals may go on meanwhile, but the wait ends at the deadline as it is now.
                killed = Some(guard.safe_until());
            }
            () = tokio::time::sleep(GROUP_POLL), if status.is_some() => {
                if killed.is_some() {
                    // A process may have forked while the rest was killed.
                    job.kill_all();
                }
                if job.is_gone() {
                    break;
                }
                if killed.is_some_and(|until| until.is_some_and(|at| BootInstant::now() >= at)) {
                    all_gone = false;
                    break;
                }
            }
            Ok(()) = deadlines.changed(), if !lost => {
                watchdog.set_deadline(*deadlines.borrow_and_update());
            }
            Ok(event) = events.recv() => out.event(&event),
        }
    }
    if all_gone {
        watchdog.stand_down();
    }
    // Otherwise dropping the watchdog closes its pipe: it kills again, and removes the cgroup
    // once the stuck processes are gone.
    let (code, outcome) = match status {
        Some(Ok(status)) => exit_code_of(status),
        Some(Err(err)) => {
            out.note(
                "wait_failed",
                json!({ "error": err.to_string() }),
                &format!("lost track of the command: {err}"),
                true,
            );
            (exit::INTERNAL, Outcome::Exit(exit::INTERNAL))
        }
        None => (exit::INTERNAL, Outcome::Exit(exit::INTERNAL)),
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
            .is_some_and(|safe| safe <= BootInstant::now());
    if lost {
        (exit::LOST, Outcome::Lost, all_gone)
    } else {
        (code, outcome, all_gone)
    }
}

/// When what the command left gets SIGKILL: after the grace period, and never after the safe
/// deadline.
fn after_grace(grace: Duration, guard: &LeaseGuard) -> BootInstant {
    let now = BootInstant::now();
    let after_grace = now.checked_add(grace).unwrap_or(now);
    guard
        .safe_until()
        .map_or(after_grace, |safe| safe.min(after_grace))
        .max(now)
}

/// When the command of a lost lease gets SIGKILL: after the grace period if no renewal could be
/// confirmed, after at most [`GONE_GRACE`] if the store said the lease is gone, and never after
/// the safe deadline.
fn stop_deadline(singleton: &Singleton, guard: &LeaseGuard) -> BootInstant {
    let grace = match guard.loss() {
        Some(Loss::Gone) => singleton.grace().min(GONE_GRACE),
        _ => singleton.grace(),
    };
    after_grace(grace, guard)
}

fn round_ms(duration: Duration) -> Duration {
    Duration::from_millis(duration.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// The exit code to give for the command's status, and its outcome for the record.
fn exit_code_of(status: std::process::ExitStatus) -> (i32, Outcome) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, Outcome::Exit(code)),
        (None, Some(sig)) => (128 + sig, Outcome::Signal(sig)),
        (None, None) => (exit::INTERNAL, Outcome::Exit(exit::INTERNAL)),
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
