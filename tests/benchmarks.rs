//! The benchmark runner behind `scripts/bench`: starts every test server, runs `singleton bench`
//! against each store (and redlock on the same Redis), times `singleton run -- true` next to
//! `flock -n` with hyperfine, reads the supervisor's peak memory, and regenerates BENCHMARKS.md
//! and docs/benchmarks.svg.
//!
//! It is `#[ignore]`d so that the test suite never depends on speed; `scripts/bench` runs it in
//! a release build. Its only assertion is that every contended acquisition was exclusive.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{SqliteStore, Test, bin};

/// One store's `singleton bench --json` report.
struct Measured {
    label: &'static str,
    report: Value,
}

impl Measured {
    fn us(&self, what: &str, quantile: &str) -> f64 {
        self.report[what][quantile].as_f64().unwrap_or(f64::NAN)
    }
}

const ITERATIONS: &str = "500";

#[test]
#[ignore = "a benchmark, run by scripts/bench in a release build"]
fn regenerate_benchmarks_md() {
    let sqlite = SqliteStore::new();
    // The command-line numbers first, before any server runs beside them.
    let overhead = run_vs_flock(&sqlite);
    let rss_kb = supervisor_peak_rss_kb(&sqlite.url);
    let mut stores: Vec<(&'static str, String)> =
        vec![("SQLite (WAL, acquire fsynced)", sqlite.url.clone())];
    #[cfg(feature = "postgres")]
    stores.push((
        "PostgreSQL 15",
        crate::support::postgres_server::shared().url(),
    ));
    #[cfg(feature = "mysql")]
    stores.push((
        "MariaDB 10.11",
        crate::support::mariadb_server::shared().url(),
    ));
    #[cfg(feature = "mongodb")]
    stores.push((
        "SecantusDB (MongoDB wire)",
        crate::support::mongodb_server::shared().url.clone(),
    ));
    #[cfg(feature = "redis")]
    stores.push((
        "Redis 7",
        crate::support::redis_server::shared().url.clone(),
    ));
    #[cfg(feature = "etcd")]
    stores.push((
        "etcd 3.4",
        crate::support::etcd_server::shared().url.clone(),
    ));

    // With SINGLETON_BENCH_BASELINE=/path/to/an/older/singleton, each store is also measured
    // with that build, right after this one, on the same server: before/after in one run.
    let baseline = Baseline::from_env("SINGLETON_BENCH_BASELINE");
    let mut before = Vec::new();
    let mut measured = Vec::new();
    for (label, url) in &stores {
        measured.push(bench(label, url));
        if let Some(baseline) = &baseline {
            before.push(baseline_bench(&baseline.program, label, url));
        }
    }
    // The same servers' kinds over TLS (verify-full with the test CA), next to the plain ones.
    let over_tls: Vec<(Measured, &Measured)> = tls_stores()
        .into_iter()
        .filter_map(|(label, url)| {
            let plain = measured.iter().find(|m| m.label == label)?;
            Some((bench(label, &url), plain))
        })
        .collect();

    #[cfg(feature = "redis")]
    let redlock = redlock_table(
        &crate::support::redis_server::shared().url,
        REDLOCK_ROUNDS_IN_REGENERATE,
    );
    #[cfg(not(feature = "redis"))]
    let redlock = String::new();

    let short = bench_stores(&sqlite);
    let waiting = waiters_table(
        &short,
        waiters_baseline().as_ref(),
        herd_baseline().as_ref(),
    );
    let many = names_table(&short);

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chart = root.join("docs/benchmarks.svg");
    std::fs::write(&chart, svg_chart(&measured)).expect("write the chart");
    let mut markdown = benchmarks_md(&measured, &over_tls, &overhead, rss_kb);
    markdown.push_str(&redlock);
    markdown.push_str(&waiting);
    markdown.push_str(&many);
    if let Some(baseline) = &baseline {
        markdown.push_str(&against_baseline(baseline, &measured, &before));
    }
    std::fs::write(root.join("BENCHMARKS.md"), &markdown).expect("write BENCHMARKS.md");
    println!("{markdown}");
}

/// Measures the sections of BENCHMARKS.md named in `SINGLETON_BENCH_SECTIONS` (`cli`,
/// `waiters`, `names`, `redis`: ours next to the peers; comma-separated) and puts each in
/// place of its old one, with a line saying that it comes from a later run than the rest of
/// the file (`scripts/bench SECTION…`).
#[test]
#[ignore = "a benchmark, run by scripts/bench in a release build"]
fn regenerate_sections() {
    let wanted = std::env::var("SINGLETON_BENCH_SECTIONS").unwrap_or_default();
    let sqlite = SqliteStore::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("BENCHMARKS.md");
    let mut markdown = std::fs::read_to_string(&path).expect("BENCHMARKS.md");
    for section in wanted.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let measured = match section {
            "cli" => {
                let overhead = run_vs_flock(&sqlite);
                cli_section(&overhead, supervisor_peak_rss_kb(&sqlite.url))
            }
            "waiters" => waiters_table(
                &bench_stores(&sqlite),
                waiters_baseline().as_ref(),
                herd_baseline().as_ref(),
            ),
            "names" => names_table(&bench_stores(&sqlite)),
            #[cfg(feature = "redis")]
            "redis" => redlock_table(
                &crate::support::redis_server::shared().url,
                REDLOCK_ROUNDS_IN_REGENERATE,
            ),
            other => panic!("no section {other:?}: cli, waiters, names or redis"),
        };
        println!("{measured}");
        markdown = replace_section(&markdown, &measured);
    }
    std::fs::write(&path, &markdown).expect("write BENCHMARKS.md");
}

