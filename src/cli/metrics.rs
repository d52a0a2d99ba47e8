//! `run --metrics-file PATH`: the run's outcome in Prometheus' text exposition format, for
//! node_exporter's textfile collector.
//!
//! Each run replaces the whole file, so it describes the last run on this host only, and every
//! metric is a gauge: a counter of losses across runs would need the previous file, which
//! another copy of the job, a deleted file or a new host would reset without Prometheus being
//! able to tell. The file is written to a temporary file in the same directory (whose name does
//! not end in `.prom`, so the collector never reads it half-written) and renamed over PATH.
//!
//! The text is written here rather than with a Prometheus client crate: it is seven gauges in a
//! format that is stable and simple, while the clients bring registries, atomics and
//! OpenMetrics output that the textfile collector does not need.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use singleton_process::{BootInstant, Error};

/// Where the run's metrics go: a file whose directory was found writable at start.
#[derive(Debug)]
pub struct MetricsFile {
    path: PathBuf,
    dir: PathBuf,
}

impl MetricsFile {
    /// Checks, before any lease is taken, that a file can be made beside PATH: a directory
    /// that does not exist or cannot be written is a usage error now rather than a warning
    /// after the job ran.
    pub fn new(path: &Path) -> Result<MetricsFile, Error> {
        let unusable = |why: String| Error::InvalidOptions {
            reason: format!("--metrics-file {}: {why}", path.display()),
        };
        if path.is_dir() {
            return Err(unusable("is a directory".into()));
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(unusable(format!("no such directory: {}", dir.display())));
        }
        temporary_file(&dir)
            .map_err(|e| unusable(format!("cannot create a file in {}: {e}", dir.display())))?;
        Ok(MetricsFile {
            path: path.to_owned(),
            dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file with `run`'s metrics in one rename.
    pub fn write(&self, run: &RunMetrics) -> std::io::Result<()> {
        let mut file = temporary_file(&self.dir)?;
        file.write_all(run.render().as_bytes())?;
        file.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// A temporary file in `dir`, removed unless persisted; readable by all like any file the user
/// makes (the umask applies), so that node_exporter's own user can read it.
fn temporary_file(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".singleton-metrics-")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
}

/// What a run of `singleton run` did, as its metrics file shows it.
#[derive(Debug)]
pub struct RunMetrics {
    name: String,
    host: String,
    started: SystemTime,
    started_boot: BootInstant,
    ended: Option<(SystemTime, Duration)>,
    /// The lease was acquired (and so the command was started, or found the lease already
    /// run out).
    pub acquired: bool,
    /// Another holder had the lease: the conflict exit, or a `--wait --timeout` that ran out.
    pub conflict: bool,
    /// The lease was lost while the command ran (or before it could start), or the release
    /// found it no longer ours.
    pub lost: bool,
    exit_code: i32,
}

impl RunMetrics {
    /// A run that starts now.
    pub fn start(name: String, host: String) -> Self {
        RunMetrics {
            name,
            host,
            started: SystemTime::now(),
            started_boot: BootInstant::now(),
            ended: None,
            acquired: false,
            conflict: false,
            lost: false,
            exit_code: 0,
        }
    }

    /// The run ends now with `exit_code`.
    pub fn end(&mut self, exit_code: i32) {
        self.exit_code = exit_code;
        let took = BootInstant::now().saturating_duration_since(self.started_boot);
        self.ended = Some((SystemTime::now(), took));
    }

    /// The file's text: `# HELP`, `# TYPE` and one sample per metric, labelled `name` and
    /// `host`.
    fn render(&self) -> String {
        let (ended, took) = self
            .ended
            .unwrap_or_else(|| (SystemTime::now(), Duration::ZERO));
        let flag = |set: bool| if set { 1.0 } else { 0.0 };
        let metrics: [(&str, &str, f64); 7] = [
            (
                "singleton_last_start_timestamp_seconds",
                "When the last singleton run started, in seconds since the Unix epoch (this host's clock).",
                unix_seconds(self.started),
            ),
            (
                "singleton_last_end_timestamp_seconds",
                "When the last singleton run ended, in seconds since the Unix epoch (this host's clock).",
                unix_seconds(ended),
            ),
            (
                "singleton_last_duration_seconds",
                "How long the last singleton run took from its start to its exit, waiting for the lease included.",
                milliseconds(took),
            ),
            (
                "singleton_last_exit_code",
                "The exit code of the last singleton run: the command's own, 128+N for signal N, or singleton's (75 conflict, 76 lease lost, 124 wait timed out, 69 store error).",
                f64::from(self.exit_code),
            ),
            (
                "singleton_last_acquired",
                "1 if the last singleton run acquired the lease, 0 if not.",
                flag(self.acquired),
            ),
            (
                "singleton_last_conflict",
                "1 if the last singleton run met another holder and did not run the command (conflict, or --wait --timeout ran out), 0 if not.",
                flag(self.conflict),
            ),
            (
                "singleton_last_lost",
                "1 if the last singleton run lost its lease and its command was stopped, 0 if not.",
                flag(self.lost),
            ),
        ];
        let labels = format!(
            "name=\"{}\",host=\"{}\"",
            label_value(&self.name),
            label_value(&self.host)
        );
        let mut text = String::new();
        for (metric, help, value) in metrics {
            let _ = writeln!(text, "# HELP {metric} {help}");
            let _ = writeln!(text, "# TYPE {metric} gauge");
            let _ = writeln!(text, "{metric}{{{labels}}} {value}");
        }
        text
    }
}

fn unix_seconds(at: SystemTime) -> f64 {
    milliseconds(
        at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// Seconds to the millisecond: all a cron job's metrics need, and a number that reads well.
fn milliseconds(duration: Duration) -> f64 {
    (duration.as_millis() as f64) / 1000.0
}

/// A label value as the text format writes it between quotes: `\`, `"` and line feeds escaped.
fn label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(label_value("two\nlines"), r"two\nlines");
        assert_eq!(label_value("plain ü"), "plain ü");
    }

    #[test]
    fn every_metric_has_help_type_and_one_labelled_sample() {
        let mut run = RunMetrics::start("nightly \"db\"".into(), "web-1".into());
        run.acquired = true;
        run.end(3);
        let text = run.render();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(samples.len(), 7, "{text}");
        for sample in samples {
            let (metric, rest) = sample.split_once('{').expect("labels");
            assert!(metric.starts_with("singleton_"), "{sample}");
            assert!(text.contains(&format!("# HELP {metric} ")), "{text}");
            assert!(text.contains(&format!("# TYPE {metric} gauge\n")), "{text}");
            assert!(
                rest.starts_with(r#"name="nightly \"db\"",host="web-1"} "#),
                "{sample}"
            );
        }
        assert!(text.contains("\nsingleton_last_exit_code{"), "{text}");
        assert!(text.contains("} 3\n"), "{text}");
    }
}
