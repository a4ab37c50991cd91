//! `wac-plug SOCKET --plug PLUG... -o OUT`: plugs the exports of each PLUG
//! component into the matching imports of SOCKET, as `wac plug` does, with
//! the wac-graph library (no wac CLI to install). scripts/build-wasm.sh
//! composes each app with the sync-guest component this way.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions};

/// Plugs components into a component's imports (wac plug).
#[derive(Parser)]
#[command(name = "wac-plug", version)]
struct Args {
    /// The component whose imports are satisfied.
    socket: PathBuf,
    /// A component whose exports satisfy them; more than one may be given.
    #[arg(long = "plug", required = true, value_name = "PLUG")]
    plugs: Vec<PathBuf>,
    /// Where the composed component is written.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut graph = CompositionGraph::new();
    let socket = std::fs::read(&args.socket).with_context(|| format!("reading {}", args.socket.display()))?;
    let socket = Package::from_bytes("socket", None, socket, graph.types_mut())
        .with_context(|| format!("{} is not a component", args.socket.display()))?;
    let socket = graph.register_package(socket)?;
    let mut plugs = Vec::new();
    for (i, path) in args.plugs.iter().enumerate() {
        let name = format!("plug:plug{i}");
        let package = Package::from_file(&name, None, path, graph.types_mut())
            .with_context(|| format!("{} is not a component", path.display()))?;
        plugs.push(graph.register_package(package)?);
    }
    wac_graph::plug(&mut graph, plugs, socket).context("plugging")?;
    let bytes = graph.encode(EncodeOptions::default()).context("encoding the composition")?;
    std::fs::write(&args.output, bytes).with_context(|| format!("writing {}", args.output.display()))?;
    Ok(())
}
