//! The `singleton` command line, run as a user would.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::{SqliteStore, Test, alive, held, held_status, unique, wait_until};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn second_copy_exits_75_at_once_naming_the_holder_and_a_waiter_runs_after() {
    let store = SqliteStore::new();
    let name = unique("conflict");
    let mut first = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--", "sleep", "3"])
        .spawn();
    first.wait_held(&store.url, &name);

    let second = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--", "sleep", "3"])
        .status(75);
    let line = second.one_line();
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert!(line.contains(&host), "names the host: {line}");
    assert!(
        line.contains(&format!("pid {}", first.pid())),
        "names the pid: {line}"
    );
    assert!(line.contains("since "), "says since when: {line}");
    assert!(
        second.elapsed < 2 * SECOND,
        "a conflict must not wait: {:?}",
        second.elapsed
    );

    let waiter = Test::new()
        .store(&store.url)
        .args([
            "run",
            "--name",
            &name,
            "--wait",
            "--timeout",
            "10s",
            "--json",
            "--",
            "true",
        ])
        .status(0);
    assert!(waiter.events().iter().any(|e| e["event"] == "locked"));
    let first = first.finish(10 * SECOND);
    assert_eq!(first.code, 0, "{}", first.stderr);
}

#[test]
fn conflict_exit_code_is_configurable_and_wait_timeout_is_124() {
    let store = SqliteStore::new();
    let name = unique("codes");
    let mut holder = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--", "sleep", "10"])
        .spawn();
    holder.wait_held(&store.url, &name);
    let expected = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--conflict-exit", "0", "--", "true"])
        .status(0);
    assert_eq!(
        expected.stderr, "",
        "a conflict declared expected is quiet, as cron wants"
    );
    let told = Test::new()
        .store(&store.url)
        .args([
            "run",
            "--name",
            &name,
            "--conflict-exit",
            "0",
            "-v",
            "--",
            "true",
        ])
        .status(0);
    assert!(told.stderr.contains("held by"), "{}", told.stderr);
    let conflict = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--", "true"])
        .status(75);
    assert!(conflict.stderr.contains("held by"), "{}", conflict.stderr);
    let timed_out = Test::new()
        .store(&store.url)
        .args([
            "run",
            "--name",
            &name,
            "--wait",
            "--timeout",
            "300ms",
            "--",
            "true",
        ])
        .status(124);
    assert!(timed_out.stderr.contains("held by"), "{}", timed_out.stderr);
}

#[test]
fn the_command_gets_name_token_and_holder_and_its_exit_code_passes_through() {
    let store = SqliteStore::new();
    let name = unique("env");
    let done = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--", "sh", "-c"])
        .arg_str(r#"echo "$SINGLETON_NAME|$SINGLETON_TOKEN|$SINGLETON_HOLDER"; exit 7"#)
        .status(7);
    let fields: Vec<&str> = done.stdout.trim().split('|').collect();
    assert_eq!(fields[0], name);
    assert_eq!(fields[1], "1");
    assert_eq!(fields[2].len(), 32, "a holder id: {}", fields[2]);
    assert!(
        !held(&store.url, &name),
        "released after the command exited"
    );

    let again = Test::new()
        .store(&store.url)
        .args([
            "run",
            "--name",
            &name,
            "--",
            "sh",
            "-c",
            "echo $SINGLETON_TOKEN",
        ])
        .status(0);
    assert_eq!(again.stdout.trim(), "2", "tokens grow across runs");

    Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--", "sh", "-c", "kill -9 $$"])
        .status(128 + 9);
    Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--", "/nonexistent/command"])
        .status(127);
    assert!(!held(&store.url, &name), "released after a failed spawn");
}

#[test]
fn the_name_defaults_to_the_command_file_name() {
    let store = SqliteStore::new();
    let mut running = Test::new()
        .store(&store.url)
        .args(["run", "--", "/bin/sleep", "5"])
        .spawn();
    running.wait_held(&store.url, "sleep");
    let status = Test::new()
        .store(&store.url)
        .args(["status", "sleep"])
        .status(0);
    assert!(status.stdout.contains("/bin/sleep 5"), "{}", status.stdout);
}

#[test]
fn sigterm_reaches_the_command_and_the_lease_is_released_at_once() {
    let store = SqliteStore::new();
    let name = unique("term");
    let (ready, marker) = (store.path("ready"), store.path("got-term"));
    let script = format!(
        "trap 'touch {}; exit 0' TERM; touch {}; while :; do sleep 0.05; done",
        marker.display(),
        ready.display()
    );
    let running = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--json", "--", "sh", "-c", &script])
        .spawn();
    wait_until(5 * SECOND, "the command is ready", || ready.exists());
    running.signal(Signal::SIGTERM);
    let done = running.finish(5 * SECOND);
    assert!(marker.exists(), "the command got SIGTERM");
    assert_eq!(done.code, 0, "the command's own exit code: {}", done.stderr);
    assert!(
        !held(&store.url, &name),
        "released when the supervisor exited"
    );
    let kinds: Vec<String> = done
        .events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(kinds.contains(&"signal".to_owned()), "{kinds:?}");
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("released"),
        "{kinds:?}"
    );
}

