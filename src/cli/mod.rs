//! The `singleton` command-line tool: a thin layer over the library.

/// `println!` that ignores a closed stdout (`singleton status | head -1`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod bench;
mod docs;
mod doctor;
mod label;
mod metrics;
mod output;
mod process;
mod run;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use singleton_process::store::bounded;
use singleton_process::{Error, MAX_DURATION, MAX_REQUEST_TIMEOUT, Store};

use output::Output;

/// Exit codes of the tool's own outcomes. A wrapped command's own exit code passes through
/// unchanged, and a command killed by signal N gives 128+N.
pub mod exit {
    /// `exists`: no live lease; `release --force`: nothing was held.
    pub const NOT_HELD: i32 = 1;
    /// `doctor`: at least one check failed.
    pub const CHECK_FAILED: i32 = 1;
    /// Bad arguments or input: unknown flag, invalid name, duration or URL (like EX_USAGE).
    pub const USAGE: i32 = 64;
    /// The store could not be reached, refused us, or failed (like EX_UNAVAILABLE).
    pub const STORE: i32 = 69;
    /// Something unexpected inside the tool (like EX_SOFTWARE).
    pub const INTERNAL: i32 = 70;
    /// `run`: another holder has the lease (like EX_TEMPFAIL); change with `--conflict-exit`.
    pub const CONFLICT: i32 = 75;
    /// `run`: the lease was lost while the command ran; the command was terminated.
    pub const LOST: i32 = 76;
    /// `run --wait --timeout`: the lease did not come free in time (like timeout(1)).
    pub const WAIT_TIMEOUT: i32 = 124;
    /// `run`: the command was found but could not be executed.
    pub const CANNOT_EXECUTE: i32 = 126;
    /// `run`: the command was not found.
    pub const NOT_FOUND: i32 = 127;
}