/// `markdown` with the section that starts with `section`'s first line (its `## ` heading)
/// replaced by `section`, marked as measured in a later run; appended if there is none.
fn replace_section(markdown: &str, section: &str) -> String {
    let section = section.trim_start_matches('\n');
    let (heading, body) = section.split_once('\n').unwrap_or((section, ""));
    let note = "_This section was measured in a later run than the sections around it \
                (`scripts/bench` with the section's name), on the same machine; its ratios \
                and counts come from that one run._\n";
    let mut section = format!("{heading}\n\n{note}{body}");
    // A blank line before the next heading.
    while !section.ends_with("\n\n") {
        section.push('\n');
    }
    let Some(start) = markdown.find(&format!("{heading}\n")) else {
        return format!("{markdown}\n{section}");
    };
    let rest = &markdown[start + heading.len()..];
    let end = rest
        .find("\n## ")
        .map_or(markdown.len(), |at| start + heading.len() + at + 1);
    format!("{}{section}{}", &markdown[..start], &markdown[end..])
}

#[test]
fn a_section_is_replaced_in_place_and_marked() {
    let old = "# B\n\n## One\n\nold one\n\n## Two\n\nold two\n";
    let new = replace_section(old, "\n## One\n\nnew one\n\n");
    assert!(new.starts_with("# B\n\n## One\n\n_This section was measured in a later run"));
    assert!(new.contains("\nnew one\n\n## Two\n\nold two\n"), "{new}");
    assert!(!new.contains("old one"), "{new}");
    let last = replace_section(old, "## Two\n\nnew two\n");
    assert!(
        last.ends_with("_\n\nnew two\n\n") && !last.contains("old two"),
        "{last}"
    );
    assert!(last.contains("old one"), "{last}");
}

/// Rounds of ours and redlock's, alternately, in a regeneration of BENCHMARKS.md.
#[cfg(feature = "redis")]
const REDLOCK_ROUNDS_IN_REGENERATE: usize = 3;

/// Our Redis cycle next to redlock's (with ioredis), on the same server in one run: 5 rounds of
/// each, alternately, printing every round and the section of BENCHMARKS.md with the medians.
/// Needs Node.js; `bench/peers/install` puts the peers into `target/peers`.
#[test]
#[ignore = "a benchmark, run by hand in a release build"]
#[cfg(feature = "redis")]
fn redis_against_redlock() {
    println!(
        "{}",
        redlock_table(&crate::support::redis_server::shared().url, 5)
    );
}

/// The section "Redis: ours next to redlock, python-redis-lock and tooz": `rounds` of
/// `singleton bench`, of `bench/peers/redlock.js` and of `bench/peers/python_locks.py` for each
/// Python library against the Redis at `url`, alternately, with the medians of their
/// cycles and raw pairs. Each measures its cycle interleaved with its own client's raw pair
/// (`SET NX PX` + `DEL`), the same number of times, each after its warm-up.
#[cfg(feature = "redis")]
fn redlock_table(url: &str, rounds: usize) -> String {
    let modules = peer_modules();
    let versions = ["redlock", "ioredis"].map(|package| {
        let manifest = modules.join(package).join("package.json");
        let manifest: Value = serde_json::from_str(
            &std::fs::read_to_string(&manifest)
                .unwrap_or_else(|e| panic!("{}: {e}", manifest.display())),
        )
        .expect("package.json");
        let version = manifest["version"].as_str().unwrap_or("?");
        format!("{package} {}", version.trim_start_matches('v'))
    });
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut pythons: Vec<Vec<Measured>> = PYTHON_PEERS.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        let measured = bench("Redis", url);
        let peer = redlock_bench(&modules, url);
        eprintln!(
            "round {round}: ours cycle p50 {:.0} µs (floor {:.0} µs), redlock cycle p50 {:.0} µs (floor {:.0} µs)",
            measured.us("cycle_us", "p50"),
            measured.us("floor_us", "p50"),
            peer.us("cycle_us", "p50"),
            peer.us("floor_us", "p50"),
        );
        ours.push(measured);
        theirs.push(peer);
        for (library, runs) in PYTHON_PEERS.iter().zip(&mut pythons) {
            runs.push(python_peer_bench(library, url));
        }
    }
    let median = |runs: &[Measured], what: &str, quantile: &str| {
        let mut values: Vec<f64> = runs.iter().map(|m| m.us(what, quantile)).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## Redis: ours next to redlock, python-redis-lock and tooz\n\nThe same Redis server, one client each, sequential: \
         our acquire+release (`singleton bench`), {} with {} (`redlock.acquire([key], 15s)` then \
         `lock.release()`, `bench/peers/redlock.js`), and python-redis-lock's `Lock(…, \
         expire=15).acquire(blocking=False)` + `release()` and tooz's Redis coordinator \
         `get_lock(…).acquire(blocking=False)` + `release()` (`bench/peers/python_locks.py`, \
         versions in the table), each interleaved with its own client's raw \
         pair `SET NX PX` + `DEL`, {ITERATIONS} times after a warm-up (20 cycles for ours, 200 \
         for the others: V8 compiles its hot path only after some hundred calls); {rounds} rounds \
         of each, alternately, medians. Compare each client's cycle with its own raw pair: the \
         languages' clients differ more than the protocols. Ours and redlock's cycles are two \
         round trips, each one script. Ours also \
         mints the fencing token, checks the owner on release, keeps the copy that reports a \
         taken-over lease, records the last run and tells waiters; the others only set and \
         delete their key (python-redis-lock also signals its waiters on release).\n",
        versions[0], versions[1]
    );
    let _ = writeln!(
        md,
        "| client | cycle p50 | cycle p99 | raw pair p50 | cycle / raw pair (p50) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    let mut clients = vec![
        ("singleton (this build)".to_owned(), &ours),
        (versions.join(" + "), &theirs),
    ];
    for runs in &pythons {
        let version = runs[0].report["version"].as_str().unwrap_or("?").to_owned();
        clients.push((version, runs));
    }
    for (client, runs) in clients {
        let cycle = median(runs, "cycle_us", "p50");
        let floor = median(runs, "floor_us", "p50");
        let _ = writeln!(
            md,
            "| {client} | {cycle:.0} µs | {:.0} µs | {floor:.0} µs | {:.2}× |",
            median(runs, "cycle_us", "p99"),
            cycle / floor
        );
    }
    md
}

