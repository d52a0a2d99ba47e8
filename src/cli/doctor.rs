//! `singleton doctor`: the store's settings, one line per check, on stdout.

use singleton_process::Error;
use singleton_process::doctor::{self, Report, Status};

use super::exit;
use super::output::printable;

/// Examines the store at `url` and prints the report; exits [`exit::CHECK_FAILED`] when a
/// check failed.
pub async fn run(url: &str, json: bool) -> Result<i32, Error> {
    super::refuse_memory(url)?;
    let store = doctor::open(url).await?;
    let report = doctor::examine(&*store).await?;
    print(&report, json);
    Ok(match report.status {
        Status::Fail => exit::CHECK_FAILED,
        Status::Ok | Status::Warn => 0,
    })
}

fn print(report: &Report, json: bool) {
    if json {
        say!(
            "{}",
            serde_json::to_value(report).unwrap_or(serde_json::Value::Null)
        );
        return;
    }
    for check in &report.checks {
        // The store's own words (versions, names) are in there.
        say!("{}", printable(&check.to_string()));
    }
    let count = |status| {
        report
            .checks
            .iter()
            .filter(|check| check.status == status)
            .count()
    };
    say!(
        "{}: {} fail, {} warn, {} ok",
        printable(&report.store),
        count(Status::Fail),
        count(Status::Warn),
        count(Status::Ok)
    );
}
