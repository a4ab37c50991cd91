//! Real processes for the end-to-end tests: the elector and `mpsync`
//! running the example components, with their output lines awaited as
//! events.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, missing_docs)]

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::elector::ElectorProcess;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Bound on waiting for something that should happen in well under a
/// second; reaching it means it never came.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The `mpsync` binary of this build.
pub fn mpsync() -> PathBuf {
    crate::bin("mpsync")
}

/// Where `scripts/build-wasm.sh` put the components.
pub fn wasm(name: &str) -> PathBuf {
    let dir = std::env::var_os("MPSYNC_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::profile_dir().join("../wasm32-wasip2/release"));
    let path = dir.join(name);
    assert!(path.is_file(), "{} is missing: run scripts/build-wasm.sh (make test does)", path.display());
    path
}

pub async fn elector() -> ElectorProcess {
    ElectorProcess::spawn(crate::bin("elector"), &["--log", "warn", "--identity", "test-elector"]).await.unwrap()
}

/// A running process whose stdout and stderr lines arrive as events.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<tokio::process::ChildStdin>,
    lines: mpsc::UnboundedReceiver<(bool, String)>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// `mpsync ARGS…`.
    pub fn mpsync(name: &str, args: &[String]) -> Proc {
        Proc::spawn(name, &mpsync().display().to_string(), args)
    }

    /// `mpsync run --elector URL [EXTRA…] APP ARGS…`.
    pub fn run(name: &str, elector: &str, extra: &[&str], app: &str, args: &[&str]) -> Proc {
        let mut all: Vec<String> = vec!["run".into(), "--elector".into(), elector.into()];
        all.extend(extra.iter().map(|s| s.to_string()));
        all.push(wasm(app).display().to_string());
        all.extend(args.iter().map(|s| s.to_string()));
        Proc::mpsync(name, &all)
    }

    pub fn spawn(name: &str, program: &str, args: &[String]) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .env("MPSYNC_CACHE_DIR", cache_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let streams = [
            (true, Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            (false, Box::new(child.stderr.take().unwrap())),
        ];
        for (stdout, stream) in streams {
            let (tx, seen, name) = (tx.clone(), seen.clone(), name.to_owned());
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    eprintln!("[{name}] {line}");
                    seen.lock().unwrap().push(line.clone());
                    let _ = tx.send((stdout, line));
                }
            });
        }
        Proc { name: name.to_owned(), child, stdin, lines, seen }
    }

    /// Writes `line` and a newline to the process's stdin: the cue for a
    /// test app that waits for one.
    pub async fn send_line(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits for the next line (stdout or stderr) that satisfies `pred`.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.expect_on(what, |_, line| pred(line)).await
    }

    async fn expect_on(&mut self, what: &str, pred: impl Fn(bool, &str) -> bool) -> String {
        let found = tokio::time::timeout(PATIENCE, async {
            while let Some((stdout, line)) = self.lines.recv().await {
                if pred(stdout, &line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("{}: no line {what:?}; output so far:\n{}", self.name, self.output()),
        }
    }

    /// Waits for a line containing `needle`.
    pub async fn expect_line(&mut self, needle: &str) -> String {
        self.expect(needle, |l| l.contains(needle)).await
    }

    /// The guest's next line on stdout, whatever it is.
    pub async fn next_stdout_line(&mut self) -> String {
        self.expect_on("a line on stdout", |stdout, _| stdout).await
    }

    /// Forgets lines not yet consumed by `expect`, without waiting.
    pub fn drain(&mut self) {
        while self.lines.try_recv().is_ok() {}
    }

    pub fn output(&self) -> String {
        self.seen.lock().unwrap().join("\n")
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("process already exited");
        let ok = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
        assert!(ok.success(), "kill -{sig} {pid}");
    }

    pub async fn wait(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(PATIENCE, self.child.wait()).await.expect("process did not exit").unwrap();
        // Let the readers flush what the process wrote last.
        while let Some(line) = self.lines.recv().await {
            drop(line);
        }
        status
    }
}

/// One compilation cache for the whole test run (inside the target dir).
pub fn cache_dir() -> PathBuf {
    crate::profile_dir().join("../tmp/mpsync-cache")
}

/// The fencing token in a line like "… (fencing token 7)".
pub fn token(line: &str) -> u64 {
    let tail = line.split("fencing token ").nth(1).unwrap_or_else(|| panic!("no token in {line:?}"));
    tail.trim_end_matches(|c: char| !c.is_ascii_digit())
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A metric's value from the elector's /metrics.
pub async fn metric(elector: &ElectorProcess, name: &str) -> u64 {
    let text = get(&format!("{}/metrics", elector.url())).await;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in metrics:\n{text}"))
}

/// The body of `GET url` (plain `http://`), as text.
pub async fn get(url: &str) -> String {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<hyper::body::Bytes>>();
    let uri: hyper::Uri = url.parse().unwrap();
    let reply = tokio::time::timeout(PATIENCE, client.get(uri)).await.expect("no answer").unwrap();
    let body = reply.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}
