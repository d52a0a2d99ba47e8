//! Operators' tools: `--version`, the examples in every command's `--help`, shell completions
//! and man pages.

use crate::support::Test;

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
