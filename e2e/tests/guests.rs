//! The host's promises about guests: background renewal, loss seen before
//! acting after a freeze, cleanup after traps, limits, plain errors, and
//! every WIT function.

#![allow(clippy::unwrap_used, missing_docs)]

use mpsync_client::{Client, Read};
use mpsync_core::Kind;
use testkit::proc::{Proc, elector, metric, token, wasm};

#[tokio::test]
async fn a_busy_guest_keeps_its_lock_through_background_renewal() {
    let elector = elector().await;
    let mut busy = Proc::run(
        "busy",
        &elector.url(),
        &[],
        "probe.wasm",
        &["--mode", "busy", "--ttl-ms", "1000", "--busy-ms", "3000"],
    );
    let got = busy.expect_line("I have the lock!").await;
    let line = busy.expect(": still held or lost", |l| l.contains("busy loop")).await;
    assert!(line.starts_with("still held after busy loop"), "{line}");
    assert_eq!(token(&line), token(&got));
    assert!(metric(&elector, "mpsync_renewals_total{kind=\"lock\"}").await >= 3);
    assert_eq!(metric(&elector, "mpsync_expiries_total{kind=\"lock\"}").await, 0);
}

#[tokio::test]
async fn a_frozen_host_learns_it_lost_the_lock_before_it_acts_again() {
    let elector = elector().await;
    let url = elector.url();
    let args = ["--mode", "work", "--name", "frozen", "--id", "frozen", "--ttl-ms", "1500"];
    let mut frozen = Proc::run("frozen", &url, &[], "probe.wasm", &args);
    let first = frozen.expect_line("I have the lock!").await;
    frozen.expect_line("working with fencing token").await;
    frozen.signal("STOP");
    assert!(!frozen.output().contains("I lost the lock"), "lost before the freeze:\n{}", frozen.output());
    let mut thief = Proc::run(
        "thief",
        &url,
        &[],
        "lock.wasm",
        &["--name", "frozen", "--id", "thief", "--ttl-ms", "600", "--hold-ms", "3000"],
    );
    let stolen = thief.expect_line("I have the lock!").await;
    assert!(token(&stolen) > token(&first));
    // Lines written before the freeze have long been read by now.
    frozen.drain();
    frozen.signal("CONT");
    let next = frozen.next_stdout_line().await;
    assert!(next.starts_with("I lost the lock!"), "after SIGCONT the guest acted first: {next:?}");
    assert!(frozen.wait().await.success());
}

#[tokio::test]
async fn a_trapping_guest_releases_its_lock() {
    let elector = elector().await;
    let mut trap = Proc::run(
        "trap",
        &elector.url(),
        &[],
        "probe.wasm",
        &["--mode", "trap", "--name", "trapped", "--ttl-ms", "60000"],
    );
    trap.expect_line("I have the lock!").await;
    let status = trap.wait().await;
    assert_eq!(status.code(), Some(2), "{}", trap.output());
    assert!(trap.output().contains("the guest trapped"), "{}", trap.output());
    // Released at once, not 60 s later.
    let read = Client::new(&elector.url()).read(Kind::Lock, "trapped", None).await.unwrap();
    assert!(matches!(read, Read::Free { .. }), "{read:?}");
    assert_eq!(metric(&elector, "mpsync_releases_total{kind=\"lock\"}").await, 1);
}

#[tokio::test]
async fn a_guest_over_its_memory_bound_is_stopped_with_a_clear_error() {
    let elector = elector().await;
    let mut hog = Proc::run("hog", &elector.url(), &["--max-memory", "64MiB"], "probe.wasm", &["--mode", "memory"]);
    let status = hog.wait().await;
    assert_eq!(status.code(), Some(2));
    assert!(hog.output().contains("past the limit of 67108864 bytes (--max-memory)"), "{}", hog.output());
}

#[tokio::test]
async fn a_guest_over_its_cpu_bound_is_stopped_with_a_clear_error() {
    let elector = elector().await;
    let mut spin = Proc::run("spin", &elector.url(), &["--max-cpu", "300ms"], "probe.wasm", &["--mode", "cpu"]);
    let status = spin.wait().await;
    assert_eq!(status.code(), Some(2));
    assert!(spin.output().contains("CPU limit of 300ms (--max-cpu)"), "{}", spin.output());
}

#[tokio::test]
async fn files_that_are_not_command_components_are_refused_plainly() {
    let dir = std::env::temp_dir().join(format!("mpsync-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("notes.wasm");
    std::fs::write(&text, "not wasm").unwrap();
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let cases = [
        (text.display().to_string(), "is not a WebAssembly file"),
        (core.display().to_string(), "is a core WebAssembly module, not a component"),
        (wasm("sync_guest.wasm").display().to_string(), "does not export wasi:cli/run"),
    ];
    for (path, expected) in cases {
        let mut p = Proc::mpsync("bad", &["run".into(), path.clone()]);
        let status = p.wait().await;
        assert_eq!(status.code(), Some(2), "{path}");
        assert!(p.output().contains(expected), "{path}: {}", p.output());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_guest_gets_its_arguments_environment_and_preopened_directories() {
    let elector = elector().await;
    let dir = std::env::temp_dir().join(format!("mpsync-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello from the host\n").unwrap();
    let mount = format!("{}::/data", dir.display());
    let mut p = Proc::run(
        "io",
        &elector.url(),
        &["--env", "GREETING=hi", "--dir", &mount],
        "probe.wasm",
        &["--mode", "io", "extra"],
    );
    assert!(p.wait().await.success(), "{}", p.output());
    let out = p.output();
    assert!(out.contains(r#"args: ["probe.wasm", "--mode", "io", "extra"]"#), "{out}");
    assert!(out.contains("env GREETING=hi"), "{out}");
    assert!(out.contains("read /data/hello.txt: hello from the host"), "{out}");
    assert_eq!(std::fs::read_to_string(dir.join("out.txt")).unwrap(), "written by the guest");
    std::fs::remove_dir_all(dir).unwrap();
}
