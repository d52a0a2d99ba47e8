//! The history checker: every holder's child appends JSON lines (`start`/`stop` with its pid,
//! fencing token and a nanosecond timestamp) to a log; the checker asserts that no two holders'
//! intervals overlap and that tokens strictly increase in the order the holders ran.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Test;

/// One holder's time with the lease, as its child recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub pid: u64,
    pub token: u64,
    pub start_ns: u128,
    pub end_ns: u128,
}

/// A `sh -c` script that records its interval in `$LOG`, holding the lease for `hold`.
pub fn recording_script(hold: Duration) -> String {
    let record = |event: &str| {
        format!(
            r#"printf '{{"event":"{event}","pid":%s,"token":%s,"ns":%s}}\n' "$$" "$SINGLETON_TOKEN" "$(date +%s%N)" >> "$LOG""#
        )
    };
    format!(
        "{}; sleep {}; {}",
        record("start"),
        hold.as_secs_f64(),
        record("stop")
    )
}

/// Reads the intervals from the logs.
pub fn read(logs: &[PathBuf]) -> Vec<Interval> {
    let mut open = std::collections::HashMap::new();
    let mut intervals = Vec::new();
    for log in logs {
        let Ok(text) = std::fs::read_to_string(log) else {
            continue;
        };
        for line in text.lines() {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{log:?}: {e}: {line}"));
            let pid = value["pid"].as_u64().expect("pid");
            let token = value["token"].as_u64().expect("token");
            let ns: u128 = value["ns"]
                .to_string()
                .trim_matches('"')
                .parse()
                .expect("ns");
            match value["event"].as_str() {
                Some("start") => {
                    open.insert((pid, token), ns);
                }
                Some("stop") => {
                    let start_ns = open.remove(&(pid, token)).expect("stop without start");
                    intervals.push(Interval {
                        pid,
                        token,
                        start_ns,
                        end_ns: ns,
                    });
                }
                other => panic!("unknown event {other:?}"),
            }
        }
    }
    assert!(
        open.is_empty(),
        "holders that started but never stopped: {open:?}"
    );
    intervals
}

/// Asserts no two intervals overlap and tokens strictly increase in start order.
pub fn check(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.sort_by_key(|i| i.start_ns);
    for pair in intervals.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.end_ns <= b.start_ns,
            "two holders at once: {a:?} overlaps {b:?}"
        );
        assert!(
            a.token < b.token,
            "fencing tokens must strictly increase: {a:?} then {b:?}"
        );
    }
    intervals
}

/// `processes` concurrent loops of `rounds` × `singleton run --wait` on one name; checks the
/// history and returns it.
pub fn race(store: &str, dir: &Path, processes: usize, rounds: usize) -> Vec<Interval> {
    let name = super::unique("race");
    let script = recording_script(Duration::from_millis(20));
    let logs: Vec<PathBuf> = (0..processes)
        .map(|i| dir.join(format!("race-{i}.log")))
        .collect();
    std::thread::scope(|scope| {
        for log in &logs {
            let (name, script) = (&name, &script);
            scope.spawn(move || {
                for _ in 0..rounds {
                    Test::new()
                        .store(store)
                        .env("LOG", log)
                        .args(["run", "--name", name, "--wait", "--timeout", "120s", "--"])
                        .args(["sh", "-c", script])
                        .status(0);
                }
            });
        }
    });
    let intervals = check(read(&logs));
    assert_eq!(
        intervals.len(),
        processes * rounds,
        "every run must have held the lease once"
    );
    intervals
}
