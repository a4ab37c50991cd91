//! `mpsync ls`: the locks and elections the elector keeps.

use std::process::ExitCode;

use mpsync_client::Client;
use mpsync_core::wire::Kind;

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
            rows.extend(page.items.into_iter().filter(|r| !held || r.holder.is_some()).map(|r| (kind, r)));
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
    let mut table = vec![["KIND", "NAME", "HOLDER", "TOKEN", "TIME LEFT", "ADDRESS"].map(String::from)];
    for (kind, r) in &rows {
        let left = r.expires_in_ms.map_or("-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        table.push([
            kind.singular().to_owned(),
            r.name.clone(),
            r.holder.clone().unwrap_or_else(|| "-".to_owned()),
            r.token.to_string(),
            left,
            r.address.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    let widths: Vec<usize> =
        (0..6).map(|c| table.iter().map(|row| row[c].chars().count()).max().unwrap_or(0)).collect();
    for row in &table {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}
