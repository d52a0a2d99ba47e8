//! Operators' tools: `--version`, the examples in every command's `--help`, shell completions,
//! man pages, and `run --metrics-file`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use crate::support::{SqliteStore, Test, held, unique};

/// The tool's commands, as `singleton --help` lists them (without `help`).
fn commands() -> Vec<String> {
    let help = Test::new().arg_str("--help").status(0).stdout;
    let listed: Vec<String> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        // A command's line, not the continuation of a long description.
        .filter(|line| !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|command| *command != "help")
        .map(str::to_owned)
        .collect();
    assert!(listed.contains(&"run".to_owned()), "{help}");
    listed
}

#[test]
fn every_command_shows_examples_in_its_help() {
    let top = Test::new().arg_str("--help").status(0).stdout;
    assert!(top.contains("\nExamples:\n"), "{top}");
    for command in commands() {
        for flag in ["-h", "--help"] {
            let help = Test::new().args([&command, flag]).status(0).stdout;
            assert!(
                help.contains("\nExamples:\n"),
                "`singleton {command} {flag}` has no examples:\n{help}"
            );
            assert!(
                help.contains(&format!("singleton {command} ")),
                "`singleton {command} {flag}`'s examples do not use it:\n{help}"
            );
        }
    }
    let run = Test::new().args(["run", "--help"]).status(0).stdout;
    for shown in ["*/5 * * * *", "ExecStart=", "--wait --timeout", "--json"] {
        assert!(run.contains(shown), "run --help lacks {shown:?}:\n{run}");
    }
    let status = Test::new().args(["status", "--help"]).status(0).stdout;
    assert!(status.contains("status nightly --json | jq"), "{status}");
}

#[test]
fn version_names_the_stores_compiled_in() {
    let stores: Vec<&str> = [
        ("sqlite", cfg!(feature = "sqlite")),
        ("postgres", cfg!(feature = "postgres")),
        ("mysql", cfg!(feature = "mysql")),
        ("redis", cfg!(feature = "redis")),
        ("mongodb", cfg!(feature = "mongodb")),
        ("etcd", cfg!(feature = "etcd")),
    ]
    .into_iter()
    .filter_map(|(store, enabled)| enabled.then_some(store))
    .collect();
    let expected = format!(
        "singleton {} (stores: {})\n",
        env!("CARGO_PKG_VERSION"),
        stores.join(", ")
    );
    for flag in ["--version", "-V"] {
        assert_eq!(Test::new().arg_str(flag).status(0).stdout, expected);
    }
}

#[test]
fn completions_cover_every_command_for_every_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let done = Test::new().args(["completions", shell]).status(0);
        for command in commands() {
            assert!(
                done.stdout.contains(&command),
                "{shell}'s completions lack {command:?}"
            );
        }
        assert!(done.stdout.contains("hold-at-least"), "{shell}");
        if shell == "bash" {
            let script = dir.path().join("singleton.bash");
            std::fs::write(&script, &done.stdout).unwrap();
            let syntax = std::process::Command::new("bash")
                .arg("-n")
                .arg(&script)
                .output()
                .unwrap();
            assert!(
                syntax.status.success(),
                "{}",
                String::from_utf8_lossy(&syntax.stderr)
            );
        }
    }
    let done = Test::new().args(["completions", "tcsh"]).status(64);
    assert!(done.one_line().contains("tcsh"), "{}", done.stderr);
}

