//! What the tool says about itself: `--version` with the stores compiled in, the examples at the
//! end of each command's `--help` (and of its man page), shell completions and man pages, all
//! made from the one clap definition so that they cannot drift apart.

use std::io::Write as _;
use std::path::Path;
use std::sync::OnceLock;

use clap::CommandFactory as _;
use clap_complete::Shell;
use singleton_process::Error;

use super::Cli;

/// `singleton --version`: `singleton 0.1.0 (stores: sqlite, postgres, ...)`, the stores being the
/// cargo features this binary was built with.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let stores = match singleton_process::store::ENABLED {
            [] => "none".to_owned(),
            stores => stores.join(", "),
        };
        format!("{} (stores: {stores})", env!("CARGO_PKG_VERSION"))
    })
}

/// `singleton completions SHELL`. Written whole, ignoring a closed stdout like `say!`.
pub fn completions(shell: Shell) -> i32 {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "singleton", &mut script);
    let _ = std::io::stdout().lock().write_all(&script);
    0
}

/// `singleton man`: singleton(1) on stdout, or with `--dir` it and a page per command
/// (singleton-run(1), ...) written into DIR.
pub fn man(dir: Option<&Path>) -> Result<(), Error> {
    // `help` is a command of the tool, but not one with a page of its own.
    let mut top = Cli::command().disable_help_subcommand(true);
    top.build();
    let Some(dir) = dir else {
        let (_, page) = man_page(top).map_err(|e| cannot_write("the man page", &e))?;
        let _ = std::io::stdout().lock().write_all(&page);
        return Ok(());
    };
    if !dir.is_dir() {
        return Err(Error::InvalidOptions {
            reason: format!("man --dir {}: no such directory", dir.display()),
        });
    }
    let commands: Vec<clap::Command> = top.get_subcommands().cloned().collect();
    for command in std::iter::once(top).chain(commands) {
        let (file, page) = man_page(command).map_err(|e| cannot_write("a man page", &e))?;
        let path = dir.join(file);
        std::fs::write(&path, page).map_err(|e| cannot_write(&path.display().to_string(), &e))?;
    }
    Ok(())
}

/// A command's man page and its file name: clap_mangen's sections, then the examples of its
/// `--help` kept line for line (clap_mangen would fill them into paragraphs), and the exit
/// codes where the help has them.
fn man_page(command: clap::Command) -> std::io::Result<(String, Vec<u8>)> {
    // Every page's footer names the tool and its version, not only the command.
    let man = clap_mangen::Man::new(command.clone()).source(format!("singleton {}", version()));
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    if command.has_subcommands() {
        man.render_subcommands_section(&mut page)?;
    }
    if let Some(after_help) = command.get_after_help() {
        let after_help = after_help.to_string();
        let (examples, exit_codes) = match after_help.split_once("\n\nExit codes: ") {
            Some((examples, exit_codes)) => (examples, Some(exit_codes)),
            None => (after_help.as_str(), None),
        };
        let mut roff = roff::Roff::new();
        roff.control("SH", ["EXAMPLES"]).control("nf", []);
        for line in examples.lines().skip_while(|line| *line == "Examples:") {
            roff.text([roff::roman(line)]);
        }
        roff.control("fi", []);
        if let Some(exit_codes) = exit_codes {
            roff.control("SH", ["EXIT STATUS"]);
            let mut exit_codes = exit_codes.replace('\n', " ");
            if let Some(first) = exit_codes.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            roff.text([roff::roman(exit_codes)]);
        }
        roff.to_writer(&mut page)?;
    }
    if command.get_version().is_some() {
        man.render_version_section(&mut page)?;
    }
    Ok((man.get_filename(), page))
}

fn cannot_write(what: &str, err: &std::io::Error) -> Error {
    Error::InvalidOptions {
        reason: format!("cannot write {what}: {err}"),
    }
}

// The examples. Each command's `after_help`, shown by `-h`, `--help` and its man page.

pub const EXAMPLES: &str = "\
Examples:
  # Run a job at most once at a time on every host that shares the store
  singleton run --store postgres://locks@db/ops --name nightly -- ./nightly.sh
  # Who holds it now, and how did its last run end?
  singleton status nightly
  singleton status nightly --json | jq -r .last_run.outcome
  # Help on one command, with its own examples
  singleton run --help