#[derive(Debug, Parser)]
#[command(
    name = "singleton",
    version = docs::version(),
    about = "Run at most one copy of a named job at a time, across processes and hosts.",
    after_help = docs::EXAMPLES
)]
struct Cli {
    /// Where leases live: sqlite:///path.db, postgres://..., redis://..., etcd://..., mongodb://...
    /// [default: sqlite://$XDG_STATE_HOME/singleton/locks.db, else ~/.local/state/singleton/locks.db]
    // The value is not shown in --help: it may hold a password.
    #[arg(
        long,
        global = true,
        env = "SINGLETON_STORE",
        hide_env_values = true,
        value_name = "URL"
    )]
    store: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run COMMAND while holding the lease on NAME; exit 75 at once if somebody else holds it.
    #[command(after_help = docs::RUN_EXAMPLES)]
    Run(RunArgs),
    /// Show who holds NAME (holder, host, pid, since, expiry by the store's clock, token) and
    /// its last run (who, token, start, end, outcome), also when it is free.
    /// Exits 0 whether held or free (use `exists` to test), 69 if the store cannot tell.
    #[command(after_help = docs::STATUS_EXAMPLES)]
    Status {
        /// The singleton's name.
        name: String,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List the live leases.
    #[command(after_help = docs::LIST_EXAMPLES)]
    List {
        /// Also list the free names that have a last run, and show each name's last run.
        #[arg(long)]
        all: bool,
        /// Print a JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 if a live lease on NAME exists, 1 if not (69 if the store cannot tell). A lease
    /// kept after its run (`run --hold-at-least`) is live until it expires.
    #[command(after_help = docs::EXISTS_EXAMPLES)]
    Exists {
        /// The singleton's name.
        name: String,
    },
    /// Measure our acquire+release cycle against the store's raw write pair (see BENCHMARKS.md).
    #[command(after_help = docs::BENCH_EXAMPLES)]
    Bench {
        /// Cycles to measure (after 20 warm-up cycles).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        iterations: u32,
        /// Contenders hammering one name for the throughput measurement, each with its own
        /// connection.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
        contenders: u32,
        /// Instead, measure what N waiters on one held name cost the store while they wait
        /// (requests per second per waiter), and the hand-off of a release every second to one
        /// of them (latency, and the store requests of all waiters per hand-off; each holder
        /// waits again half a second after its release, so N others wait at every release).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
        waiters: Option<u32>,
        /// Instead, measure the cycle and `list` with N other live leases in the store (taken
        /// by the benchmark before and given back after; the SQL stores and MongoDB keep their
        /// free rows, so use a scratch table).
        #[arg(long, value_name = "N", conflicts_with = "waiters", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        names: Option<u32>,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Check the store's own settings (durability, eviction, replication, versions with known
    /// lease bugs, the file system under SQLite, clock offset, round trip): one line per check,
    /// ok, warn or fail, with what was found, why it matters and the fix. Reads only (the lease
    /// table is created if missing, as every subcommand does). Exits 0 when no check fails, 1
    /// when one does, 69 if the store cannot be reached.
    #[command(after_help = docs::DOCTOR_EXAMPLES)]
    Doctor {
        /// Print one JSON object on stdout: the store, the overall status and the checks.
        #[arg(long)]
        json: bool,
    },
    /// Operator override: free NAME whoever holds it (logged). The holder's supervisor notices at
    /// its next renewal and stops its command.
    #[command(after_help = docs::RELEASE_EXAMPLES)]
    Release {
        /// The singleton's name.
        name: String,
        /// Required: confirms that you mean to take the lease from its holder.
        #[arg(long)]
        force: bool,
    },
    /// Print the shell completion script for SHELL on stdout.
    #[command(after_help = docs::COMPLETIONS_EXAMPLES)]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page singleton(1) on stdout, or write every page into a directory.
    #[command(after_help = docs::MAN_EXAMPLES)]
    Man {
        /// Write singleton.1 and a page for each command (singleton-run.1, ...) into DIR
        /// instead, which must exist.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The singleton's name [default: the command's file name].
    #[arg(long)]
    name: Option<String>,

    /// Lease length; renewed every third of it.
    #[arg(long, value_name = "DUR", default_value = "15s", value_parser = parse_duration)]
    ttl: Duration,

    /// Do not renew: the lease runs out after --ttl, and the command is then stopped as if the
    /// lease were lost.
    #[arg(long)]
    no_renew: bool,

    /// Keep the lease at least this long from its acquisition (by the store's clock), however
    /// soon the command ends: a run that ends sooner leaves the lease in the store to expire
    /// then, and exits at once with the command's code. For cron lines on many hosts: set it
    /// slightly below the cron period, so that one tick runs once however far apart the hosts
    /// fire (see the README).
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse_duration)]
    hold_at_least: Duration,

    /// Wait for the lease instead of exiting with the conflict code.
    #[arg(long)]
    wait: bool,

    /// With --wait: give up after this long and exit 124.
    #[arg(long, value_name = "DUR", requires = "wait", value_parser = parse_duration)]
    timeout: Option<Duration>,

    /// When the lease is lost: time between SIGTERM and SIGKILL to the command [default: ttl/5].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    grace: Option<Duration>,

    /// Shown as the holder's label by `status`, `list` and conflict messages, on every host,
    /// instead of the command line (which is shown with its secrets masked).
    #[arg(long, value_name = "TEXT")]
    label: Option<String>,

    /// Exit code when another holder has the lease. With 0 the conflict is expected, and it is
    /// reported only with -v or --json (cron mails whatever a job prints).
    #[arg(long, value_name = "CODE", default_value_t = exit::CONFLICT as u8)]
    conflict_exit: u8,

    /// How the command's processes are kept together and stopped: `cgroup` (a cgroup v2 of its
    /// own: processes that leave the process group, like daemons, are stopped too; needs root or
    /// a delegated cgroup subtree), `group` (its process group only), or `auto` (a cgroup where
    /// one can be made, else the group; -v says which).
    #[arg(long, value_name = "MODE", value_enum, default_value_t = process::KillMode::Auto)]
    kill_mode: process::KillMode,

    /// Print every event as one JSON object per line on stderr.
    #[arg(long)]
    json: bool,

    /// Print every event, not only conflicts, waits, losses and errors.
    #[arg(long, short)]
    verbose: bool,

    /// Write the run's outcome to PATH in Prometheus' text format, for node_exporter's textfile
    /// collector: start, end, duration, exit code, whether the lease was acquired, met another
    /// holder or was lost, labelled with name and host. Replaced atomically at every exit of the
    /// run; a file that cannot be written then is a warning and leaves the exit code alone, but
    /// a directory that does not exist or cannot be written is a usage error (64) at start.
    #[arg(long, value_name = "PATH")]
    metrics_file: Option<PathBuf>,

    /// The command and its arguments, run directly (no shell). Options before it are
    /// singleton's, and everything from it on is the command's; put `--` before a command
    /// whose name starts with `-`.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 500ms, 15s, 5m)"))?;
    if duration > MAX_DURATION {
        return Err("longer than a year".into());
    }
    Ok(duration)
}

/// clap's usage error as one line: its message with the lines that complete it (the missing
/// arguments, the tips such as "a similar argument exists"), without the usage and help hints.
fn usage_error_line(rendered: &str) -> String {
    let mut line = String::new();
    for part in rendered
        .lines()
        .map(str::trim)
        .take_while(|part| !part.starts_with("Usage:") && !part.starts_with("For more information"))
        .filter(|part| !part.is_empty())
    {
        if !line.is_empty() {
            line.push_str(if line.ends_with(':') { " " } else { "; " });
        }
        line.push_str(part);
    }
    match line.strip_prefix("error: ") {
        Some(message) => message.to_owned(),
        None if line.is_empty() => "invalid arguments".to_owned(),
        None => line,
    }
}

/// Parses the arguments, runs, and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version
            let _ = err.print();
            return 0;
        }
        Err(err) => {
            eprintln!(
                "singleton: {} (see --help)",
                usage_error_line(&err.render().to_string())
            );
            return exit::USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("singleton: cannot start: {err}");
            return exit::INTERNAL;
        }
    };
    let code = runtime.block_on(dispatch(cli));
    // Do not wait for blocking-pool threads (e.g. an SQLite call stuck on a dead file system).
    runtime.shutdown_background();
    code
}

