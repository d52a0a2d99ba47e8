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
use singleton_process::{Error, Event, Lease};

#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
    verbose: bool,
}

impl Output {
    pub fn new(json: bool, verbose: bool) -> Self {
        Output { json, verbose }
    }

    /// A library event; in human mode only notable ones unless `--verbose`.
    pub fn event(&self, event: &Event) {
        if !self.json && !self.verbose && !event.is_notable() {
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

    pub fn status(&self, name: &str, lease: Option<&Lease>) {
        if self.json {
            let value = json!({ "name": name, "held": lease.is_some(), "lease": lease });
            println!("{value}");
        } else {
            match lease {
                Some(lease) => {
                    let expires = match lease.expires {
                        Some(at) => {
                            format!("{} (store time)", humantime::format_rfc3339_millis(at))
                        }
                        None => "never".to_owned(),
                    };
                    println!("{}: held", printable(name));
                    println!("  holder:  {}", printable(&lease.holder.id));
                    println!("  label:   {}", printable(&lease.holder.label));
                    println!("  host:    {}", printable(&lease.holder.host));
                    println!("  pid:     {}", lease.holder.pid);
                    println!(
                        "  since:   {}",
                        humantime::format_rfc3339_millis(lease.created)
                    );
                    println!("  expires: {expires}");
                    println!("  token:   {}", lease.token);
                }
                None => println!("{}: free", printable(name)),
            }
        }
    }

    pub fn list(&self, leases: &[Lease]) {
        if self.json {
            println!("{}", serde_json::to_value(leases).unwrap_or(Value::Null));
        } else {
            for lease in leases {
                println!("{}", printable(&format!("{}: {lease}", lease.name)));
            }
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
fn printable(text: &str) -> Cow<'_, str> {
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