Exit codes: the command's own code, or 128+N if it died of signal N; 64 usage, 69 store error,
70 internal error, 75 conflict, 76 lease lost, 124 wait timed out, 126 cannot execute,
127 command not found.";

pub const RUN_EXAMPLES: &str = "\
Examples:
  # cron, the same line on every host: the job runs once per tick on one of them, and the
  # others exit 0 quietly (cron mails whatever a job prints)
  */5 * * * * singleton run --name sync --hold-at-least 4m30s --conflict-exit 0 -- /opt/sync/run.sh

  # systemd, the same unit on every host: one worker runs, the others wait for the lease
  ExecStart=/usr/bin/singleton run --name worker --wait -- /opt/worker/bin/worker

  # Wait up to 10 minutes for the holder to finish; exit 124 if it does not
  singleton run --name deploy --wait --timeout 10m -- ./deploy.sh

  # Every event as one JSON object per line on stderr (stdout stays the job's)
  singleton run --name nightly --json -- ./nightly.sh 2>>/var/log/nightly.jsonl

  # The outcome for node_exporter's textfile collector
  singleton run --name nightly \\
      --metrics-file /var/lib/prometheus/node-exporter/singleton-nightly.prom -- ./nightly.sh

  # Options after the command are the command's own: -v goes to grep
  singleton run --name scan -- grep -v skip /var/log/app.log";

pub const STATUS_EXAMPLES: &str = "\
Examples:
  singleton status nightly
  # How the last run ended (exit 0, exit 3, signal 9, lost, unknown), for scripts
  singleton status nightly --json | jq -r .last_run.outcome
  # The host that holds it, or \"free\"
  singleton status nightly --json | jq -r '.lease.holder.host // \"free\"'";

pub const LIST_EXAMPLES: &str = "\
Examples:
  singleton list
  # Also the free names, with each one's last run
  singleton list --all
  # Name and host of every holder
  singleton list --json | jq -r '.[] | \"\\(.name) \\(.holder.host)\"'";

pub const EXISTS_EXAMPLES: &str = "\
Examples:
  if singleton exists nightly; then echo 'nightly is running somewhere'; fi
  # 69 means the store could not tell: never read that as free
  singleton exists nightly; case $? in 0) echo held;; 1) echo free;; *) echo 'store error';; esac";

pub const RELEASE_EXAMPLES: &str = "\
Examples:
  # The holder's host is gone for good and the lease should not wait to expire
  singleton status nightly
  singleton release nightly --force";

pub const BENCH_EXAMPLES: &str = "\
Examples:
  singleton bench --store postgres://locks@db/ops
  singleton bench --store redis://cache:6379 --iterations 2000 --json | jq .
  # What 100 standby workers cost the store while they wait, and the hand-off to one
  singleton bench --store redis://cache:6379 --waiters 100
  # The cycle and list with 10000 other live leases (use a scratch table)
  singleton bench --store 'postgres://locks@db/ops?table=bench_leases' --names 10000";

pub const DOCTOR_EXAMPLES: &str = "\
Examples:
  # Is this store set up so that the promise holds? Exit 1 if a check fails
  singleton doctor --store postgres://locks@db/ops
  # Only the findings that need attention
  singleton doctor --store redis://cache:6379 --json | jq -r '.checks[] | select(.status != \"ok\") | .name'
  # The embedded default store of this user
  singleton doctor";

pub const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  # bash (needs the bash-completion package)
  singleton completions bash > ~/.local/share/bash-completion/completions/singleton
  # zsh: a directory in $fpath, e.g. with fpath=(~/.zfunc $fpath) before compinit in ~/.zshrc
  singleton completions zsh > ~/.zfunc/_singleton
  # fish
  singleton completions fish > ~/.config/fish/completions/singleton.fish";

pub const MAN_EXAMPLES: &str = "\
Examples:
  singleton man | man -l -
  # Every page: singleton(1), singleton-run(1), singleton-status(1), ...
  mkdir -p ~/.local/share/man/man1 && singleton man --dir ~/.local/share/man/man1";
