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
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for command in ["run", "lock", "leader"] {
        assert!(text.contains(&format!("\n  {command} ")), "{command} missing from:\n{text}");
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
fn an_unreachable_elector_fails_a_lock_with_its_url() {
    let out =
        mpsync(&["lock", "--elector", "http://127.0.0.1:1", "--ttl", "1s", "--timeout", "0s", "ok", "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("unavailable") && err.contains("http://127.0.0.1:1/v1/locks/ok"), "{err}");
}