#[test]
fn man_prints_the_page_and_writes_one_per_command() {
    let page = Test::new().arg_str("man").status(0).stdout;
    assert!(page.contains("\n.TH singleton 1 "), "{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(section), "no {section}:\n{page}");
    }
    assert!(page.contains("singleton\\-run(1)"), "{page}");
    assert!(page.contains("\n.SH EXAMPLES\n"), "{page}");
    assert!(page.contains("\n.SH \"EXIT STATUS\"\n"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    Test::new()
        .args(["man", "--dir"])
        .arg_str(dir.path().to_str().unwrap())
        .status(0);
    assert!(dir.path().join("singleton.1").is_file());
    for command in commands() {
        let file = dir.path().join(format!("singleton-{command}.1"));
        let page =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            page.contains("\n.SH EXAMPLES\n"),
            "{}:\n{page}",
            file.display()
        );
    }
    assert!(!dir.path().join("singleton-help.1").exists());

    let missing = dir.path().join("missing");
    let done = Test::new()
        .args(["man", "--dir"])
        .arg_str(missing.to_str().unwrap())
        .status(64);
    assert!(
        done.one_line().contains("no such directory"),
        "{}",
        done.stderr
    );
}

/// One sample of a metrics file: its labels and value.
#[derive(Debug)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Reads a metrics file in Prometheus' text format: every sample by metric name. Asserts that
/// each metric has its `# HELP` and `# TYPE` lines before its sample, and appears once.
fn read_metrics(path: &Path) -> BTreeMap<String, Sample> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut samples = BTreeMap::new();
    let mut described = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (kind, metric) = (words.next().unwrap(), words.next().unwrap());
            described.push(format!("{kind} {metric}"));
            if kind == "TYPE" {
                assert_eq!(words.next(), Some("gauge"), "{line}");
            }
            continue;
        }
        let (metric, rest) = line.split_once('{').unwrap_or_else(|| panic!("{line}"));
        let (labels, value) = parse_labels(rest);
        let value: f64 = value
            .strip_prefix(' ')
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no value: {line}"));
        for kind in ["HELP", "TYPE"] {
            assert!(
                described.contains(&format!("{kind} {metric}")),
                "{metric} has no # {kind} before it:\n{text}"
            );
        }
        let again = samples.insert(metric.to_owned(), Sample { labels, value });
        assert!(again.is_none(), "{metric} twice:\n{text}");
    }
    samples
}

/// `key="value",...}` with the text format's escapes; returns the labels and what follows `}`.
fn parse_labels(text: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (key, after) = rest.split_once("=\"").expect("a label");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("a closing quote") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("an escape").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
}

fn host() -> String {
    nix::unistd::gethostname().unwrap().into_string().unwrap()
}

/// Seconds since the Unix epoch, as a metrics file writes them (to the millisecond).
fn unix_seconds(at: SystemTime) -> f64 {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    (since.as_millis() as f64) / 1000.0
}

/// Asserts the outcome a metrics file reports, and that its times lie within `[before, after]`.
fn assert_outcome(
    metrics: &BTreeMap<String, Sample>,
    name: &str,
    (acquired, conflict, lost, exit_code): (f64, f64, f64, f64),
    (before, after): (SystemTime, SystemTime),
) {
    let value = |metric: &str| {
        let sample = metrics
            .get(metric)
            .unwrap_or_else(|| panic!("no {metric}: {metrics:?}"));
        assert_eq!(sample.labels["name"], name, "{metric}");
        assert_eq!(sample.labels["host"], host(), "{metric}");
        assert_eq!(sample.labels.len(), 2, "{metric}: {:?}", sample.labels);
        sample.value
    };
    assert_eq!(value("singleton_last_acquired"), acquired, "{metrics:?}");
    assert_eq!(value("singleton_last_conflict"), conflict, "{metrics:?}");
    assert_eq!(value("singleton_last_lost"), lost, "{metrics:?}");
    assert_eq!(value("singleton_last_exit_code"), exit_code, "{metrics:?}");
    let start = value("singleton_last_start_timestamp_seconds");
    let end = value("singleton_last_end_timestamp_seconds");
    assert!(unix_seconds(before) <= start, "{metrics:?}");
    assert!(start <= end, "{metrics:?}");
    assert!(end <= unix_seconds(after), "{metrics:?}");
    assert!(
        value("singleton_last_duration_seconds") >= 0.0,
        "{metrics:?}"
    );
}

/// `singleton run --name NAME --metrics-file FILE ARGS...` on `store`, expecting `code`;
/// returns the file's metrics and the times around the run.
fn run_with_metrics(
    store: &SqliteStore,
    name: &str,
    file: &Path,
    args: &[&str],
    code: i32,
) -> (BTreeMap<String, Sample>, (SystemTime, SystemTime)) {
    let before = SystemTime::now();
    Test::new()
        .store(&store.url)
        .args(["run", "--name", name, "--metrics-file"])
        .arg_str(file.to_str().unwrap())
        .args(args)
        .status(code);
    (read_metrics(file), (before, SystemTime::now()))
}