#[test]
fn a_signal_while_waiting_ends_the_wait() {
    let store = SqliteStore::new();
    let name = unique("waitsig");
    let mut holder = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--", "sleep", "10"])
        .spawn();
    holder.wait_held(&store.url, &name);
    let waiter = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--wait", "--json", "--", "true"])
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    waiter.signal(Signal::SIGINT);
    let done = waiter.finish(5 * SECOND);
    assert_eq!(done.code, 128 + 2, "{}", done.stderr);
}

#[test]
fn sigkill_of_the_supervisor_kills_the_command_and_the_lease_expires_on_time() {
    let store = SqliteStore::new();
    let name = unique("kill9");
    let pids = store.path("pids");
    // A shell with a child of its own: the parent-death signal reaches only the shell, the
    // watchdog must take care of its child.
    let script = format!("sleep 30 & echo $$ $! > {}; wait", pids.display());
    let supervisor = Test::new()
        .store(&store.url)
        .args([
            "run", "--name", &name, "--ttl", "2s", "--", "sh", "-c", &script,
        ])
        .spawn();
    wait_until(5 * SECOND, "the command started", || {
        std::fs::read_to_string(&pids).is_ok_and(|s| s.split_whitespace().count() == 2)
    });
    let (_, expires) = held_status(&store.url, &name);
    let children: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();

    supervisor.signal(Signal::SIGKILL);
    drop(supervisor);
    wait_until(SECOND, "the shell and its child are dead", || {
        children.iter().all(|&pid| !alive(pid))
    });

    // Nobody acquires before the lease expires; a waiter does soon after.
    let waiter = Test::new()
        .store(&store.url)
        .args([
            "run",
            "--name",
            &name,
            "--wait",
            "--timeout",
            "10s",
            "--json",
            "--",
            "true",
        ])
        .status(0);
    let locked_at = waiter
        .events()
        .iter()
        .find(|e| e["event"] == "locked")
        .map(|e| humantime::parse_rfc3339(e["time"].as_str().unwrap()).unwrap())
        .expect("the waiter locked");
    let early = Duration::from_millis(50); // display rounding of the two wall-clock readings
    assert!(
        locked_at + early >= expires,
        "acquired at {locked_at:?} before expiry {expires:?}"
    );
    assert!(
        locked_at <= expires + SECOND,
        "acquired at {locked_at:?}, long after expiry {expires:?}"
    );
}