/// Where `bench/peers/install` put the peers' modules (it installs them if they are missing).
#[cfg(feature = "redis")]
fn peer_modules() -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(root.join("bench/peers/install"))
        .status()
        .expect("run bench/peers/install");
    assert!(
        status.success(),
        "bench/peers/install failed (see above): the redlock benchmark needs Node.js and npm"
    );
    root.join("target/peers/node_modules")
}

/// The Python lock libraries measured next to ours (`bench/peers/python_locks.py`).
#[cfg(feature = "redis")]
const PYTHON_PEERS: [&str; 2] = ["python-redis-lock", "tooz"];

/// One run of `bench/peers/python_locks.py` for `library` against the Redis at `url`, with the
/// virtual environment that `bench/peers/install` made.
#[cfg(feature = "redis")]
fn python_peer_bench(library: &'static str, url: &str) -> Measured {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("bench/peers/python_locks.py");
    let done = Command::new(root.join("target/peers/venv/bin/python"))
        .arg(&script)
        .args([library, url, ITERATIONS])
        .output()
        .expect("run the peers' Python (bench/peers/install makes it)");
    assert!(
        done.status.success(),
        "{} {library} failed: {}",
        script.display(),
        String::from_utf8_lossy(&done.stderr)
    );
    Measured {
        label: library,
        report: serde_json::from_slice(&done.stdout).expect("python peer JSON"),
    }
}

/// One run of `bench/peers/redlock.js` against the Redis at `url`.
#[cfg(feature = "redis")]
fn redlock_bench(modules: &Path, url: &str) -> Measured {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/peers/redlock.js");
    let done = Command::new("node")
        .arg(&script)
        .arg(url)
        .arg(ITERATIONS)
        .env("NODE_PATH", modules)
        .output()
        .expect("run node");
    assert!(
        done.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&done.stderr)
    );
    Measured {
        label: "redlock",
        report: serde_json::from_slice(&done.stdout).expect("redlock JSON"),
    }
}

/// Before/after on the same servers: `SINGLETON_BENCH_BASELINE=/path/to/an/older/singleton`,
/// then each store measured ROUNDS times with each build, alternately, printing the cycle p50 and
/// cycle / floor of each and their medians (`SINGLETON_BENCH_ONLY=Redis,etcd`: only those
/// stores). For a change's closing note; writes no file.
#[test]
#[ignore = "a benchmark, run by hand in a release build"]
fn before_and_after() {
    const ROUNDS: usize = 5;
    let baseline = std::env::var("SINGLETON_BENCH_BASELINE")
        .expect("SINGLETON_BENCH_BASELINE=/path/to/an/older/singleton");
    let sqlite = SqliteStore::new();
    let stores = bench_stores(&sqlite);
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!(
        "| store | before cycle p50 | after cycle p50 | after / before | before cycle / floor | after cycle / floor |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, url) in &stores {
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            match baseline_bench(&baseline, label, url) {
                Some(measured) => before.push(measured),
                None => break,
            }
            after.push(bench(label, url));
        }
        if before.is_empty() {
            println!("| {label} | not in the baseline build | | | | |");
            continue;
        }
        let cycle = |m: &[Measured]| median(m.iter().map(|m| m.us("cycle_us", "p50")).collect());
        let ratio = |m: &[Measured]| {
            median(
                m.iter()
                    .map(|m| m.report["ratio_p50"].as_f64().unwrap_or(f64::NAN))
                    .collect(),
            )
        };
        println!(
            "| {label} | {:.0} µs | {:.0} µs | {:.2}× | {:.2}× | {:.2}× |",
            cycle(&before),
            cycle(&after),
            cycle(&after) / cycle(&before),
            ratio(&before),
            ratio(&after)
        );
    }
}

/// How many other live leases the cycle and `list` are measured with.
const NAMES: [u32; 3] = [1, 10_000, 100_000];
/// The most other leases measured on SecantusDB.
const SECANTUS_NAMES_AT_MOST: u32 = 1;

/// The cycle and `list` of every store with 1, 10k and 100k other live leases.
#[test]
#[ignore = "a benchmark, run by hand in a release build"]
fn names_curve() {
    let sqlite = SqliteStore::new();
    let stores = bench_stores(&sqlite);
    println!("{}", names_table(&stores));
}

