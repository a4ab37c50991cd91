//! `mpsync ls`: the locks and elections the elector keeps, or (`--history`)
//! their changes of holder.

use std::process::ExitCode;

use mpsync_client::Client;
use mpsync_core::history::Entry;
use mpsync_core::wire::{Kind, RecordView};

use crate::cli::Listing;

/// `mpsync ls`: every page of each listing, then one table (or JSON lines).
pub async fn ls(url: &str, what: Option<Listing>, held: bool, page_size: u16, json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::new(url);
    let kinds = match what {
        None => vec![Kind::Lock, Kind::Election],
        Some(Listing::Locks) => vec![Kind::Lock],
        Some(Listing::Elections) => vec![Kind::Election],
    };
    let mut rows = Vec::new();
    for kind in kinds {
        let mut cursor = None;
        loop {
            let page = client.list(kind, usize::from(page_size), cursor.as_deref()).await?;
            let is_held = |r: &RecordView| r.holder.is_some() || !r.shares.is_empty();
            rows.extend(page.items.into_iter().filter(|r| !held || is_held(r)).map(|r| (kind, r)));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    if json {
        for (kind, record) in &rows {
            let mut value = serde_json::to_value(record)?;
            value["kind"] = serde_json::Value::from(kind.singular());
            println!("{value}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = vec![["KIND", "NAME", "HOLDER", "TOKEN", "TIME LEFT", "ADDRESS", "WAITING"].map(String::from)];
    for (kind, r) in &rows {
        let left = r.expires_in_ms.map_or("-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        table.push([
            kind.singular().to_owned(),
            r.name.clone(),
            holders(r),
            r.token.to_string(),
            left,
            r.address.clone().unwrap_or_else(|| "-".to_owned()),
            waiting(r),
        ]);
    }
    print_table(&table);
    Ok(ExitCode::SUCCESS)
}

/// The exclusive holder; or the shared holders, each with its permit on a
/// semaphore (`a[0] b[1] (2 of 3)`), readers marked `(shared)`.
fn holders(r: &RecordView) -> String {
    if let Some(holder) = &r.holder {
        return holder.clone();
    }
    if r.shares.is_empty() {
        return "-".to_owned();
    }
    let names: Vec<String> = r
        .shares
        .iter()
        .map(|s| match s.permit {
            Some(p) => format!("{}[{p}]", s.holder),
            None => s.holder.clone(),
        })
        .collect();
    match r.permits {
        Some(n) => format!("{} ({} of {n})", names.join(" "), r.shares.len()),
        None => format!("{} (shared)", names.join(" ")),
    }
}

/// How many wait, and who, in order: `3: b c* d` (`*`: waits to share).
fn waiting(r: &RecordView) -> String {
    if r.waiting == 0 {
        return "-".to_owned();
    }
    let names: Vec<String> =
        r.line.iter().map(|w| if w.shared { format!("{}*", w.holder) } else { w.holder.clone() }).collect();
    let more = if (r.line.len() as u64) < r.waiting { " …" } else { "" };
    format!("{}: {}{more}", r.waiting, names.join(" "))
}

/// `mpsync ls --history [NAME]`: the changes of holder of one name (of
/// `what` kinds), or the recent ones across names; a table, or one JSON
/// object per line (the API's entries).
pub async fn history(url: &str, what: Option<Listing>, name: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::new(url);
    let kinds = match what {
        None => vec![Kind::Lock, Kind::Election],
        Some(Listing::Locks) => vec![Kind::Lock],
        Some(Listing::Elections) => vec![Kind::Election],
    };
    let mut changes: Vec<Entry> = Vec::new();
    match &name {
        Some(name) => {
            for &kind in &kinds {
                changes.extend(client.name_history(kind, name).await?.changes);
            }
            changes.sort_by_key(|e| e.seq);
        }
        None => {
            let mut after = 0;
            loop {
                let page = client.history(after, 1000).await?;
                if page.changes.is_empty() {
                    break;
                }
                after = page.next;
                changes.extend(page.changes.into_iter().filter(|e| kinds.contains(&e.kind)));
            }
        }
    }
    if json {
        for entry in &changes {
            println!("{}", serde_json::to_string(entry)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = vec![["AT", "KIND", "NAME", "FROM", "TO", "TOKEN", "WHY", "ADDRESS"].map(String::from)];
    let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_owned());
    for e in &changes {
        table.push([
            e.at.clone(),
            e.kind.singular().to_owned(),
            e.name.clone(),
            or_dash(&e.from),
            or_dash(&e.to),
            e.token.to_string(),
            e.why.map_or("-", mpsync_core::Why::as_str).to_owned(),
            or_dash(&e.address),
        ]);
    }
    print_table(&table);
    Ok(ExitCode::SUCCESS)
}

/// Left-aligned columns, two spaces apart.
fn print_table<const N: usize>(table: &[[String; N]]) {
    let widths: Vec<usize> =
        (0..N).map(|c| table.iter().map(|row| row[c].chars().count()).max().unwrap_or(0)).collect();
    for row in table {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
}