async fn dispatch(cli: Cli) -> i32 {
    let json = match &cli.command {
        Command::Run(args) => args.json,
        Command::Status { json, .. }
        | Command::List { json, .. }
        | Command::Bench { json, .. }
        | Command::Doctor { json } => *json,
        _ => false,
    };
    let verbose = matches!(&cli.command, Command::Run(args) if args.verbose);
    let expected_conflicts =
        matches!(&cli.command, Command::Run(args) if args.conflict_exit == 0 && !args.wait);
    let out = Output::new(json, verbose).quiet_conflicts(expected_conflicts);
    match execute(cli, &out).await {
        Ok(code) => code,
        Err(err) => {
            out.error(&err);
            exit_code(&err)
        }
    }
}

async fn execute(cli: Cli, out: &Output) -> Result<i32, Error> {
    // What the tool says about itself needs no store.
    match &cli.command {
        Command::Completions { shell } => return Ok(docs::completions(*shell)),
        Command::Man { dir } => return docs::man(dir.as_deref()).map(|()| 0),
        _ => {}
    }
    let url = match cli.store {
        Some(url) => url,
        None => default_store_url()?,
    };
    if let Command::Run(args) = cli.command {
        return run::run(args, &url, out).await;
    }
    if let Command::Doctor { json } = cli.command {
        return doctor::run(&url, json).await;
    }
    let store = open_store(&url).await?;
    match cli.command {
        Command::Run(_)
        | Command::Doctor { .. }
        | Command::Completions { .. }
        | Command::Man { .. } => unreachable!("handled above"),
        Command::Status { name, json: _ } => {
            singleton_process::store::validate_name(&name)?;
            let lease = read(&*store, "inspect", || store.inspect(&name)).await?;
            let last_run = read(&*store, "last run", || store.last_run(&name)).await?;
            out.status(&name, lease.as_ref(), last_run.as_ref());
            Ok(0)
        }
        Command::List { all: false, .. } => {
            out.list(&read(&*store, "list", || store.list()).await?);
            Ok(0)
        }
        Command::List { all: true, .. } => {
            let leases = read(&*store, "list", || store.list()).await?;
            let runs = read(&*store, "last runs", || store.last_runs()).await?;
            out.list_all(&leases, &runs);
            Ok(0)
        }
        Command::Bench {
            names: Some(names),
            iterations,
            json,
            ..
        } => {
            let name = format!("singleton-bench-{}-names", std::process::id());
            let report =
                bench::names::run(&store, &name, names as usize, iterations as usize).await?;
            bench::show(&*store, json, report.json(), || report.print());
            Ok(0)
        }
        Command::Bench {
            waiters: Some(waiters),
            json,
            ..
        } => {
            let plan = bench::waiters::Plan {
                waiters: waiters as usize,
                settle: Duration::from_secs(2),
                idle: Duration::from_secs(10),
                handoffs: 10,
                hold: Duration::from_secs(1),
            };
            let name = format!("singleton-bench-{}-waiters", std::process::id());
            let report = bench::waiters::run(&url, &name, plan).await?;
            bench::show(&*store, json, report.json(), || report.print());
            Ok(0)
        }
        Command::Bench {
            iterations,
            contenders,
            json,
            waiters: None,
            names: None,
        } => {
            let plan = bench::Plan {
                iterations: iterations as usize,
                contenders: contenders as usize,
                hammer_for: Duration::from_secs(2),
                handoffs: (iterations as usize / 10).clamp(10, 100),
            };
            let report = bench::run(&url, store, plan).await?;
            report.print(json);
            if report.exclusive() {
                Ok(0)
            } else {
                out.note(
                    "violation",
                    serde_json::json!({}),
                    "two contenders held the lease at once",
                    true,
                );
                Ok(exit::INTERNAL)
            }
        }
        Command::Exists { name } => {
            singleton_process::store::validate_name(&name)?;
            Ok(
                match read(&*store, "inspect", || store.inspect(&name)).await? {
                    Some(_) => 0,
                    None => exit::NOT_HELD,
                },
            )
        }
        Command::Release { name, force } => {
            singleton_process::store::validate_name(&name)?;
            if !force {
                return Err(Error::InvalidOptions {
                    reason: format!(
                        "`release` takes the lease from its holder; add --force to release {name:?}"
                    ),
                });
            }
            let removed = bounded(
                &*store,
                "force-release",
                MAX_REQUEST_TIMEOUT,
                store.force_release(&name),
            )
            .await?;
            out.force_released(&name, removed.as_ref());
            Ok(if removed.is_some() { 0 } else { exit::NOT_HELD })
        }
    }
}