/// The markdown section of the many-names curve.
fn names_table(stores: &[(&'static str, String)]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Many names
"
    );
    let _ = writeln!(
        md,
        "`singleton bench --names N`: N other live leases (10-minute leases of a holder of the \
         benchmark's own) are taken, then the cycle is measured against the floor ({ITERATIONS} \
         times each) and `list` is timed once; then the N leases are given back. The floor \
         works on a key or table of its own, which the N leases do not touch, and is measured \
         alternately with the cycle: so the cycle/floor ratio against the 1-lease row's says \
         what the N leases cost the cycle, whatever the machine's speed in each row's moment \
         (which the raw cycle also shows).\n"
    );
    let _ = writeln!(
        md,
        "| store | other leases | taken in | cycle p50 | cycle / floor (p50) | cycle / floor against 1 lease | `list` of all |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    for (label, url) in stores {
        let mut first: Option<f64> = None;
        for names in NAMES {
            // The Python test server takes minutes per thousand leases.
            if *label == "SecantusDB" && names > SECANTUS_NAMES_AT_MOST {
                let _ = writeln!(
                    md,
                    "| {label} | {names} | not measured: the test server (Python) takes minutes per thousand leases | | | | |"
                );
                continue;
            }
            eprintln!("names: {label} at {url}, {names} other leases ...");
            let done = Test::new()
                .store(url)
                .args([
                    "bench",
                    "--names",
                    &names.to_string(),
                    "--iterations",
                    ITERATIONS,
                    "--json",
                ])
                .output();
            if done.code != 0 {
                let error = done.stderr.lines().last().unwrap_or_default().to_owned();
                let _ = writeln!(md, "| {label} | {names} | failed: {error} | | | | |");
                continue;
            }
            let r: Value = serde_json::from_str(&done.stdout).expect("bench JSON");
            let cycle = r["cycle_us"]["p50"].as_f64().unwrap_or(f64::NAN);
            let ratio = r["ratio_p50"].as_f64().unwrap_or(f64::NAN);
            let against = ratio / *first.get_or_insert(ratio);
            let _ = writeln!(
                md,
                "| {label} | {names} | {:.1} s | {cycle:.0} µs | {ratio:.2}× | **{against:.2}×** | {:.3} s |",
                r["filled_in_seconds"].as_f64().unwrap_or(f64::NAN),
                r["list_seconds"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    md
}

/// Every store of this build, on the shared test servers, by short label;
/// `SINGLETON_BENCH_ONLY=PostgreSQL,Redis` keeps only those.
fn bench_stores(sqlite: &SqliteStore) -> Vec<(&'static str, String)> {
    let mut stores: Vec<(&'static str, String)> = vec![("SQLite", sqlite.url.clone())];
    #[cfg(feature = "postgres")]
    stores.push((
        "PostgreSQL",
        crate::support::postgres_server::shared().url(),
    ));
    #[cfg(feature = "mysql")]
    stores.push(("MariaDB", crate::support::mariadb_server::shared().url()));
    #[cfg(feature = "mongodb")]
    stores.push((
        "SecantusDB",
        crate::support::mongodb_server::shared().url.clone(),
    ));
    #[cfg(feature = "redis")]
    stores.push(("Redis", crate::support::redis_server::shared().url.clone()));
    #[cfg(feature = "etcd")]
    stores.push(("etcd", crate::support::etcd_server::shared().url.clone()));
    if let Ok(only) = std::env::var("SINGLETON_BENCH_ONLY") {
        stores.retain(|(label, _)| only.split(',').any(|wanted| wanted.trim() == *label));
    }
    stores
}

/// How many waiters the waiting curve is measured with.
const WAITERS: [u32; 4] = [1, 10, 100, 300];

/// The waiting curve of every store (`singleton bench --waiters N`), and with a baseline build
/// that has `--waiters`, its idle cost with 10 waiters next to ours.
#[test]
#[ignore = "a benchmark, run by hand in a release build"]
fn waiters_curve() {
    let sqlite = SqliteStore::new();
    let stores = bench_stores(&sqlite);
    println!(
        "{}",
        waiters_table(
            &stores,
            waiters_baseline().as_ref(),
            herd_baseline().as_ref()
        )
    );
}

/// The build whose waiters are measured next to ours: `SINGLETON_BENCH_WAITERS_BASELINE`, else
/// `SINGLETON_BENCH_BASELINE` (a build without `bench --waiters` is skipped).
fn waiters_baseline() -> Option<Baseline> {
    Baseline::from_env("SINGLETON_BENCH_WAITERS_BASELINE")
        .or_else(|| Baseline::from_env("SINGLETON_BENCH_BASELINE"))
}

/// The build whose hand-offs to 100 waiters are measured next to ours:
/// `SINGLETON_BENCH_HERD_BASELINE`, if set.
fn herd_baseline() -> Option<Baseline> {
    Baseline::from_env("SINGLETON_BENCH_HERD_BASELINE")
}

/// A build to measure next to this one: its path, from the variable `var`, and the words that
/// name it in BENCHMARKS.md, from `{var}_ABOUT` (say, "main from just before waiters were told
/// of acquires (f8e3dc5)"), else its path, which means nothing on another machine.
struct Baseline {
    program: String,
    about: String,
}

impl Baseline {
    fn from_env(var: &str) -> Option<Baseline> {
        let program = std::env::var(var).ok()?;
        let about = match std::env::var(format!("{var}_ABOUT")) {
            Ok(words) => format!("a baseline build of {words}"),
            Err(_) => format!("the baseline build `{program}`"),
        };
        Some(Baseline { program, about })
    }
}

/// How many waiters the hand-off is compared with a baseline build at.
const HERD: u32 = 100;

/// `singleton bench --waiters N --json` against `url` with `program`, or `None` if that build
/// has no `--waiters`.
fn waiters_bench(program: Test, label: &str, url: &str, waiters: u32) -> Option<Value> {
    eprintln!("waiters: {label} at {url}, {waiters} waiters ...");
    let done = program
        .store(url)
        .args(["bench", "--waiters", &waiters.to_string(), "--json"])
        .output();
    if done.code == 64 || done.code == 2 {
        eprintln!("{label}: no --waiters in this build; skipped");
        return None;
    }
    if done.code != 0 {
        // Say, more connections than the server takes: the table shows why.
        let error = done.stderr.lines().last().unwrap_or_default().to_owned();
        return Some(serde_json::json!({ "error": error }));
    }
    Some(serde_json::from_str(&done.stdout).expect("bench JSON"))
}

/// The markdown section of the waiting curve, with the idle cost against `baseline` and the
/// hand-off to 100 waiters against `herd`, where given.
fn waiters_table(
    stores: &[(&'static str, String)],
    baseline: Option<&Baseline>,
    herd: Option<&Baseline>,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Waiters
"
    );
    let _ = writeln!(
        md,
        "`singleton bench --waiters N`: N waiters, each with a connection of its own, wait on a \
         name held by another; their store requests (every operation our code asks of the \
         store) are counted for 10 s. Then one more waiter joins, and the name is released and \
         handed on 10 times, each new holder releasing after a second and waiting again half a \
         second later, so that N others wait at every release: hand-off is the time from one \
         holder's release call to the next one's acquisition, and requests per hand-off those \
         of all waiters from one release to the next. Where the store tells waiters of a \
         release (SQLite, PostgreSQL, Redis, etcd), an idle waiter asks again only when the \
         holder's lease could have expired, every 5 s at the latest; MariaDB and MongoDB \
         cannot tell, and their waiters poll, backing off from 100 ms to 1 s. PostgreSQL, \
         Redis and etcd also tell of acquires: a waiter that has seen a rival take the name \
         holds back its try after a release for a random pause (its longest pause, from 4 ms, \
         grows when its try loses or the name goes within a few round trips, and shrinks \
         when it wins or the name goes late), and does not try if told \
         meanwhile that the name was taken. SQLite's word (a commit to the database file) cannot tell an acquire from a \
         release, so all its waiters try. Requests per hand-off is the mean of the 10, first \
         ones included, in which the waiters have not yet seen each other take the name and \
         all try (`--json` lists each hand-off's).\n"
    );
    let _ = writeln!(
        md,
        "| store | waiters | idle requests/s per waiter | requests per hand-off | hand-off p50 | hand-off p99 |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for (label, url) in stores {
        for waiters in WAITERS {
            let Some(r) = waiters_bench(Test::new(), label, url, waiters) else {
                continue;
            };
            if let Some(error) = r["error"].as_str() {
                let _ = writeln!(md, "| {label} | {waiters} | failed: {error} | | | |");
                continue;
            }
            let _ = writeln!(
                md,
                "| {label} | {waiters} | {:.3} | {:.1} | {:.2} ms | {:.2} ms |",
                r["idle_requests_per_waiter_per_second"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                r["requests_per_handoff"].as_f64().unwrap_or(f64::NAN),
                r["handoff_us"]["p50"].as_f64().unwrap_or(f64::NAN) / 1e3,
                r["handoff_us"]["p99"].as_f64().unwrap_or(f64::NAN) / 1e3,
            );
        }
    }
    if let Some(herd) = herd {
        herd_table(&mut md, stores, herd);
    }
    let Some(baseline) = baseline else {
        return md;
    };
    let _ = writeln!(
        md,
        "\nWith 10 waiters, against {}, on the same servers:\n",
        baseline.about
    );
    let _ = writeln!(
        md,
        "| store | baseline idle requests/s per waiter | this build | baseline hand-off p50 | this build |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for (label, url) in stores {
        let Some(before) = waiters_bench(Test::program(&baseline.program), label, url, 10) else {
            continue;
        };
        let Some(after) = waiters_bench(Test::new(), label, url, 10) else {
            continue;
        };
        if let Some(error) = before["error"].as_str().or(after["error"].as_str()) {
            let _ = writeln!(md, "| {label} | failed: {error} | | | |");
            continue;
        }
        let idle = |r: &Value| {
            r["idle_requests_per_waiter_per_second"]
                .as_f64()
                .unwrap_or(f64::NAN)
        };
        let p50 = |r: &Value| r["handoff_us"]["p50"].as_f64().unwrap_or(f64::NAN) / 1e3;
        let _ = writeln!(
            md,
            "| {label} | {:.2} | **{:.3}** | {:.2} ms | {:.2} ms |",
            idle(&before),
            idle(&after),
            p50(&before),
            p50(&after)
        );
    }
    md
}

/// Hand-offs to [`HERD`] waiters with the baseline build and with this one, each pair measured
/// one after the other on the same server.
fn herd_table(md: &mut String, stores: &[(&'static str, String)], baseline: &Baseline) {
    let _ = writeln!(
        md,
        "\nWith {HERD} waiters, against {}, on the same servers:\n",
        baseline.about
    );
    let _ = writeln!(
        md,
        "| store | baseline requests per hand-off | this build | baseline hand-off p50 / p99 | this build |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for (label, url) in stores {
        let Some(before) = waiters_bench(Test::program(&baseline.program), label, url, HERD) else {
            continue;
        };
        let Some(after) = waiters_bench(Test::new(), label, url, HERD) else {
            continue;
        };
        if let Some(error) = before["error"].as_str().or(after["error"].as_str()) {
            let _ = writeln!(md, "| {label} | failed: {error} | | | |");
            continue;
        }
        let per = |r: &Value| r["requests_per_handoff"].as_f64().unwrap_or(f64::NAN);
        let at = |r: &Value, p: &str| r["handoff_us"][p].as_f64().unwrap_or(f64::NAN) / 1e3;
        let _ = writeln!(
            md,
            "| {label} | {:.1} | **{:.1}** | {:.2} / {:.2} ms | {:.2} / {:.2} ms |",
            per(&before),
            per(&after),
            at(&before, "p50"),
            at(&before, "p99"),
            at(&after, "p50"),
            at(&after, "p99"),
        );
    }
}

/// Runs `singleton bench --json` against `url`, checking that no two holders overlapped.
fn bench(label: &'static str, url: &str) -> Measured {
    bench_with(Test::new(), label, url)
}

/// [`bench`] with the given build of `singleton`.
fn bench_with(program: Test, label: &'static str, url: &str) -> Measured {
    eprintln!("benchmarking {label} at {url} ...");
    let done = program
        .store(url)
        .args([
            "bench",
            "--iterations",
            ITERATIONS,
            "--contenders",
            "8",
            "--json",
        ])
        .status(0);
    let report: Value = serde_json::from_str(&done.stdout).expect("bench JSON");
    assert_eq!(
        report["contended"]["overlaps"], 0,
        "{label}: two holders at once"
    );
    Measured { label, report }
}

/// Each network store's TLS test server, by the label of its plain row, with a URL that
/// verifies the server's certificate and name against the test CA.
fn tls_stores() -> Vec<(&'static str, String)> {
    let ca = crate::support::certs::shared().ca.display().to_string();
    let mut stores = Vec::new();
    #[cfg(feature = "postgres")]
    stores.push((
        "PostgreSQL 15",
        crate::support::postgres_server::tls().url_for(
            &format!("postgres:{}", crate::support::postgres_server::PASSWORD),
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
    ));
    #[cfg(feature = "mysql")]
    {
        use crate::support::mariadb_server::{self, PASSWORD, USER};
        stores.push((
            "MariaDB 10.11",
            mariadb_server::tls().url_to(
                "127.0.0.1",
                USER,
                PASSWORD,
                &format!("&ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
            ),
        ));
    }
    #[cfg(feature = "mongodb")]
    stores.push((
        "SecantusDB (MongoDB wire)",
        crate::support::mongodb_server::tls().url_with(&format!("tls=true&tlsCAFile={ca}")),
    ));
    #[cfg(feature = "redis")]
    stores.push((
        "Redis 7",
        crate::support::redis_server::tls().tls_url("127.0.0.1", &format!("cacert={ca}")),
    ));
    #[cfg(feature = "etcd")]
    stores.push((
        "etcd 3.4",
        crate::support::etcd_server::tls_with_client_certificates()
            .url
            .clone(),
    ));
    stores
}

/// hyperfine's mean, standard deviation and median for each command, in milliseconds:
/// `run -- true` on the store on disk, the same on tmpfs (no flush reaches a disk), on tmpfs
/// with `--kill-mode group` (no cgroup), `--version` (starting the binary), and `flock -n`.
struct Overhead {
    on_disk: (f64, f64, f64),
    on_tmpfs: (f64, f64, f64),
    without_cgroup: (f64, f64, f64),
    version: (f64, f64, f64),
    flock: (f64, f64, f64),
}

fn run_vs_flock(store: &SqliteStore) -> Overhead {
    let lock_file = store.path("flock");
    std::fs::write(&lock_file, "").expect("lock file");
    let export = store.path("hyperfine.json");
    let tmpfs = tempfile::Builder::new()
        .prefix("singleton-bench-")
        .tempdir_in("/dev/shm")
        .expect("a directory on /dev/shm (tmpfs)");
    let on_tmpfs = format!("sqlite://{}", tmpfs.path().join("leases.db").display());
    let run = |url: &str, extra: &str| {
        format!("{} run --store {url}{extra} --name overhead -- true", bin())
    };
    let commands = [
        run(&store.url, ""),
        run(&on_tmpfs, ""),
        run(&on_tmpfs, " --kill-mode group"),
        format!("{} --version", bin()),
        format!("flock -n {} true", lock_file.display()),
    ];
    let status = Command::new("hyperfine")
        .args([
            "--shell=none",
            "--warmup",
            "20",
            "--runs",
            "300",
            "--export-json",
        ])
        .arg(&export)
        .args(&commands)
        .status()
        .expect("hyperfine (apt-get install hyperfine)");
    assert!(status.success(), "hyperfine failed");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(&export).expect("hyperfine JSON"))
            .expect("hyperfine JSON");
    let stats = |i: usize| {
        let r = &results["results"][i];
        (
            r["mean"].as_f64().unwrap_or(f64::NAN) * 1e3,
            r["stddev"].as_f64().unwrap_or(f64::NAN) * 1e3,
            r["median"].as_f64().unwrap_or(f64::NAN) * 1e3,
        )
    };
    Overhead {
        on_disk: stats(0),
        on_tmpfs: stats(1),
        without_cgroup: stats(2),
        version: stats(3),
        flock: stats(4),
    }
}

/// The supervisor's peak resident memory (VmHWM) while it holds a lease and runs a command.
fn supervisor_peak_rss_kb(store: &str) -> u64 {
    let running = Test::new()
        .store(store)
        .args(["run", "--name", "memory", "--", "sleep", "2"])
        .spawn();
    std::thread::sleep(Duration::from_millis(1500));
    let status = std::fs::read_to_string(format!("/proc/{}/status", running.pid()))
        .expect("supervisor status");
    let kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    let done = running.finish(Duration::from_secs(10));
    assert_eq!(done.code, 0, "{}", done.stderr);
    kb
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = Command::new("uname")
        .arg("-sr")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cores} cores of {cpu}, {memory_gib:.0} GiB, {kernel}")
}

fn benchmarks_md(
    measured: &[Measured],
    over_tls: &[(Measured, &Measured)],
    overhead: &Overhead,
    rss_kb: u64,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Regenerated by `scripts/bench` from one run; do not edit by hand. Machine: {}. \
         Every server runs on loopback, started by the test harness as the tests start it \
         (PostgreSQL and MariaDB write each commit to their log but do not fsync it, Redis \
         appends to its file without fsync, etcd keeps its data on a temporary directory, \
         SecantusDB in memory), so the numbers compare our protocol with the store's own floor, \
         not durable-disk latency.\n",
        machine()
    );
    let _ = writeln!(
        md,
        "## Acquire+release cycle against the store's raw write pair\n"
    );
    let _ = writeln!(
        md,
        "The floor is the store's raw equivalent of an acquire and a release, on the same \
         connection type: two round trips (SQL INSERT + DELETE of one row; SQLite the same, \
         each in its own transaction; MongoDB insert + delete; Redis SET NX PX + DEL; etcd put + \
         delete). Both are measured alternately, {ITERATIONS} times each, in the same run \
         (`singleton bench`). Hand-off is the time from a holder's release call to a waiting \
         contender's acquisition: SQLite (inotify on its WAL), PostgreSQL (LISTEN/NOTIFY), \
         Redis (pub/sub) and etcd (a watch) tell waiters of a release; on MariaDB and MongoDB \
         they poll every 100 ms with jitter.\n"
    );
    let _ = writeln!(
        md,
        "| store | floor p50 | floor p99 | cycle p50 | cycle p99 | cycle / floor (p50) | contended: acquisitions/s (8 contenders), overlaps | hand-off p50 / p99 |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for m in measured {
        let r = &m.report;
        let _ = writeln!(
            md,
            "| {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | **{:.2}×** | {:.0}/s, {} | {:.2} / {:.2} ms |",
            m.label,
            m.us("floor_us", "p50"),
            m.us("floor_us", "p99"),
            m.us("cycle_us", "p50"),
            m.us("cycle_us", "p99"),
            r["ratio_p50"].as_f64().unwrap_or(f64::NAN),
            r["contended"]["acquisitions_per_second"]
                .as_f64()
                .unwrap_or(f64::NAN),
            r["contended"]["overlaps"],
            m.us("handoff_us", "p50") / 1e3,
            m.us("handoff_us", "p99") / 1e3,
        );
    }
    let _ = writeln!(
        md,
        "\n![cycle time against the floor, per store](docs/benchmarks.svg)\n"
    );
    let _ = writeln!(md, "## Over TLS\n");
    let _ = writeln!(
        md,
        "The same servers' kinds serving TLS only (an ECDSA P-256 certificate of a \
         throw-away CA), measured in the same run with URLs that verify the certificate and the \
         host name. Connections are kept open, so the handshake is paid once per connection, \
         not per cycle: what remains is the encryption of every round trip.\n"
    );
    let _ = writeln!(
        md,
        "| store | plain floor p50 | plain cycle p50 | TLS floor p50 | TLS cycle p50 | TLS cycle / plain floor (p50) | TLS cycle / plain cycle (p50) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    for (tls, plain) in over_tls {
        let _ = writeln!(
            md,
            "| {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | **{:.2}×** | {:.2}× |",
            tls.label,
            plain.us("floor_us", "p50"),
            plain.us("cycle_us", "p50"),
            tls.us("floor_us", "p50"),
            tls.us("cycle_us", "p50"),
            tls.us("cycle_us", "p50") / plain.us("floor_us", "p50"),
            tls.us("cycle_us", "p50") / plain.us("cycle_us", "p50"),
        );
    }
    let _ = writeln!(md);
    md.push_str(&cli_section(overhead, rss_kb));
    md
}

/// The section "The command-line tool".
fn cli_section(overhead: &Overhead, rss_kb: u64) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## The command-line tool\n");
    let _ = writeln!(
        md,
        "| command (hyperfine, 300 runs) | mean | σ | median | mean / `flock -n` |\n|---|---:|---:|---:|---:|"
    );
    let flock_mean = overhead.flock.0;
    for (label, (mean, sd, median)) in [
        (
            "`singleton run --store sqlite://… -- true`",
            overhead.on_disk,
        ),
        (
            "the same, the store on tmpfs (`/dev/shm`)",
            overhead.on_tmpfs,
        ),
        (
            "the same on tmpfs, `--kill-mode group` (no cgroup)",
            overhead.without_cgroup,
        ),
        ("`singleton --version`", overhead.version),
        ("`flock -n FILE true`", overhead.flock),
    ] {
        let _ = writeln!(
            md,
            "| {label} | {mean:.2} ms | {sd:.2} ms | {median:.2} ms | {:.2}× |",
            mean / flock_mean
        );
    }
    let _ = writeln!(
        md,
        "\nWhere the difference goes, from the means above: {:.2} ms is the disk (the fsyncs of \
         the lease's commit that make a handed-out fencing token survive a power cut; `flock` \
         writes nothing, and this part moves with the disk's latency), {:.2} ms the command's \
         cgroup (made, the command started inside it with `clone3(CLONE_INTO_CGROUP)` so that \
         nothing moves it, and removed; `--kill-mode group` goes without). Of the remaining \
         {:.2} ms, starting the binary takes {:.2} ms, and the rest is the lease (opening the \
         store, the acquire and the release), the watchdog, forked before the command starts, \
         and running `true` (`flock -n` starts, locks and runs `true` in {:.2} ms).\n",
        overhead.on_disk.0 - overhead.on_tmpfs.0,
        overhead.on_tmpfs.0 - overhead.without_cgroup.0,
        overhead.without_cgroup.0,
        overhead.version.0,
        flock_mean,
    );
    let _ = writeln!(
        md,
        "Peak resident memory of a supervisor holding a lease on the embedded store while its \
         command runs: {:.1} MB (VmHWM).\n",
        rss_kb as f64 / 1024.0
    );
    let _ = writeln!(
        md,
        "Rerun: `scripts/bench` (it installs the servers if missing, builds in release mode and \
         rewrites this file and the chart); `scripts/bench cli waiters names redis` measures \
         those sections alone and puts them in place of the old ones.\n"
    );
    md
}

/// [`bench`] with the baseline build, or `None` if that build lacks the store's feature.
fn baseline_bench(program: &str, label: &'static str, url: &str) -> Option<Measured> {
    let probe = Test::program(program)
        .store(url)
        .args(["status", "baseline-probe"])
        .output();
    if probe.code == 64 && probe.stderr.contains("not available in this build") {
        eprintln!("{label}: not in the baseline build; skipped");
        return None;
    }
    Some(bench_with(Test::program(program), label, url))
}

/// The before/after table of a run with `SINGLETON_BENCH_BASELINE`.
fn against_baseline(baseline: &Baseline, now: &[Measured], before: &[Option<Measured>]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## Against a baseline build\n\nThe same servers, measured right after this build with {}, given as `SINGLETON_BENCH_BASELINE`.\n",
        baseline.about
    );
    let _ = writeln!(
        md,
        "| store | baseline cycle p50 | this cycle p50 | this / baseline | baseline cycle / floor | this cycle / floor |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for (now, before) in now.iter().zip(before) {
        let Some(before) = before else {
            let _ = writeln!(md, "| {} | not in the baseline build | | | | |", now.label);
            continue;
        };
        let _ = writeln!(
            md,
            "| {} | {:.0} µs | {:.0} µs | **{:.2}×** | {:.2}× | {:.2}× |",
            now.label,
            before.us("cycle_us", "p50"),
            now.us("cycle_us", "p50"),
            now.us("cycle_us", "p50") / before.us("cycle_us", "p50"),
            before.report["ratio_p50"].as_f64().unwrap_or(f64::NAN),
            now.report["ratio_p50"].as_f64().unwrap_or(f64::NAN),
        );
    }
    md
}

/// A horizontal bar chart: per store, the floor and the cycle p50 on a log scale.
fn svg_chart(measured: &[Measured]) -> String {
    let (left, width, row, bar) = (230.0, 520.0, 56.0, 18.0);
    let height = 70.0 + row * measured.len() as f64 + 40.0;
    let values: Vec<f64> = measured
        .iter()
        .flat_map(|m| [m.us("floor_us", "p50"), m.us("cycle_us", "p50")])
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let min = values
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(1.0);
    let max = values.iter().copied().fold(0.0, f64::max).max(min * 10.0);
    let (lo, hi) = (
        10f64.powf(min.log10().floor()),
        10f64.powf(max.log10().ceil()),
    );
    let x = |v: f64| left + width * (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10());
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="12">"#,
        left + width + 40.0
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">Acquire+release cycle vs the store's raw write pair (p50, log scale)</text>"#
    );
    let mut tick = lo;
    while tick <= hi * 1.0001 {
        let tx = x(tick);
        let label = if tick >= 1000.0 {
            format!("{} ms", tick / 1000.0)
        } else {
            format!("{tick} µs")
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{tx:.1}" y1="45" x2="{tx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{label}</text>"##,
            height - 35.0,
            height - 20.0
        );
        tick *= 10.0;
    }
    for (i, m) in measured.iter().enumerate() {
        let y = 55.0 + row * i as f64;
        let (floor, cycle) = (m.us("floor_us", "p50"), m.us("cycle_us", "p50"));
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 8.0,
            y + bar + 4.0,
            m.label
        );
        for (j, (value, colour, name)) in [(floor, "#9bb7d4", "floor"), (cycle, "#2f6690", "cycle")]
            .into_iter()
            .enumerate()
        {
            let by = y + j as f64 * (bar + 2.0);
            let _ = writeln!(
                svg,
                r#"<rect x="{left}" y="{by:.1}" width="{:.1}" height="{bar}" fill="{colour}"/><text x="{:.1}" y="{:.1}">{name} {:.0} µs</text>"#,
                (x(value) - left).max(1.0),
                x(value) + 4.0,
                by + bar - 5.0,
                value
            );
        }
    }
    let _ = writeln!(svg, "</svg>");
    svg
}
