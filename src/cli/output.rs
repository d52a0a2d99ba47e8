//! What the tool prints: one human line per event on stderr, or one JSON object per line with
//! `--json`. Stdout belongs to the wrapped command; only `status` and `list` print there.
//!
//! Names, labels and host names come from the store, where any host or tool may have written
//! them: human output shows each control character in them (ESC, CR, BEL, C1 controls…) as an
//! escape such as `\x1b`, so that they cannot move the cursor, rewrite a line or drive the
//! terminal of whoever reads it. JSON output keeps them exact (JSON escapes them itself).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;
use std::time::SystemTime;

use serde_json::{Map, Value, json};
use singleton_process::{Error, Event, LastRun, Lease};

#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
    verbose: bool,
    quiet_conflicts: bool,
}

impl Output {
    pub fn new(json: bool, verbose: bool) -> Self {
        Output {
            json,
            verbose,
            quiet_conflicts: false,
        }
    }

    /// Shows conflicts only with `--verbose` or `--json`: for `run --conflict-exit 0`, where
    /// meeting a holder is the expected outcome (cron mails whatever a job prints).
    pub fn quiet_conflicts(mut self, quiet: bool) -> Self {
        self.quiet_conflicts = quiet;
        self
    }

    /// A library event; in human mode only notable ones unless `--verbose`.
    pub fn event(&self, event: &Event) {
        let expected = self.quiet_conflicts && matches!(event, Event::Conflict { .. });
        if !self.json && !self.verbose && (!event.is_notable() || expected) {
            return;
        }
        let fields = serde_json::to_value(event).unwrap_or(Value::Null);
        self.line(fields, &event.to_string(), event.is_notable());
    }

    /// An event of the supervisor itself (`started`, `signal`, `terminating`, `exited`, ...).
    pub fn note(&self, kind: &str, mut fields: Value, message: &str, notable: bool) {
        if let Value::Object(map) = &mut fields {
            map.insert("event".into(), kind.into());
        }
        self.line(fields, message, notable);
    }

    pub fn error(&self, err: &Error) {
        self.line(json!({ "event": "failed" }), &err.to_string(), true);
    }

    fn line(&self, fields: Value, message: &str, notable: bool) {
        // Some drivers' errors span lines; a message is always one line.
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        let message = message.as_str();
        let mut stderr = std::io::stderr().lock();
        if self.json {
            let mut object = Map::new();
            object.insert(
                "time".into(),
                humantime::format_rfc3339_millis(SystemTime::now())
                    .to_string()
                    .into(),
            );
            if let Value::Object(fields) = fields {
                object.extend(fields);
            }
            object.insert("message".into(), message.into());
            let _ = writeln!(stderr, "{}", Value::Object(object));
        } else if notable || self.verbose {
            let _ = writeln!(stderr, "singleton: {}", printable(message));
        }
    }

    /// `status NAME`: the live lease and the last run, either of which may be missing.
    pub fn status(&self, name: &str, lease: Option<&Lease>, last_run: Option<&LastRun>) {
        let after_run = lease.is_some_and(|lease| last_run.is_some_and(|run| run.holds(lease)));
        if self.json {
            let value = json!({
                "name": name,
                "held": lease.is_some(),
                "held_after_run": after_run,
                "lease": lease,
                "last_run": last_run,
            });
            say!("{value}");
            return;
        }
        match lease {
            Some(lease) => {
                let expires = match lease.expires {
                    Some(at) => {
                        format!("{} (store time)", humantime::format_rfc3339_millis(at))
                    }
                    None => "never".to_owned(),
                };
                if after_run {
                    say!("{}: held after its run (--hold-at-least)", printable(name));
                } else {
                    say!("{}: held", printable(name));
                }
                say!("  holder:  {}", printable(&lease.holder.id));
                say!("  label:   {}", printable(&lease.holder.label));
                say!("  host:    {}", printable(&lease.holder.host));
                say!("  pid:     {}", lease.holder.pid);
                say!(
                    "  since:   {}",
                    humantime::format_rfc3339_millis(lease.created)
                );
                say!("  expires: {expires}");
                say!("  token:   {}", lease.token);
            }
            None => say!("{}: free", printable(name)),
        }
        match last_run {
            Some(run) => {
                say!("last run: {}", run.outcome);
                say!("  holder:  {}", printable(&run.holder.id));
                say!("  label:   {}", printable(&run.holder.label));
                say!("  host:    {}", printable(&run.holder.host));
                say!("  pid:     {}", run.holder.pid);
                say!("  token:   {}", run.token);
                say!(
                    "  started: {} (store time)",
                    humantime::format_rfc3339_millis(run.started)
                );
                match run.ended {
                    Some(at) => say!(
                        "  ended:   {} (store time)",
                        humantime::format_rfc3339_millis(at)
                    ),
                    None => say!("  ended:   unknown"),
                }
            }
            None => say!("last run: none on record"),
        }
    }

    pub fn list(&self, leases: &[Lease]) {
        if self.json {
            say!("{}", serde_json::to_value(leases).unwrap_or(Value::Null));
        } else {
            for lease in leases {
                say!("{}", printable(&format!("{}: {lease}", lease.name)));
            }
        }
    }

    /// `list --all`: every name with a live lease or a last run, in name order, with both.
    pub fn list_all(&self, leases: &[Lease], runs: &[LastRun]) {
        let mut names: Vec<&str> = leases
            .iter()
            .map(|l| l.name.as_str())
            .chain(runs.iter().map(|r| r.name.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut rows = Vec::new();
        for name in names {
            let lease = leases.iter().find(|l| l.name == name);
            let run = runs.iter().find(|r| r.name == name);
            if self.json {
                rows.push(json!({
                    "name": name,
                    "held": lease.is_some(),
                    "lease": lease,
                    "last_run": run,
                }));
                continue;
            }
            let mut line = match lease {
                Some(lease) => format!("{name}: {lease}"),
                None => format!("{name}: free"),
            };
            if let Some(run) = run {
                let _ = write!(line, "; last run: {run}");
            }
            say!("{}", printable(&line));
        }
        if self.json {
            say!("{}", Value::Array(rows));
        }
    }

    pub fn force_released(&self, name: &str, removed: Option<&Lease>) {
        let message = match removed {
            Some(lease) => format!("force-released {name:?}, which was {lease}"),
            None => format!("{name:?} was not held; nothing released"),
        };
        self.note(
            "force_released",
            json!({ "name": name, "lease": removed }),
            &message,
            true,
        );
    }
}

/// `text` with each control character shown as `\xNN` (its code point), for a terminal.
pub(super) fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(shown, "\\x{:02x}", u32::from(c));
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("plain ü 🦀"), "plain ü 🦀");
        assert_eq!(
            printable("a\u{1b}[2Jb\rc\u{7}\u{7f}\u{9b}d\n"),
            "a\\x1b[2Jb\\x0dc\\x07\\x7f\\x9bd\\x0a"
        );
    }
}
