//! `mpsync leader`: the leader of an election, once or as it changes, and
//! optionally as an Envoy endpoint file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use mpsync::eds::EdsFile;
use mpsync_client::{Client, Read};
use mpsync_core::wire::Kind;

fn leader_line(read: &Read) -> String {
    match read {
        Read::Held(l) => format!("{} {} {}", l.holder, l.address.as_deref().unwrap_or("-"), l.token),
        Read::Free { .. } => "none".into(),
    }
}

/// Prints the leader of `name` (with `watch`, every change), keeping `eds`
/// in step.
pub async fn leader(url: &str, name: &str, watch: bool, eds: Option<EdsFile>) -> anyhow::Result<ExitCode> {
    mpsync_core::validate_name(name).map_err(|e| anyhow!("invalid election name {name:?}: {e}"))?;
    let client = Client::new(url);
    let mut sent = Instant::now();
    let mut read = match client.read(Kind::Election, name, None).await {
        Ok(read) => read,
        // An endpoint file is written at once, even before the elector
        // answers (Envoy refuses to start without it): no leader yet.
        Err(e) if eds.is_some() => {
            eprintln!("mpsync: {e}; no endpoint until the elector answers");
            Read::Free { version: 0 }
        }
        Err(e) => return Err(e.into()),
    };
    // What the endpoint file says, and until when that may be trusted
    // without hearing from the elector: the lease's expiry, counted from
    // when the read was sent. The file is written before the line is
    // printed, so a line means the file says the same.
    let mut written = read.leader();
    let mut trusted_until = valid_until(&read, sent);
    if let Some(file) = &eds {
        file.write(written.as_ref(), read.version())?;
    }
    println!("{}", leader_line(&read));
    if !watch {
        return Ok(ExitCode::SUCCESS);
    }
    let mut pause = Duration::from_millis(100);
    loop {
        sent = Instant::now();
        let next = match client.read(Kind::Election, name, Some((read.version(), Duration::from_secs(60)))).await {
            Ok(next) => next,
            Err(e) => {
                // Without an endpoint file, a watcher that cannot watch
                // says so and stops. With one, it keeps trying, and once
                // the last leader's lease may have run out it routes to
                // nobody rather than to a leader it can no longer vouch for.
                let Some(file) = &eds else { return Err(e.into()) };
                eprintln!("mpsync: {e}; trying again in {pause:?}");
                if written.is_some() && Instant::now() >= trusted_until {
                    eprintln!(
                        "mpsync: the last leader's lease may have run out: no endpoint until the elector answers"
                    );
                    file.write(None, read.version())?;
                    written = None;
                    println!("none");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        pause = Duration::from_millis(100);
        trusted_until = valid_until(&next, sent);
        let leader = next.leader();
        if leader != written {
            if let Some(file) = &eds {
                file.write(leader.as_ref(), next.version())?;
            }
            println!("{}", leader_line(&next));
            written = leader;
        }
        read = next;
    }
}

/// Until when a read sent at `sent` vouches for its leader.
fn valid_until(read: &Read, sent: Instant) -> Instant {
    match read {
        Read::Held(view) => sent + Duration::from_millis(view.expires_in_ms),
        Read::Free { .. } => sent,
    }
}

/// The endpoint file `--envoy-eds FILE --cluster NAME` asks for, if any,
/// once the flags are known to fit together.
pub fn eds_file(envoy_eds: Option<PathBuf>, cluster: Option<String>, watch: bool) -> anyhow::Result<Option<EdsFile>> {
    match (envoy_eds, cluster) {
        (Some(_), _) if !watch => Err(anyhow!("--envoy-eds needs --watch: the file must follow the leader")),
        (Some(path), Some(cluster)) => EdsFile::new(&path, &cluster).map(Some),
        (Some(_), None) => Err(anyhow!("--envoy-eds needs --cluster: the Envoy cluster the endpoints are for")),
        (None, Some(_)) => Err(anyhow!("--cluster is for --envoy-eds")),
        (None, None) => Ok(None),
    }
}
