//! The `mpsync` binary's command line, where only the process can tell:
//! help, exit codes and one-line errors for bad input. Everything that
//! needs an elector runs in `e2e/`.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn mpsync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mpsync")).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_names_every_command() {
    let out = mpsync(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for command in ["run", "lock", "elect", "leader", "ls"] {
        assert!(text.contains(&format!("\n  {command} ")), "{command} missing from:\n{text}");
    }
}

/// The exit codes a script can act on, as each command's help lists them
/// (the tests below and in `e2e/` get each of them).
#[test]
fn help_lists_every_exit_code() {
    let commands = [
        ("run", &["2 ", "143 "][..]),
        ("lock", &["2 if", "3 if", "4 if", "143 "][..]),
        ("elect", &["2 if", "143 "][..]),
    ];
    for (command, codes) in commands {
        let out = mpsync(&[command, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
        let exits = text.split("Exits with").nth(1).and_then(|t| t.split("Usage:").next());
        let exits = exits.unwrap_or_else(|| panic!("{command}: no exit codes in:\n{text}"));
        for code in codes {
            assert!(exits.contains(code), "{command} --help does not list {code:?}: {exits}");
        }
    }
}

#[test]
fn a_missing_app_is_reported_as_unreadable_with_exit_code_2() {
    let out = mpsync(&["run", "/nonexistent/app.wasm"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("cannot read /nonexistent/app.wasm"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_bad_lock_name_is_refused_before_anything_is_sent() {
    // Port 1 on loopback: nothing listens, and nothing may be tried.
    let out = mpsync(&["lock", "--elector", "http://127.0.0.1:1", "Bad_Name", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("invalid name") && !err.contains("unavailable"), "{err}");
}

#[test]
fn an_elector_that_stays_unreachable_fails_a_lock_with_exit_code_2_and_its_url() {
    // Retried for one TTL (1 s), then reported.
    let out = mpsync(&["lock", "--elector", "http://127.0.0.1:1", "--ttl", "1s", "ok", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("unavailable") && err.contains("http://127.0.0.1:1/v1/locks/ok"), "{err}");
}
