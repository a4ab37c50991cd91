//! `mpsync leader`: the leaders of one or more elections, once or as they
//! change, and optionally as Envoy endpoint files.
//!
//! Every election is followed through one watch (`POST /v1/watch`), however
//! many there are: one long-poll parked at the elector per process, not one
//! per election. What is shown, and when a leader is dropped for want of
//! news, is the [`Board`]'s; this module moves the bytes.

use std::collections::HashSet;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use mpsync::eds::EdsFile;
use mpsync_client::{Client, ClientError, Kind, Leader, Read, Tracked, WatchAnswer};
use mpsync_core::client::http::rejection;
use mpsync_core::client::watch::{gone, read};
use mpsync_core::client::{Backoff, POLL_SLICE, retry_after};

use crate::board::{Board, Change};

/// The pauses between failed watches are those of a lease of this TTL:
/// from 100–200 ms, doubling, up to 1–2 s (never shorter than a 429's
/// `retry-after`).
const BACKOFF_TTL: Duration = Duration::from_secs(4);

/// The elections to follow, in the order given, each once.
pub struct Names {
    /// The names.
    pub list: Vec<String>,
    /// Lines start with the election's name: several were asked for (or a
    /// list was read from a file, whatever its length).
    pub prefixed: bool,
}

/// The names on the command line (already checked by the parser) and in
/// `from_file` (`-`: stdin; one a line, blank lines and `#` comments
/// skipped), checked before anything is sent.
pub fn names(args: Vec<String>, from_file: Option<&Path>) -> anyhow::Result<Names> {
    let prefixed = args.len() > 1 || from_file.is_some();
    let mut list = args;
    if let Some(path) = from_file {
        let text = if path == Path::new("-") {
            std::io::read_to_string(std::io::stdin()).context("reading election names from stdin")?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading election names from {}", path.display()))?
        };
        for (number, line) in text.lines().enumerate() {
            let name = line.trim();
            if name.is_empty() || name.starts_with('#') {
                continue;
            }
            mpsync_core::validate_name(name).map_err(|e| {
                let source = if path == Path::new("-") { "stdin".into() } else { path.display().to_string() };
                anyhow!("{source} line {}: invalid election name {name:?}: {e}", number + 1)
            })?;
            list.push(name.to_owned());
        }
    }
    let mut seen = HashSet::new();
    list.retain(|name| seen.insert(name.clone()));
    if list.is_empty() {
        bail!("no election to follow: name one or more, or give --from-file a file that lists some");
    }
    Ok(Names { list, prefixed })
}

/// The endpoint-file flags, as given.
pub struct EdsFlags {
    /// `--envoy-eds FILE`.
    pub file: Option<PathBuf>,
    /// `--cluster NAME`.
    pub cluster: Option<String>,
    /// `--envoy-eds-dir DIR`.
    pub dir: Option<PathBuf>,
    /// `--cluster-template TEMPLATE`.
    pub template: Option<String>,
}

/// The endpoint files the flags ask for, one per election in `names`
/// order, once the flags are known to fit together.
pub fn eds_files(flags: EdsFlags, names: &[String], watch: bool) -> anyhow::Result<Option<Vec<EdsFile>>> {
    let EdsFlags { file, cluster, dir, template } = flags;
    if file.is_none() && cluster.is_none() && dir.is_none() && template.is_none() {
        return Ok(None);
    }
    if let Some(dir) = dir {
        if !watch {
            bail!("--envoy-eds-dir needs --watch: the files must follow the leaders");
        }
        if !dir.is_dir() {
            bail!("--envoy-eds-dir {} is not a directory", dir.display());
        }
        let template = template.unwrap_or_else(|| "{name}".into());
        if !template.contains("{name}") {
            bail!(
                "--cluster-template {template:?} must contain {{name}}: each election's file is for a cluster of its own"
            );
        }
        let file = |name: &String| EdsFile::new(&dir.join(format!("{name}.json")), &template.replace("{name}", name));
        return names.iter().map(file).collect::<anyhow::Result<_>>().map(Some);
    }
    if template.is_some() {
        bail!("--cluster-template is for --envoy-eds-dir");
    }
    let Some(path) = file else { bail!("--cluster is for --envoy-eds") };
    if !watch {
        bail!("--envoy-eds needs --watch: the file must follow the leader");
    }
    let Some(cluster) = cluster else { bail!("--envoy-eds needs --cluster: the Envoy cluster the endpoints are for") };
    if names.len() > 1 {
        bail!("--envoy-eds FILE keeps one election's endpoints; for several, --envoy-eds-dir DIR keeps one file each");
    }
    Ok(Some(vec![EdsFile::new(&path, &cluster)?]))
}

