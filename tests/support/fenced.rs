//! A fenced resource for fault tests: the jobs write to it with their `$SINGLETON_TOKEN`, and it
//! rejects any write whose token is lower than the highest it has accepted, as a database or an
//! API that honours fencing tokens would. Every attempt is logged, accepted or not, in the order
//! the resource decided on it (under `flock`).

use std::path::{Path, PathBuf};

/// One write attempt as the resource logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub token: u64,
    pub ns: u128,
    pub accepted: bool,
}

/// The resource: a directory with the highest accepted token and the log of attempts.
pub struct Fenced {
    dir: PathBuf,
}

impl Fenced {
    pub fn new(dir: &Path) -> Self {
        let dir = dir.join("fenced");
        std::fs::create_dir_all(&dir).expect("fenced resource dir");
        Fenced { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A shell function `write_fenced` for job scripts; it needs `$RES` set to [`Self::dir`].
    /// The highest token is replaced by a rename, as a writer killed half-way (the fault tests
    /// SIGKILL jobs) must not leave it empty: an empty one rejected the next current write.
    pub fn shell_function() -> &'static str {
        r#"write_fenced() { flock "$RES/lock" sh -c '
  max=$(cat "$RES/max" 2>/dev/null || echo 0)
  if [ "$SINGLETON_TOKEN" -ge "$max" ]; then
    echo "$SINGLETON_TOKEN" > "$RES/max.new" && mv "$RES/max.new" "$RES/max"; ok=true
  else
    ok=false
  fi
  printf "{\"token\":%s,\"ns\":%s,\"accepted\":%s}\n" "$SINGLETON_TOKEN" "$(date +%s%N)" "$ok" >> "$RES/writes"'; }"#
    }

    /// Every attempt, in the order the resource decided on them.
    pub fn writes(&self) -> Vec<Write> {
        let text = std::fs::read_to_string(self.dir.join("writes")).unwrap_or_default();
        text.lines()
            .map(|line| {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                Write {
                    token: v["token"].as_u64().expect("token"),
                    ns: v["ns"].to_string().parse().expect("ns"),
                    accepted: v["accepted"].as_bool().expect("accepted"),
                }
            })
            .collect()
    }

    /// Asserts that the resource never accepted a stale write: accepted tokens never go down,
    /// and every rejected write carried a token below one already accepted. Returns the writes.
    pub fn check(&self) -> Vec<Write> {
        let writes = self.writes();
        let mut highest = 0;
        for write in &writes {
            if write.accepted {
                assert!(
                    write.token >= highest,
                    "stale write accepted: token {} after {highest}",
                    write.token
                );
                highest = write.token;
            } else {
                assert!(
                    write.token < highest,
                    "a current write was rejected: {write:?}"
                );
            }
        }
        writes
    }
}