#[test]
fn a_stalled_supervisor_cannot_keep_its_command_running_past_the_lease() {
    let store = SqliteStore::new();
    let name = unique("stalled");
    let pid_file = store.path("pid");
    let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
    let supervisor = Test::new()
        .store(&store.url)
        .args([
            "run", "--name", &name, "--ttl", "1s", "--json", "--", "sh", "-c", &script,
        ])
        .spawn();
    wait_until(5 * SECOND, "the command started", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (_, expires) = held_status(&store.url, &name);

    // The supervisor can neither renew nor stop its command while it is stopped.
    supervisor.signal(Signal::SIGSTOP);
    wait_until(3 * SECOND, "the watchdog killed the command", || {
        !alive(pid)
    });
    let died = std::time::SystemTime::now();
    assert!(
        died < expires,
        "the command died at {died:?}, after the lease expired at {expires:?}"
    );

    supervisor.signal(Signal::SIGCONT);
    let done = supervisor.finish(5 * SECOND);
    assert_eq!(done.code, 76, "a lost lease: {}", done.stderr);
}

#[test]
fn without_renewal_the_command_is_stopped_before_the_lease_runs_out() {
    let store = SqliteStore::new();
    let name = unique("norenew");
    let done = Test::new()
        .store(&store.url)
        .args([
            "run",
            "--name",
            &name,
            "--ttl",
            "1s",
            "--no-renew",
            "--json",
            "--",
            "sleep",
            "5",
        ])
        .status(76);
    let kinds: Vec<String> = done
        .events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(kinds.contains(&"lost".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"terminating".to_owned()), "{kinds:?}");
    assert!(done.elapsed < 3 * SECOND, "{:?}", done.elapsed);
}

#[test]
fn processes_left_behind_in_the_group_are_stopped() {
    let store = SqliteStore::new();
    let pid_file = store.path("bg");
    let script = format!("sleep 30 & echo $! > {}", pid_file.display());
    Test::new()
        .store(&store.url)
        .args([
            "run",
            "--name",
            &unique("leftover"),
            "--",
            "sh",
            "-c",
            &script,
        ])
        .status(0);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until(2 * SECOND, "the background process is gone", || !alive(pid));
}

#[test]
fn bad_input_gets_one_line_and_a_documented_code() {
    let store = SqliteStore::new();
    let cases: Vec<(Vec<String>, Option<&str>, i32)> = vec![
        (
            args(["run", "--name", "x", "--", "true"]),
            Some("bogus://x"),
            64,
        ),
        (
            args(["run", "--name", "x", "--", "true"]),
            Some("memory:"),
            64,
        ),
        (
            args(["run", "--name", "x", "--ttl", "0s", "--", "true"]),
            None,
            64,
        ),
        (
            args(["run", "--name", "x", "--ttl", "-5s", "--", "true"]),
            None,
            64,
        ),
        (
            args([
                "run",
                "--name",
                "x",
                "--ttl",
                "99999999999999999999s",
                "--",
                "true",
            ]),
            None,
            64,
        ),
        (
            args([
                "run", "--name", "x", "--ttl", "3s", "--grace", "3s", "--", "true",
            ]),
            None,
            64,
        ),
        (
            args(["run", "--name", "x", "--grace", "400days", "--", "true"]),
            None,
            64,
        ),
        (
            args([
                "run",
                "--name",
                "x",
                "--wait",
                "--timeout",
                "99999999999999999999s",
                "--",
                "true",
            ]),
            None,
            64,
        ),
        (
            args(["run", "--name", "x", "--", "true"]),
            Some("mysql://u:pw@127.0.0.1:1/db?abs_conn_ttl=18446744073709551615"),
            64,
        ),
        (
            args(["run", "--name", "x", "--", "true"]),
            Some("mongodb://127.0.0.1:1/db?timeoutMS=18446744073709551615"),
            64,
        ),
        (args(["run", "--name", "", "--", "true"]), None, 64),
        (
            vec![
                "run".into(),
                "--name".into(),
                "n".repeat(300),
                "--".into(),
                "true".into(),
            ],
            None,
            64,
        ),
        (
            args(["run", "--name", "x", "--", "true"]),
            Some("sqlite:///proc/nope/locks.db"),
            69,
        ),
        (args(["run", "--name", "x"]), None, 64),
        (args(["release", "x"]), None, 64),
        (args(["status", ""]), None, 64),
        (args(["frobnicate"]), None, 64),
    ];
    for (argv, url, code) in cases {
        let done = Test::new()
            .store(url.unwrap_or(&store.url))
            .args(&argv)
            .output();
        assert_eq!(done.code, code, "{argv:?} with {url:?}: {}", done.stderr);
        let line = done.one_line();
        assert!(line.starts_with("singleton: "), "{line}");
    }
}

#[test]
fn odd_names_just_work() {
    let store = SqliteStore::new();
    for name in [
        "it's \"quoted\"",
        "100% off",
        "*",
        "a/b/../c",
        "with spaces ",
        "名前 🦀",
        "Job",
        "job",
    ] {
        let done = Test::new()
            .store(&store.url)
            .args([
                "run",
                "--name",
                name,
                "--",
                "sh",
                "-c",
                r#"printf '%s' "$SINGLETON_NAME""#,
            ])
            .status(0);
        assert_eq!(done.stdout, name);
    }
    let mut job = Test::new()
        .store(&store.url)
        .args(["run", "--name", "Job", "--", "sleep", "5"])
        .spawn();
    job.wait_held(&store.url, "Job");
    assert!(!held(&store.url, "job"), "names are case-sensitive");
    let list = Test::new()
        .store(&store.url)
        .args(["list", "--json"])
        .status(0);
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "Job");
}