#[test]
fn metrics_file_reports_a_run_a_failed_run_and_a_lost_lease() {
    let store = SqliteStore::new();
    let file = store.path("job.prom");
    let name = unique("metrics");
    let (metrics, around) = run_with_metrics(&store, &name, &file, &["--", "true"], 0);
    assert_outcome(&metrics, &name, (1.0, 0.0, 0.0, 0.0), around);

    let (metrics, around) =
        run_with_metrics(&store, &name, &file, &["--", "sh", "-c", "exit 3"], 3);
    assert_outcome(&metrics, &name, (1.0, 0.0, 0.0, 3.0), around);

    // Without renewal the lease runs out, which is handled as a lost lease.
    let args = ["--ttl", "1s", "--no-renew", "--", "sleep", "5"];
    let (metrics, around) = run_with_metrics(&store, &name, &file, &args, 76);
    assert_outcome(&metrics, &name, (1.0, 0.0, 1.0, 76.0), around);

    let left: Vec<_> = std::fs::read_dir(store.dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|file| !file.starts_with("locks.db"))
        .collect();
    assert_eq!(left, ["job.prom"], "no temporary files are left behind");
}

#[test]
fn metrics_file_reports_a_conflict_and_a_wait_that_timed_out() {
    let store = SqliteStore::new();
    let name = unique("metrics-conflict");
    let mut holder = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--", "sleep", "10"])
        .spawn();
    holder.wait_held(&store.url, &name);

    let file = store.path("conflict.prom");
    let (metrics, around) = run_with_metrics(&store, &name, &file, &["--", "true"], 75);
    assert_outcome(&metrics, &name, (0.0, 1.0, 0.0, 75.0), around);

    // An expected conflict is quiet and exits 0, and its file still says what happened.
    let args = ["--conflict-exit", "0", "--", "true"];
    let (metrics, around) = run_with_metrics(&store, &name, &file, &args, 0);
    assert_outcome(&metrics, &name, (0.0, 1.0, 0.0, 0.0), around);

    let args = ["--wait", "--timeout", "300ms", "--", "true"];
    let (metrics, around) = run_with_metrics(&store, &name, &file, &args, 124);
    assert_outcome(&metrics, &name, (0.0, 1.0, 0.0, 124.0), around);
    assert!(metrics["singleton_last_duration_seconds"].value >= 0.3);
}

#[test]
fn metrics_labels_are_escaped() {
    let store = SqliteStore::new();
    let file = store.path("odd.prom");
    let name = format!("{} \"quoted\" back\\slash", unique("odd"));
    let (metrics, around) = run_with_metrics(&store, &name, &file, &["--", "true"], 0);
    assert_outcome(&metrics, &name, (1.0, 0.0, 0.0, 0.0), around);
}

#[test]
fn a_metrics_file_that_cannot_be_written_at_start_is_a_usage_error_and_nothing_runs() {
    let store = SqliteStore::new();
    let name = unique("metrics-bad");
    let ran = store.path("ran");
    let touch = format!("touch {}", ran.display());
    for path in [
        store.path("missing/job.prom"),
        // A directory where the file should be.
        store.dir.path().to_owned(),
    ] {
        let done = Test::new()
            .store(&store.url)
            .args(["run", "--name", &name, "--metrics-file"])
            .arg_str(path.to_str().unwrap())
            .args(["--", "sh", "-c", &touch])
            .status(64);
        assert!(
            done.one_line().contains("--metrics-file"),
            "{}",
            done.stderr
        );
        assert!(!ran.exists(), "the command must not run");
        assert!(!held(&store.url, &name));
    }
}

#[test]
fn a_metrics_file_that_cannot_be_written_at_the_end_is_a_warning_and_keeps_the_exit_code() {
    let store = SqliteStore::new();
    let dir = store.path("metrics");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("job.prom");
    // The job takes the directory away (as root, taking away write permission would not do).
    let done = Test::new()
        .store(&store.url)
        .args(["run", "--name", &unique("metrics-gone"), "--metrics-file"])
        .arg_str(file.to_str().unwrap())
        .args(["--", "sh", "-c"])
        .arg_str(&format!("rm -r {}; exit 3", dir.display()))
        .status(3);
    let line = done.one_line();
    assert!(line.contains("cannot write the metrics file"), "{line}");
    assert!(line.contains("job.prom"), "{line}");
}
