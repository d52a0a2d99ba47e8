//! What the tool prints: one human line per event on stderr, or one JSON object per line with
//! `--json`. Stdout belongs to the wrapped command; only `status` and `list` print there.

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
            let _ = writeln!(stderr, "singleton: {message}");
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
                    println!("{name}: held");
                    println!("  holder:  {}", lease.holder.id);
                    println!("  label:   {}", lease.holder.label);
                    println!("  host:    {}", lease.holder.host);
                    println!("  pid:     {}", lease.holder.pid);
                    println!(
                        "  since:   {}",
                        humantime::format_rfc3339_millis(lease.created)
                    );
                    println!("  expires: {expires}");
                    println!("  token:   {}", lease.token);
                }
                None => println!("{name}: free"),
            }
        }
    }

    pub fn list(&self, leases: &[Lease]) {
        if self.json {
            println!("{}", serde_json::to_value(leases).unwrap_or(Value::Null));
        } else {
            for lease in leases {
                println!("{}: {lease}", lease.name);
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