#[test]
fn status_exists_list_and_forced_release() {
    let store = SqliteStore::new();
    let name = unique("admin");
    Test::new()
        .store(&store.url)
        .args(["exists", &name])
        .status(1);
    let free = Test::new()
        .store(&store.url)
        .args(["status", &name])
        .status(0);
    assert!(free.stdout.contains("free"), "{}", free.stdout);

    let mut running = Test::new()
        .store(&store.url)
        .args([
            "run", "--name", &name, "--ttl", "1s", "--json", "--", "sleep", "30",
        ])
        .spawn();
    running.wait_held(&store.url, &name);
    let status = Test::new()
        .store(&store.url)
        .args(["status", &name, "--json"])
        .status(0);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["held"], true);
    assert_eq!(status["lease"]["holder"]["pid"], running.pid());
    assert_eq!(status["lease"]["token"], 1);

    let forced = Test::new()
        .store(&store.url)
        .args(["release", &name, "--force"])
        .status(0);
    assert!(
        forced.stderr.contains("force-released"),
        "{}",
        forced.stderr
    );
    // The holder notices at its next renewal and stops its command.
    let done = running.finish(5 * SECOND);
    assert_eq!(done.code, 76, "{}", done.stderr);
    Test::new()
        .store(&store.url)
        .args(["release", &name, "--force"])
        .status(1);
    Test::new()
        .store(&store.url)
        .args(["exists", &name])
        .status(1);
}

#[test]
fn the_default_store_lives_in_the_state_directory() {
    let home = tempfile::tempdir().unwrap();
    Test::new()
        .env("HOME", home.path())
        .env("XDG_STATE_HOME", "")
        .args(["run", "--name", "default", "--", "true"])
        .status(0);
    assert!(home.path().join(".local/state/singleton/locks.db").exists());
    let state = tempfile::tempdir().unwrap();
    Test::new()
        .env("XDG_STATE_HOME", state.path())
        .args(["run", "--name", "default", "--", "true"])
        .status(0);
    assert!(state.path().join("singleton/locks.db").exists());
}

#[test]
fn exists_reports_store_errors_with_their_own_code() {
    Test::new()
        .store("sqlite:///proc/nope/locks.db")
        .args(["exists", "x"])
        .status(69);
}

fn args<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `singleton list` of `store` shows no lease: a benchmark gave back every one it took.
fn assert_no_lease_left(store: &SqliteStore) {
    let listed = Test::new()
        .store(&store.url)
        .args(["list", "--json"])
        .status(0);
    assert_eq!(
        listed.stdout.trim(),
        "[]",
        "the benchmark leaves no lease behind"
    );
}

#[test]
fn bench_measures_the_cycle_against_the_floor_and_checks_exclusivity() {
    let store = SqliteStore::new();
    let done = Test::new()
        .store(&store.url)
        .args(["bench", "--iterations", "20", "--contenders", "4", "--json"])
        .status(0);
    let report: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    assert_eq!(report["iterations"], 20);
    assert!(report["floor_us"]["p50"].as_f64().unwrap() > 0.0);
    assert!(
        report["cycle_us"]["p99"].as_f64().unwrap() >= report["cycle_us"]["p50"].as_f64().unwrap()
    );
    assert!(report["contended"]["acquisitions"].as_u64().unwrap() > 0);
    assert_eq!(report["contended"]["overlaps"], 0);
    assert!(report["handoff_us"]["p50"].as_f64().unwrap() > 0.0);
    assert_no_lease_left(&store);
}

