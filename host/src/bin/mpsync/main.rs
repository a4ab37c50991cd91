//! `mpsync`: run wasm apps with metaparticle:sync, hold a lock around a
//! command, or watch an election.
//!
//! - `cli`: the command line, its help texts and value parsers.
//! - `run`, `lock`, `elect`, `leader`, `ls`: one module per command;
//!   `transfer`: `leader --transfer-to`/`--transfer-away`;
//!   `health`: `elect`'s health check; `board`: who `leader` shows leading
//!   each election, and until when it can vouch for them.
//! - `signal`: the SIGTERM/SIGINT waiter `run`, `lock` and `elect` share.
//!
//! The hidden `__watchdog` command (which `mpsync lock` starts between
//! itself and its command) runs before any runtime exists: it forks the
//! command, and a fork is only safe to work in while the process has a
//! single thread. Every other command runs on the tokio runtime built here.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mpsync::runtime::{RunOptions, hostname};
use mpsync_client::{Client, Options};

mod board;
mod cli;
mod elect;
mod health;
mod leader;
mod lock;
mod ls;
mod run;
mod signal;
mod transfer;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Watchdog { control, grace_ms, deadline_ns, session_fd, command } = &cli.command {
        let grace = Duration::from_millis(*grace_ms);
        let code = mpsync::watchdog::run(control, grace, Duration::from_nanos(*deadline_ns), *session_fd, command);
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(command(cli.command)),
        Err(e) => Err(anyhow::anyhow!("starting the async runtime: {e}")),
    };
    result.unwrap_or_else(|e| {
        eprintln!("mpsync: {e:#}");
        ExitCode::from(2)
    })
}

/// Runs one command; an error is reported by `main` with exit code 2.
async fn command(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { elector, session, env, dirs, max_memory, max_cpu, no_sync_imports, no_cache, app, args } => {
            let options = RunOptions {
                elector: elector.elector,
                sessions: !session.no_session,
                args,
                env,
                dirs,
                max_memory,
                max_cpu,
                link_sync: !no_sync_imports,
                program: app.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                stop: None,
            };
            run::run(&app, options, !no_cache).await
        }
        Command::Lock { elector, session, ttl, timeout, holder, shared, permits, grace, name, command } => {
            let holder = holder.unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
            let grace = lock::check_grace(grace, ttl)?;
            let options = Options { ttl, holder, address: None };
            let client = Client::new(&elector.elector).with_sessions(!session.no_session);
            let share = (shared || permits.is_some()).then_some(permits);
            lock::lock_command(client, &name, options, share, timeout, grace, &command).await
        }
        Command::Elect {
            elector,
            session,
            address,
            ttl,
            holder,
            health_http,
            health_tcp,
            health_period,
            health_threshold,
            leader_file,
            name,
            command,
        } => {
            let holder = holder.unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
            let health = health_http.or(health_tcp).map(|probe| health::Check {
                probe,
                period: health_period,
                threshold: health_threshold,
            });
            let options = Options { ttl, holder, address: Some(address) };
            let client = Client::new(&elector.elector).with_sessions(!session.no_session);
            elect::elect(elect::Elect { client, name, options, health, leader_file, command }).await
        }
        Command::Leader { transfer_to, transfer_away, transfer_from, wait, elector, names, .. }
            if transfer_to.is_some() || transfer_away =>
        {
            let [name] =
                <[String; 1]>::try_from(names).map_err(|_| anyhow::anyhow!("a transfer names exactly one election"))?;
            let ask = transfer::Ask { name, to: transfer_to, from: transfer_from, wait };
            transfer::transfer(&elector.elector, ask).await
        }
        Command::Leader {
            elector,
            watch,
            from_file,
            envoy_eds,
            cluster,
            envoy_eds_dir,
            cluster_template,
            names,
            ..
        } => {
            let names = leader::names(names, from_file.as_deref())?;
            let flags = leader::EdsFlags { file: envoy_eds, cluster, dir: envoy_eds_dir, template: cluster_template };
            let eds = leader::eds_files(flags, &names.list, watch)?;
            leader::leader(leader::Follow { url: elector.elector, names, watch, eds }).await
        }
        Command::Ls { elector, what, history: Some(name), json, .. } => {
            ls::history(&elector.elector, what, Some(name).filter(|n| !n.is_empty()), json).await
        }
        Command::Ls { elector, what, held, page_size, json, history: None } => {
            ls::ls(&elector.elector, what, held, page_size, json).await
        }
        Command::Watchdog { .. } => unreachable!("main runs the watchdog before any runtime starts"),
    }
}