/// A read of the store, bounded and tried once more if it times out (the store then uses a
/// fresh connection).
async fn read<T, F: Future<Output = Result<T, Error>>>(
    store: &dyn Store,
    operation: &'static str,
    request: impl Fn() -> F,
) -> Result<T, Error> {
    match bounded(store, operation, MAX_REQUEST_TIMEOUT, request()).await {
        Err(Error::Timeout { .. }) => {
            bounded(store, operation, MAX_REQUEST_TIMEOUT, request()).await
        }
        done => done,
    }
}

async fn open_store(url: &str) -> Result<Arc<dyn Store>, Error> {
    refuse_memory(url)?;
    singleton_process::connect(url).await
}

/// The in-process `memory:` store is no store for a tool whose every run is a process of its
/// own.
fn refuse_memory(url: &str) -> Result<(), Error> {
    if url.trim().to_ascii_lowercase().starts_with("memory:") {
        return Err(Error::InvalidUrl {
            url: singleton_process::store::mask_password(url),
            reason: "the in-process memory: store cannot keep separate processes apart; use sqlite:// or a network store".into(),
        });
    }
    Ok(())
}

/// `sqlite://` of the per-user state directory, which is created if missing.
fn default_store_url() -> Result<String, Error> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .ok_or_else(|| Error::InvalidOptions {
            reason: "neither XDG_STATE_HOME nor HOME is set; pass --store or set SINGLETON_STORE"
                .into(),
        })?;
    let dir = state.join("singleton");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::store(format!("sqlite://{}", dir.display()), "create directory", e))?;
    Ok(format!("sqlite://{}", dir.join("locks.db").display()))
}

/// The documented exit code for a library error.
fn exit_code(err: &Error) -> i32 {
    match err {
        Error::InvalidName { .. }
        | Error::InvalidUrl { .. }
        | Error::FeatureDisabled { .. }
        | Error::InvalidOptions { .. } => exit::USAGE,
        Error::Lost { .. } => exit::LOST,
        Error::Store { .. } | Error::Refused { .. } | Error::Timeout { .. } => exit::STORE,
        _ => exit::INTERNAL,
    }
}

#[cfg(test)]
mod tests {
    use super::usage_error_line;

    #[test]
    fn usage_errors_keep_their_tips_on_one_line() {
        let rendered = "error: unexpected argument '--nmae' found\n\n  tip: a similar argument exists: '--name'\n\nUsage: singleton run --name <NAME> <COMMAND>...\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_error_line(rendered),
            "unexpected argument '--nmae' found; tip: a similar argument exists: '--name'"
        );
        let rendered = "error: the following required arguments were not provided:\n  <COMMAND>...\n\nUsage: singleton run <COMMAND>...\n";
        assert_eq!(
            usage_error_line(rendered),
            "the following required arguments were not provided: <COMMAND>..."
        );
        assert_eq!(usage_error_line(""), "invalid arguments");
    }
}