#[test]
fn bench_with_other_leases_measures_the_cycle_and_list_and_gives_them_back() {
    let store = SqliteStore::new();
    let done = Test::new()
        .store(&store.url)
        .args(["bench", "--names", "40", "--iterations", "5", "--json"])
        .status(0);
    let report: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    assert_eq!(report["names"], 40);
    assert_eq!(report["listed"], 40, "list sees the other leases");
    assert!(report["cycle_us"]["p50"].as_f64().unwrap() > 0.0);
    assert_no_lease_left(&store);
}

#[test]
fn bench_with_waiters_counts_what_idle_waiters_ask_and_hands_off() {
    let store = SqliteStore::new();
    let done = Test::new()
        .store(&store.url)
        .args(["bench", "--waiters", "3", "--json"])
        .status(0);
    let report: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    assert_eq!(report["waiters"], 3);
    assert_eq!(report["handoffs"], 10);
    // Listening waiters ask every few seconds; polling every 100 ms would make 10 a second.
    let idle = report["idle_requests_per_waiter_per_second"]
        .as_f64()
        .unwrap();
    assert!(idle < 2.0, "{idle} requests/s per idle waiter");
    assert!(report["handoff_us"]["p50"].as_f64().unwrap() > 0.0);
    assert_no_lease_left(&store);
}