/// What `mpsync leader` is asked to do.
pub struct Follow {
    /// The elector's URL.
    pub url: String,
    /// The elections.
    pub names: Names,
    /// Keep following, printing each change.
    pub watch: bool,
    /// One endpoint file per election, if asked for.
    pub eds: Option<Vec<EdsFile>>,
}

/// Prints the leader of each election (with `watch`, every change), keeping
/// the endpoint files in step.
pub async fn leader(follow: Follow) -> anyhow::Result<ExitCode> {
    let Follow { url, names, watch, eds } = follow;
    // Renewals are news here: each one vouches for its leader a lease
    // longer, which the files count on while the elector is out of reach.
    let watcher = format!("mpsync-leader-{}-{:016x}", std::process::id(), random());
    let mut tracked = Tracked::as_watcher(&watcher).with_renewals();
    for name in &names.list {
        tracked.follow(Kind::Election, name, 0);
    }
    let client = Client::new(&url);
    let board = Board::new(&names.list, Instant::now());
    let mut shown = Shown { board, out: Output { names: &names, eds: eds.as_deref() }, unreachable: false };
    // First what there is now (a watch answered at once), then every file
    // is written, even before the elector answers: Envoy refuses to start
    // without it. No answer: nobody leads as far as we know.
    let sent = Instant::now();
    let mut changes = Vec::new();
    match exchange(&client, &mut tracked, Duration::ZERO).await {
        Ok(answer) => changes = shown.hear(tracked.merge(answer), sent),
        Err(failed) if eds.is_some() && !failed.permanent => {
            eprintln!("mpsync: {}; no endpoint until the elector answers", failed.error);
            shown.unreachable = true;
        }
        Err(failed) => return Err(failed.error),
    }
    changes.extend(shown.board.settle());
    shown.out.show(changes)?;
    if !watch {
        return Ok(ExitCode::SUCCESS);
    }
    let mut backoff = Backoff::new(BACKOFF_TTL);
    loop {
        let sent = Instant::now();
        let pause = match shown.meanwhile(exchange(&client, &mut tracked, POLL_SLICE)).await? {
            Ok(answer) => {
                backoff.reset();
                shown.unreachable = false;
                // An elector that went back (restarted without its state)
                // is believed by `Tracked` once it says so twice in a row.
                let news = tracked.merge(answer);
                let changes = answered(&client, &mut tracked, &mut shown, news, sent).await?;
                shown.out.show(changes)?;
                None
            }
            Err(failed) if failed.permanent => return Err(failed.error),
            // Without an endpoint file, a watcher that cannot watch says
            // so and stops; one told to come back later (429) comes back.
            Err(failed) if eds.is_none() && !failed.busy => return Err(failed.error),
            Err(failed) => {
                shown.unreachable = !failed.busy;
                let pause = backoff.next(random(), failed.retry_after);
                eprintln!("mpsync: {}; trying again in {pause:?}", failed.error);
                Some(pause)
            }
        };
        if let Some(pause) = pause {
            shown.meanwhile(tokio::time::sleep(pause)).await?;
        }
    }
}

/// The changes `news` makes, from a watch sent at `sent`. A lease is
/// vouched for from when the request that reported it was sent; after a
/// watch parked for more than half of what a lease reported had left,
/// those leases are read again at once (one more watch, answered at once)
/// so that they are not dropped long before they run out.
async fn answered(
    client: &Client,
    tracked: &mut Tracked,
    shown: &mut Shown<'_>,
    news: Vec<(Kind, String, Read)>,
    sent: Instant,
) -> anyhow::Result<Vec<Change>> {
    let parked = sent.elapsed();
    let mut again = Tracked::new();
    for (kind, name, read) in &news {
        if let Read::Held(lease) = read
            && parked > Duration::from_millis(lease.expires_in_ms) / 2
        {
            again.follow(*kind, name, 0);
        }
    }
    let looked = match again.is_empty() {
        true => None,
        false => {
            let sent_again = Instant::now();
            shown.meanwhile(exchange(client, &mut again, Duration::ZERO)).await?.ok().map(|a| (a, sent_again))
        }
    };
    let mut changes = shown.hear(news, sent);
    if let Some((answer, sent_again)) = looked {
        for watched in &answer.changed {
            let known = tracked.version(watched.kind, &watched.name).unwrap_or(u64::MAX);
            if watched.version >= known {
                changes.extend(shown.board.heard(&watched.name, &read(watched.clone()), sent_again));
            }
        }
        tracked.merge(answer);
    }
    Ok(changes)
}

