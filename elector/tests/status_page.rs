//! The status page (`GET /status`): its headers and its absence from the
//! probe port, and the page itself in a real headless Chromium, driven
//! over WebDriver by Debian's chromedriver: it shows a lock this test
//! takes, then the lock's hand-over, live, without a reload.

#![allow(clippy::unwrap_used, missing_docs)]

#[allow(unused_macros)]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, PATIENCE, acquire, granted};
use elector::service::Service;
use elector::store::MemoryStore;
use hyper::{Method, StatusCode};
use mpsync_client::Client;
use mpsync_core::wire::Kind;
use serde_json::{Value, json};
use testkit::elector::ElectorProcess;
use testkit::proc::Proc;

/// The page names its elector and store, and comes with a policy that
/// allows no inline script and no other origin, on the API port; the
/// probe port (`--health-listen`), open to the pod network, has none of it.
#[tokio::test]
async fn the_status_page_is_on_the_api_port_only_and_comes_with_a_strict_policy() {
    // An identity with markup in it (the binary would refuse it; the page
    // must not depend on that).
    let service = Arc::new(Service::new(Arc::new(MemoryStore::new()), "pod-7 <b>&".into(), Duration::from_secs(30)));
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (api_url, health_url) =
        (format!("http://{}", api.local_addr().unwrap()), format!("http://{}", health.local_addr().unwrap()));
    tokio::spawn(elector::run(api, service.clone(), std::future::pending()));
    let limits = elector::server::Limits::default();
    tokio::spawn(elector::server::serve_health(health, service, limits, std::future::pending()));

    let (api, probes) = (Client::new(&api_url), Client::new(&health_url));
    for (path, content_type) in
        [("/status", "text/html"), ("/status.js", "text/javascript"), ("/status.css", "text/css")]
    {
        let reply = api.request(Method::GET, path, None::<&()>).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let header = |name: &str| reply.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(header("content-type").starts_with(content_type), "{path}: {}", header("content-type"));
        assert_eq!(header("content-security-policy"), elector::status::CONTENT_SECURITY_POLICY, "{path}");
        assert!(header("content-security-policy").starts_with("default-src 'self'"), "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("cache-control"), "no-store", "{path}");
        let probe = probes.request(Method::GET, path, None::<&()>).await.unwrap();
        assert_eq!(probe.status, StatusCode::NOT_FOUND, "{path} must not be on the probe port");
    }
    let page =
        String::from_utf8(api.request(Method::GET, "/status", None::<&()>).await.unwrap().body.to_vec()).unwrap();
    assert!(page.contains("pod-7 &lt;b&gt;&amp;") && !page.contains("<b>&"), "the identity is text:\n{page}");
    assert!(page.contains(r#"<b id="store">memory</b>"#), "{page}");
}

/// The page in Chromium: the lock `db` taken as alice shows in its row;
/// released and taken as bob, the row shows bob and the hand-overs a
/// release by alice, while a marker set in the page's `window` stays (a
/// reload would clear it). The last view is kept as a screenshot in
/// `target/status-page.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_hand_over_live_without_a_reload() {
    let backend = Backend::start("memory").await;
    let (elector, client) = backend.elector("status-test", &[]).await;
    let alice = granted(&client, "db", &acquire("alice", 60_000)).await;

    let browser = Browser::start().await;
    browser.open(&format!("{}/status", elector.url())).await;
    let holder = r#"#locks tr[data-name="db"] td.holder"#;
    browser.await_text(holder, "alice").await;
    browser.await_text("#conn", "live").await;
    browser.execute("window.__marker = 1;").await;

    assert!(client.release(Kind::Lock, "db", "alice", alice.token).await.unwrap());
    let bob = granted(&client, "db", &acquire("bob", 60_000)).await;
    browser.await_text(holder, "bob").await;
    browser.await_text(r#"#locks tr[data-name="db"] td.token"#, &bob.token.to_string()).await;
    browser.await_text(r#"#changes tr[data-name="db"][data-why="released"] td.who"#, "alice → nobody").await;
    browser.await_text(r#"#changes tr[data-name="db"][data-why="acquired"] td.who"#, "nobody → bob").await;
    assert_eq!(browser.execute("return window.__marker;").await, json!(1), "the page was reloaded");

    // The listing after the hand-over brings the time left; the history,
    // the time held.
    let cell = |column: &str| format!(r#"document.querySelector('#locks tr[data-name="db"] td.{column}').textContent"#);
    let counted = format!(r"/^[0-9.]+ s$/.test({}) && /^[0-9.]+ s$/.test({})", cell("left"), cell("held"));
    browser.await_true(&counted, "bob's time left and time held counted").await;

    let shot = testkit::profile_dir().parent().map(|target| target.join("status-page.png")).unwrap();
    browser.screenshot(&shot).await;
    eprintln!("screenshot: {}", shot.display());
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
    browser.quit().await;
}

/// The elector gone, the page says it is reconnecting and keeps the rows
/// it last saw; back on the same port (a fresh memory elector, whose
/// history starts again), the page is live again without a reload, marks
/// the gap in the hand-overs and follows the new elector's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_reconnects_when_the_elector_comes_back() {
    let mut args = Backend::Memory.args();
    args.extend(["--identity".to_owned(), "status-test".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut elector = ElectorProcess::spawn(common::BIN, &args).await.unwrap();
    let client = Client::new(&elector.url());
    granted(&client, "db", &acquire("alice", 60_000)).await;

    let browser = Browser::start().await;
    browser.open(&format!("{}/status", elector.url())).await;
    let holder = r#"#locks tr[data-name="db"] td.holder"#;
    browser.await_text(holder, "alice").await;
    browser.await_text("#conn", "live").await;
    browser.execute("window.__marker = 1;").await;

    let addr = elector.addr();
    elector.signal("KILL").unwrap();
    elector.wait().await.unwrap();
    browser.await_text("#conn", "reconnecting…").await;
    browser.await_true("!document.getElementById('problem').hidden", "the problem shown").await;
    browser.await_text(holder, "alice").await;

    let elector = ElectorProcess::spawn_on(common::BIN, &args, addr).await.unwrap();
    browser.await_text("#conn", "live").await;
    browser.await_true("document.querySelector('#changes tr.gap') !== null", "the gap marked").await;
    granted(&Client::new(&elector.url()), "db", &acquire("carol", 60_000)).await;
    browser.await_text(holder, "carol").await;
    browser.await_text(r#"#changes tr[data-name="db"][data-why="acquired"] td.who"#, "nobody → carol").await;
    assert_eq!(browser.execute("return window.__marker;").await, json!(1), "the page was reloaded");
    browser.quit().await;
}

/// A headless Chromium under chromedriver, one WebDriver session. Dropped,
/// it takes both down (chromedriver's process group) and the profile.
struct Browser {
    webdriver: Client,
    session: String,
    profile: PathBuf,
    driver: Option<Proc>,
}

impl Browser {
    async fn start() -> Browser {
        for tool in ["chromium", "chromedriver"] {
            assert!(
                on_path(tool),
                "{tool} is missing: run scripts/setup.sh (it installs Debian's chromium and chromium-driver)"
            );
        }
        // chromedriver picks a free port itself and says which.
        let mut driver = Proc::spawn("chromedriver", "chromedriver", &["--port=0".to_owned()]);
        let line = driver.expect_line("started successfully on port").await;
        let port: u16 = line
            .rsplit(' ')
            .next()
            .and_then(|p| p.trim_end_matches('.').parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        let profile = testkit::temp_dir("chromium").unwrap();
        let mut browser = Browser {
            webdriver: Client::new(&format!("http://127.0.0.1:{port}")),
            session: String::new(),
            profile,
            driver: Some(driver),
        };
        let args = [
            "--headless=new".to_owned(),
            // As root (containers, CI) Chromium starts only without its sandbox.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            // Nothing but the elector: no update checks, no sync, no first-run page.
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-breakpad".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", browser.profile.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": args},
            // The console, for errors: a script error, or anything the
            // page's own policy refused.
            "goog:loggingPrefs": {"browser": "SEVERE"},
        }}});
        let session = browser.send(Method::POST, "/session", Some(capabilities)).await;
        browser.session = session["sessionId"].as_str().expect("a session id").to_owned();
        let timeouts = json!({"script": PATIENCE.as_millis() as u64, "pageLoad": PATIENCE.as_millis() as u64});
        browser.call(Method::POST, "/timeouts", Some(timeouts)).await;
        browser
    }

    /// A WebDriver command of this session (`path` after `/session/{id}`).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.send(method, &format!("/session/{}{path}", self.session), body).await
    }

    async fn try_send(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        // Starting Chromium on a busy machine is the slowest command.
        let bound = PATIENCE * 3;
        let reply = tokio::time::timeout(bound, self.webdriver.request(method.clone(), path, body.as_ref()))
            .await
            .unwrap_or_else(|_| panic!("chromedriver did not answer {method} {path} within {bound:?}"))
            .unwrap_or_else(|e| panic!("chromedriver: {method} {path}: {e}"));
        let answer: Value = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&reply.body)));
        if reply.status.is_success() {
            Ok(answer["value"].clone())
        } else {
            // The first line of chromedriver's message; its stack trace is
            // addresses only.
            let message = answer["value"]["message"].as_str().unwrap_or_default().lines().next().unwrap_or_default();
            Err(format!("{method} {path}: {} {}", reply.status, message))
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.try_send(method, path, body).await.unwrap_or_else(|e| panic!("{e}"))
    }

    async fn open(&self, url: &str) {
        self.call(Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    async fn execute(&self, script: &str) -> Value {
        self.call(Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// Waits, on the page's own mutations, until an element matching
    /// `selector` has exactly `text`.
    async fn await_text(&self, selector: &str, text: &str) {
        let (selector, text) = (json!(selector), json!(text));
        let predicate =
            format!("Array.from(document.querySelectorAll({selector})).some((e) => e.textContent === {text})");
        self.await_true(&predicate, &format!("{selector} showing {text}")).await;
    }

    /// Waits, on the page's own mutations, until the JavaScript expression
    /// `predicate` is true; fails with the page's text when it is not
    /// within [`PATIENCE`] (the script timeout).
    async fn await_true(&self, predicate: &str, what: &str) {
        let script = format!(
            r#"
            const done = arguments[arguments.length - 1];
            const ok = () => {{ try {{ return {predicate}; }} catch (_) {{ return false; }} }};
            if (ok()) return done(true);
            const observer = new MutationObserver(() => {{
                if (ok()) {{ observer.disconnect(); done(true); }}
            }});
            observer.observe(document.documentElement, {{ subtree: true, childList: true, characterData: true }});
            "#
        );
        let path = format!("/session/{}/execute/async", self.session);
        if let Err(e) = self.try_send(Method::POST, &path, Some(json!({"script": script, "args": []}))).await {
            let page = self.execute("return document.body.innerText;").await;
            panic!("never {what} ({e}); the page shows:\n{}", page.as_str().unwrap_or_default());
        }
    }

    /// The errors in the page's console (chromedriver's log endpoint),
    /// but for the favicon the elector does not serve.
    async fn console_errors(&self) -> Vec<String> {
        let log = self.call(Method::POST, "/se/log", Some(json!({"type": "browser"}))).await;
        let entries = log.as_array().cloned().unwrap_or_default();
        entries
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .filter_map(|e| e["message"].as_str().map(str::to_owned))
            .filter(|m| !m.contains("/favicon.ico"))
            .collect()
    }

    /// Ends the session: chromedriver closes Chromium itself (the drop
    /// that follows kills whatever is left, as on every other way out).
    async fn quit(self) {
        self.call(Method::DELETE, "", None).await;
    }

    async fn screenshot(&self, path: &Path) {
        let png = self.call(Method::GET, "/screenshot", None).await;
        let bytes = base64_decode(png.as_str().expect("a base64 screenshot"));
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Proc's drop kills chromedriver's process group, which holds the
        // Chromium it started; the profile goes after them.
        drop(self.driver.take());
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Standard base64 (the WebDriver screenshot), without a crate for it.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {:?}", c as char),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, d) in chunk.iter().enumerate() {
            n |= u32::from(*d) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