#[test]
fn an_interactive_command_reads_from_the_terminal() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let store = SqliteStore::new();
    // `script` gives the supervisor a terminal, as an operator's shell would.
    let line = format!(
        "{} run --store {} --name tty -- sh -c 'read answer; echo got:$answer'",
        crate::support::bin(),
        store.url
    );
    let mut script = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux");
    script.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let started = std::time::Instant::now();
    while script.try_wait().unwrap().is_none() {
        if started.elapsed() > 10 * SECOND {
            let _ = script.kill();
            panic!("the command could not read from the terminal (stopped by SIGTTIN?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = script.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("got:hello"), "{stdout}");
    assert!(output.status.success(), "{stdout}");
}

#[test]
fn a_mistyped_option_is_a_usage_error_but_the_command_keeps_its_own_options() {
    let store = SqliteStore::new();
    let ran = store.path("ran");
    let touch = ["touch", ran.to_str().unwrap()];
    for argv in [
        args(["run", "--nmae", "foo", "--"]),
        args(["run", "--name", "n", "--nmae", "foo", "--"]),
        args(["run", "--nmae=foo"]),
    ] {
        let done = Test::new()
            .store(&store.url)
            .args(&argv)
            .args(touch)
            .status(64);
        let line = done.one_line();
        assert!(
            line.starts_with("singleton: unexpected argument '--nmae"),
            "{line}"
        );
        assert!(
            line.contains("a similar argument exists: '--name'"),
            "{line}"
        );
        assert!(!ran.exists(), "{argv:?} ran the command");
    }
    Test::new()
        .store(&store.url)
        .args(["run", "-x", "true"])
        .status(64);

    let printed = |argv: &[&str]| Test::new().store(&store.url).args(argv).status(0).stdout;
    // Options after `--` or the first plain word belong to the command.
    assert_eq!(
        printed(&["run", "--name", "n", "--", "printf", "%s|", "-x", "--y"]),
        "-x|--y|"
    );
    assert_eq!(
        printed(&[
            "run", "--name", "n", "printf", "%s|", "-x", "--y", "--name", "z"
        ]),
        "-x|--y|--name|z|"
    );
    assert_eq!(
        printed(&["run", "--name", "n", "sh", "-c", "echo -n hi"]),
        "hi"
    );
    assert_eq!(
        printed(&["run", "--wait", "--timeout", "5s", "--", "echo", "waited"]),
        "waited\n"
    );
    // Commands named `-` or `-something`, after `--`.
    let bin = tempfile::tempdir().unwrap();
    for command in ["-", "-dash"] {
        let script = bin.path().join(command);
        std::fs::write(&script, "#!/bin/sh\necho \"$0\" \"$@\"\n").unwrap();
        let mut permissions = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&script, permissions).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for command in ["-", "-dash"] {
        let done = Test::new()
            .store(&store.url)
            .env("PATH", &path)
            .args(["run", "--name", "n", "--", command, "--x"])
            .status(0);
        assert_eq!(
            done.stdout,
            format!("{} --x\n", bin.path().join(command).display())
        );
    }
}

#[test]
fn labels_show_no_secrets_and_no_control_characters() {
    let store = SqliteStore::new();
    let name = unique("secret-label");
    let mut holder = Test::new()
        .store(&store.url)
        .args([
            "run",
            "--name",
            &name,
            "--",
            "sh",
            "-c",
            "sleep 30",
            "--password=hunter2",
            "postgres://u:urlsecret@db/x",
            "-pmysqlsecret",
        ])
        .spawn();
    holder.wait_held(&store.url, &name);
    let secrets = ["hunter2", "urlsecret", "mysqlsecret"];
    let masked = "sh -c sleep 30 --password=*** postgres://u:***@db/x -p***";
    let status = Test::new()
        .store(&store.url)
        .args(["status", &name])
        .status(0);
    assert!(
        status.stdout.contains(&format!("label:   {masked}\n")),
        "{}",
        status.stdout
    );
    let conflict = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--", "true"])
        .status(75);
    assert!(conflict.one_line().contains(masked), "{}", conflict.stderr);
    let list = Test::new().store(&store.url).args(["list"]).status(0);
    assert!(list.stdout.contains(masked), "{}", list.stdout);
    for output in [&status.stdout, &conflict.stderr, &list.stdout] {
        for secret in secrets {
            assert!(!output.contains(secret), "{secret} shown: {output}");
        }
    }

    // An explicit label is shown as given, but for its control characters.
    let name = unique("escape-label");
    let label = "nightly \u{1b}[2J\u{1b}]0;pwned\u{7} report\r\u{9b}31m";
    let mut labelled = Test::new()
        .store(&store.url)
        .args([
            "run", "--name", &name, "--label", label, "--", "sleep", "30",
        ])
        .spawn();
    labelled.wait_held(&store.url, &name);
    let shown = r"nightly \x1b[2J\x1b]0;pwned\x07 report\x0d\x9b31m";
    let status = Test::new()
        .store(&store.url)
        .args(["status", &name])
        .status(0);
    assert!(
        status.stdout.contains(&format!("label:   {shown}\n")),
        "{}",
        status.stdout
    );
    let conflict = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--", "true"])
        .status(75);
    // The line folds the CR into a space, as every message's line breaks.
    assert!(
        conflict
            .one_line()
            .contains(r"nightly \x1b[2J\x1b]0;pwned\x07 report \x9b31m"),
        "{}",
        conflict.stderr
    );
    let list = Test::new().store(&store.url).args(["list"]).status(0);
    for output in [&status.stdout, &conflict.stderr, &list.stdout] {
        assert!(
            !output.contains(['\u{1b}', '\u{7}', '\r', '\u{9b}']),
            "a control character reached the terminal: {output:?}"
        );
    }
    let json = Test::new()
        .store(&store.url)
        .args(["status", &name, "--json"])
        .status(0);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["lease"]["holder"]["label"], label, "JSON stays exact");
}

#[test]
fn a_store_url_that_fails_shows_no_part_of_its_password() {
    let done = Test::new()
        .args(["run", "--name", "x", "--", "true"])
        .store("postgres://u:p/ss@127.0.0.1:1/x")
        .status(69);
    let line = done.one_line();
    assert!(line.contains("postgres://u:***@127.0.0.1:1/x"), "{line}");
    assert!(!line.contains("ss"), "{line}");
    let done = Test::new()
        .args(["run", "--name", "x", "--", "true"])
        .store("host=db user=u password=secret dbname=x")
        .status(64);
    let line = done.one_line();
    assert!(line.contains("password=***"), "{line}");
    assert!(!line.contains("secret"), "{line}");
    for help in [&["--help"][..], &["run", "--help"]] {
        let done = Test::new()
            .store("postgres://u:helpsecret@db/x")
            .args(help)
            .status(0);
        assert!(done.stdout.contains("SINGLETON_STORE"), "{}", done.stdout);
        assert!(!done.stdout.contains("helpsecret"), "{}", done.stdout);
    }
}