/// What `mpsync leader` shows, and where.
struct Shown<'a> {
    board: Board,
    out: Output<'a>,
    /// The last watch failed.
    unreachable: bool,
}

impl Shown<'_> {
    /// The board's changes for `news`, from a request sent at `sent`.
    fn hear(&mut self, news: Vec<(Kind, String, Read)>, sent: Instant) -> Vec<Change> {
        news.into_iter().filter_map(|(_, name, read)| self.board.heard(&name, &read, sent)).collect()
    }

    /// Runs `work`, dropping each leader from the board (and its file) the
    /// moment its lease may have run out meanwhile.
    async fn meanwhile<T>(&mut self, work: impl Future<Output = T>) -> anyhow::Result<T> {
        tokio::pin!(work);
        loop {
            let expiry = self.board.next_expiry();
            let until_expiry = async {
                match expiry {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                done = &mut work => return Ok(done),
                () = until_expiry => {
                    let dropped = self.board.expire(Instant::now());
                    // While the elector answers, it reports a lease running
                    // out itself, a moment later: nothing to say.
                    for change in dropped.iter().filter(|_| self.unreachable) {
                        eprintln!(
                            "mpsync: {}: the last leader's lease may have run out: {} until the elector answers",
                            self.out.names.list[change.index],
                            if self.out.eds.is_some() { "no endpoint" } else { "none" },
                        );
                    }
                    self.out.show(dropped)?;
                }
            }
        }
    }
}

/// A watch that failed.
struct Failed {
    error: anyhow::Error,
    /// The elector refused the request itself: sending it again cannot help.
    permanent: bool,
    /// 429: too many long-polls parked at the elector now.
    busy: bool,
    /// 410: the elector no longer keeps the set resumed.
    gone: bool,
    retry_after: Option<Duration>,
}

impl From<ClientError> for Failed {
    fn from(error: ClientError) -> Failed {
        Failed { error: error.into(), permanent: false, busy: false, gone: false, retry_after: None }
    }
}

/// One watch over every election followed, waiting up to `slice`: the
/// kept set resumed if there is one, and the whole set at once if this
/// elector no longer keeps it (410).
async fn exchange(client: &Client, tracked: &mut Tracked, slice: Duration) -> Result<WatchAnswer, Failed> {
    let resumed = tracked.resumes();
    match ask(client, tracked, slice).await {
        Err(failed) if failed.gone && resumed => ask(client, tracked, slice).await,
        answer => answer,
    }
}

async fn ask(client: &Client, tracked: &mut Tracked, slice: Duration) -> Result<WatchAnswer, Failed> {
    let reply = client.call(&tracked.request(slice)).await.inspect_err(|_| tracked.failed())?;
    let status = reply.status.as_u16();
    let answer = tracked.decode(status, &reply.body);
    if let Some(refused) = rejection(status, &reply.body) {
        let error = anyhow!("the elector at {} refused the watch: {refused}", client.base());
        return Err(Failed { error, permanent: true, busy: false, gone: false, retry_after: None });
    }
    let retry_after = reply.headers.get("retry-after").and_then(|v| retry_after(v.as_bytes()));
    answer.map_err(|error| Failed {
        busy: status == 429,
        gone: gone(&error),
        retry_after,
        ..Failed::from(ClientError::Answer { url: client.base().to_owned(), error })
    })
}

/// Where changes go: each election's file first, then its line.
struct Output<'a> {
    names: &'a Names,
    eds: Option<&'a [EdsFile]>,
}

impl Output<'_> {
    fn show(&self, mut changes: Vec<Change>) -> anyhow::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        changes.sort_by_key(|c| c.index);
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        for change in changes {
            if let Some(file) = self.eds.and_then(|files| files.get(change.index)) {
                file.write(change.leader.as_ref(), change.version)?;
            }
            let line = leader_line(change.leader.as_ref());
            if self.names.prefixed {
                writeln!(stdout, "{} {line}", self.names.list[change.index])?;
            } else {
                writeln!(stdout, "{line}")?;
            }
        }
        stdout.flush().context("writing to stdout")
    }
}

fn leader_line(leader: Option<&Leader>) -> String {
    match leader {
        Some(l) => format!("{} {} {}", l.id, l.address.as_deref().unwrap_or("-"), l.token),
        None => "none".into(),
    }
}

/// A random number (backoff jitter, the watcher's id).
fn random() -> u64 {
    use std::hash::BuildHasher;
    std::hash::RandomState::new().hash_one(Instant::now())
}
