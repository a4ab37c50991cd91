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
        ("leader", &["0 once", "2 if"][..]),
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

/// `mpsync leader`'s names and endpoint-file flags are checked before
/// anything is sent (nothing listens on port 1), each refusal naming what
/// is wrong.
#[test]
fn leader_refuses_a_bad_name_or_flags_that_do_not_fit_before_anything_is_sent() {
    let dir = std::env::temp_dir().join(format!("mpsync-leader-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("names");
    std::fs::write(&list, "# shards\nshard-1\n\nShard_2\n").unwrap();
    let (list, dir_arg) = (list.display().to_string(), dir.display().to_string());
    let missing = dir.join("missing").display().to_string();
    let elector = ["leader", "--elector", "http://127.0.0.1:1"];
    let cases: [(&[&str], &str); 7] = [
        (&["Web"], "invalid election name \"Web\""),
        (&["ok", "--from-file", &list], "line 4: invalid election name \"Shard_2\""),
        (&[], "NAME"),
        (&["--watch", "--envoy-eds", "x.json", "--cluster", "c", "a", "b"], "--envoy-eds-dir DIR keeps one file each"),
        (&["--watch", "--envoy-eds-dir", &dir_arg, "--cluster-template", "shard", "a"], "must contain {name}"),
        (&["--watch", "--envoy-eds-dir", &missing, "a"], "is not a directory"),
        (&["--envoy-eds-dir", &dir_arg, "a"], "needs --watch"),
    ];
    for (args, says) in cases {
        let out = mpsync(&[&elector[..], args].concat());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says) && !err.contains("unavailable"), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
