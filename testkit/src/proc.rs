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

/// Bound on a process's first line when it starts by compiling a large
/// component on a cold cache.
pub const STARTUP: Duration = Duration::from_secs(600);

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
        Proc::spawn_with_env(name, program, args, &[])
    }

    /// `spawn`, with environment variables of its own.
    pub fn spawn_with_env(name: &str, program: &str, args: &[String], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .env("MPSYNC_CACHE_DIR", cache_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
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
        self.expect_on_within(PATIENCE, what, pred).await
    }

    async fn expect_on_within(&mut self, patience: Duration, what: &str, pred: impl Fn(bool, &str) -> bool) -> String {
        let found = tokio::time::timeout(patience, async {
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
    /// Waits for a line containing `needle` from a process that may first
    /// compile a large component (a JavaScript or Python one takes tens of
    /// seconds on a cold cache).
    pub async fn expect_first_line(&mut self, needle: &str) -> String {
        self.expect_on_within(STARTUP, needle, |_, l| l.contains(needle)).await
    }

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

    /// Sends `sig` to the process alone.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("process already exited");
        let ok = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
        assert!(ok.success(), "kill -{sig} {pid}");
    }

    /// Sends `sig` to the process and everything it started (its process
    /// group: `jco run`, for one, runs the component in a child `node`).
    pub fn signal_group(&self, sig: &str) {
        let pid = self.child.id().expect("process already exited");
        let group = format!("-{pid}");
        let ok = std::process::Command::new("kill").arg(format!("-{sig}")).arg("--").arg(&group).status().unwrap();
        assert!(ok.success(), "kill -{sig} -- {group}");
    }

    /// Waits for the process's exit alone: what it started may keep its
    /// output open (then [`wait`](Self::wait) would wait for that too).
    pub async fn exit(&mut self) -> ExitStatus {
        tokio::time::timeout(PATIENCE, self.child.wait()).await.expect("process did not exit").unwrap()
    }

    pub async fn wait(&mut self) -> ExitStatus {
        let status = self.exit().await;
        // Let the readers flush what the process wrote last.
        while let Some(line) = self.lines.recv().await {
            drop(line);
        }
        status
    }
}

impl Drop for Proc {
    /// Whatever the process started goes with it.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        }
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

/// Takes the one long-poll an elector started with `--max-long-polls 1`
/// allows: a long-poll on a name that never changes, parked when this
/// returns (every other long-poll is then refused with 429). Abort the task
/// to give the slot back.
pub async fn park_the_only_long_poll(elector: &ElectorProcess) -> tokio::task::JoinHandle<String> {
    let url = format!("{}/v1/locks/parked?wait=0&timeout_ms=60000", elector.url());
    let parked = tokio::spawn(async move { get(&url).await });
    tokio::time::timeout(PATIENCE, async {
        // Asked every 20 ms: the parking happens in another process.
        while metric(elector, "mpsync_watchers").await < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the long-poll never parked");
    parked
}

/// Who runs a test app, and with which `metaparticle:sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `mpsync run APP.wasm`: the host's own imports.
    Native,
    /// `mpsync run --no-sync-imports APP.portable.wasm`: the app composed
    /// with `sync-guest`, nothing of metaparticle:sync linked.
    Portable,
    /// The composition under the stock `wasmtime run -S http`: the
    /// wasmtime CLI that `tools/` builds with the workspace (the
    /// `wasmtime` binary of this build, beside `mpsync`).
    Wasmtime,
    /// The composition transpiled to JavaScript and run on Node by `jco
    /// run` (`.tools/jco`).
    Jco,
}

/// A command line from string slices.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Whether `line` is `mpsync elect`'s "leading with token N".
pub fn is_leading(line: &str) -> bool {
    line.starts_with("leading with token ")
}

/// The token in `mpsync elect`'s "leading with token N" line.
pub fn leading(line: &str) -> u64 {
    line.strip_prefix("leading with token ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// A tool `scripts/setup.sh` installs into `.tools/`.
pub fn tool(path: &str) -> String {
    let bin = crate::workspace().join(".tools").join(path);
    assert!(bin.is_file(), "{} is missing: run scripts/setup.sh (make test does)", bin.display());
    bin.display().to_string()
}

/// Runs the app `app` (`lock`, `election`, `probe`: its `APP.wasm` or
/// `APP.portable.wasm`) with `args` under `provider`, talking to the
/// elector at `url`.
pub fn app(provider: Provider, name: &str, url: &str, app: &str, args: &[&str]) -> Proc {
    let env = format!("MPSYNC_ELECTOR={url}");
    let portable = format!("{app}.portable.wasm");
    let rest = || args.iter().map(|s| s.to_string());
    match provider {
        Provider::Native => Proc::run(name, url, &[], &format!("{app}.wasm"), args),
        Provider::Portable => Proc::run(name, url, &["--no-sync-imports", "--env", &env], &portable, args),
        Provider::Wasmtime => {
            let mut cli: Vec<String> = ["run", "-S", "http", "--env", &env].map(String::from).into();
            cli.push(wasm(&portable).display().to_string());
            cli.extend(rest());
            Proc::spawn(name, &crate::bin("wasmtime").display().to_string(), &cli)
        }
        Provider::Jco => {
            // jco hands its own environment to the component.
            let mut cli = vec!["run".to_owned(), wasm(&portable).display().to_string()];
            cli.extend(rest());
            Proc::spawn_with_env(name, &tool("jco/node_modules/.bin/jco"), &cli, &[("MPSYNC_ELECTOR", url)])
        }
    }
}
