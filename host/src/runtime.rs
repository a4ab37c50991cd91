//! Running wasm apps: one wasmtime `Engine` with a compilation cache,
//! epoch-based CPU accounting, memory limits, WASI, wasi:http and (unless
//! told otherwise) the metaparticle:sync imports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::anyhow;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Cache, CacheConfig, Config, Engine, Store, UpdateDeadline};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpCtx;

use crate::bindings::metaparticle::sync;
use crate::imports::HasSync;
use crate::leases::SyncCtx;
use crate::limits::{CpuLimitHit, GuestLimits, MemoryLimitHit};
use crate::state::HostState;

/// How often the epoch ticks: the granularity of CPU accounting and of
/// yielding a busy guest to the runtime.
pub const TICK: Duration = Duration::from_millis(10);

/// How a guest is run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The elector's base URL.
    pub elector: String,
    /// Claim leases under a session with the elector (released the moment
    /// this process exits).
    pub sessions: bool,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Preopened directories: (host path, guest path).
    pub dirs: Vec<(PathBuf, String)>,
    /// Largest linear memory, in bytes.
    pub max_memory: usize,
    /// Most CPU time the guest may spend running (not waiting in the host).
    pub max_cpu: Option<Duration>,
    /// Link the metaparticle:sync imports (off to prove a composed app
    /// needs nothing but WASI and wasi:http).
    pub link_sync: bool,
    /// The program name the guest sees as `argv[0]`.
    pub program: String,
    /// Stop the guest when this turns `true` (SIGTERM): its leases are
    /// released before [`Runtime::run`] returns [`RunError::Stopped`].
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Why a guest did not finish normally; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        reason: std::io::Error,
    },
    /// The file is not WebAssembly at all.
    #[error("{0} is not a WebAssembly file")]
    NotWasm(String),
    /// A directory to preopen (`--dir`) could not be opened.
    #[error("cannot preopen {dir}: {reason}")]
    Preopen {
        /// The host directory.
        dir: String,
        /// Why.
        reason: String,
    },
    /// A core module, not a component.
    #[error(
        "{0} is a core WebAssembly module, not a component: build it for wasm32-wasip2 (or adapt it with `wasm-tools component new`)"
    )]
    CoreModule(String),
    /// A component that needs imports mpsync does not provide.
    #[error(
        "{path} is a component of another world: {detail}. mpsync provides WASI 0.2 (wasi:cli/command), wasi:http and metaparticle:sync@0.1.2 (which serves components built against 0.1.0 and 0.1.1 too)"
    )]
    OtherWorld {
        /// The file.
        path: String,
        /// What is missing or wrong.
        detail: String,
    },
    /// The guest was stopped from outside (SIGTERM or SIGINT); its leases
    /// were released.
    #[error("stopped by a signal; leases released")]
    Stopped,
    /// The guest went over its memory limit.
    #[error("the guest tried to grow its memory past the limit of {limit} bytes (--max-memory) and was stopped")]
    MemoryLimit {
        /// The limit.
        limit: usize,
    },
    /// The guest went over its CPU limit.
    #[error("the guest ran for more than its CPU limit of {limit:?} (--max-cpu) and was stopped")]
    CpuLimit {
        /// The limit.
        limit: Duration,
    },
    /// The guest trapped.
    #[error("the guest trapped: {0:#}")]
    Trap(anyhow::Error),
}

/// A wasmtime engine with its linkers, shared by every guest it runs.
pub struct Runtime {
    engine: Engine,
    with_sync: Linker<HostState>,
    without_sync: Linker<HostState>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MPSYNC_CACHE_DIR") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("mpsync")
}

impl Runtime {
    /// An engine with a compilation cache (in `$MPSYNC_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/mpsync` or `~/.cache/mpsync`; `cache: false` turns it
    /// off), epoch interruption and both linkers.
    pub fn new(cache: bool) -> anyhow::Result<Runtime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        if cache {
            let mut cache_config = CacheConfig::new();
            cache_config.with_directory(cache_dir());
            config
                .cache(Some(Cache::new(cache_config).map_err(|e| anyhow!("setting up the compilation cache: {e:#}"))?));
        }
        let engine = Engine::new(&config).map_err(|e| anyhow!("{e:#}"))?;

        let mut without_sync = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut without_sync).map_err(|e| anyhow!("{e:#}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut without_sync).map_err(|e| anyhow!("{e:#}"))?;
        let mut with_sync = without_sync.clone();
        // wasi:io comes from wasmtime-wasi above; add only our interfaces.
        let view = HostState::sync_view;
        sync::types::add_to_linker::<_, HasSync>(&mut with_sync, view).map_err(|e| anyhow!("{e:#}"))?;
        sync::lock::add_to_linker::<_, HasSync>(&mut with_sync, view).map_err(|e| anyhow!("{e:#}"))?;
        sync::election::add_to_linker::<_, HasSync>(&mut with_sync, view).map_err(|e| anyhow!("{e:#}"))?;
        sync::shared::add_to_linker::<_, HasSync>(&mut with_sync, view).map_err(|e| anyhow!("{e:#}"))?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let (ticker_engine, stop) = (engine.weak(), stop_ticker.clone());
        std::thread::Builder::new().name("mpsync-epoch".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                match ticker_engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })?;
        Ok(Runtime { engine, with_sync, without_sync, stop_ticker })
    }

    /// Reads and compiles (or loads from the cache) the component at `path`,
    /// with a plain error for files that are not components.
    pub fn load(&self, path: &Path) -> Result<Component, RunError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|reason| RunError::Unreadable { path: shown.clone(), reason })?;
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => return Err(RunError::CoreModule(shown)),
            Some([0, b'a', b's', b'm', ..]) => {}
            _ => return Err(RunError::NotWasm(shown)),
        }
        Component::new(&self.engine, &bytes).map_err(|e| RunError::OtherWorld { path: shown, detail: format!("{e:#}") })
    }

    /// The engine components are compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Checks that mpsync's own imports (WASI, wasi:http, metaparticle:sync)
    /// satisfy every import of `component`, without running it.
    pub fn links(&self, component: &Component) -> Result<(), RunError> {
        self.with_sync
            .instantiate_pre(component)
            .map(drop)
            .map_err(|e| RunError::OtherWorld { path: "the component".into(), detail: format!("{e:#}") })
    }

    /// Runs a `wasi:cli/command` component to completion. Returns its exit
    /// code. Leases the guest still holds when it returns (normally, by
    /// `exit`, or by a trap) are released before this returns.
    pub async fn run(&self, component: &Component, path: &str, options: &RunOptions) -> Result<i32, RunError> {
        let linker = if options.link_sync { &self.with_sync } else { &self.without_sync };
        let unlinked = if options.link_sync { "" } else { " (metaparticle:sync is not linked: --no-sync-imports)" };
        let other_world =
            |e: wasmtime::Error| RunError::OtherWorld { path: path.to_owned(), detail: format!("{e:#}{unlinked}") };
        let pre = linker.instantiate_pre(component).map_err(other_world)?;
        let command = CommandPre::new(pre).map_err(|e| RunError::OtherWorld {
            path: path.to_owned(),
            detail: format!("it does not export wasi:cli/run, so it is not a command component ({e:#}); build a `bin` for wasm32-wasip2"),
        })?;

        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stdio().arg(&options.program).args(&options.args);
        for (k, v) in &options.env {
            wasi.env(k, v);
        }
        if !options.link_sync && !options.env.iter().any(|(k, _)| k == "MPSYNC_ELECTOR") {
            // A composed component brings its own metaparticle:sync, which
            // finds the elector in its environment: the same one as ours.
            wasi.env("MPSYNC_ELECTOR", &options.elector);
            // And holds its leases without a session if told so.
            if !options.sessions && !options.env.iter().any(|(k, _)| k == "MPSYNC_NO_SESSION") {
                wasi.env("MPSYNC_NO_SESSION", "1");
            }
        }
        for (host, guest) in &options.dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadWrite)
                .map_err(|e| RunError::Preopen { dir: host.display().to_string(), reason: format!("{e:#}") })?;
        }
        let instance = format!("{}-{}", hostname(), std::process::id());
        let state = HostState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: GuestLimits::new(options.max_memory),
            sync: SyncCtx::new(&options.elector, options.sessions, instance),
            cpu_ticks: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let max_ticks = options.max_cpu.map(|d| (d.as_millis() / TICK.as_millis()).max(1) as u64);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            let state = ctx.data_mut();
            state.cpu_ticks += 1;
            if max_ticks.is_some_and(|max| state.cpu_ticks > max) {
                return Err(wasmtime::Error::new(CpuLimitHit));
            }
            // Yield to the runtime every tick so host tasks (renewals) and
            // other guests keep running next to a busy guest.
            Ok(UpdateDeadline::Yield(1))
        });

        let mut stop = options.stop.clone();
        let stopped = async {
            match stop.as_mut() {
                Some(stop) => drop(stop.wait_for(|s| *s).await),
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            result = async {
                match command.instantiate_async(&mut store).await {
                    Ok(command) => command.wasi_cli_run().call_run(&mut store).await,
                    Err(e) => Err(e),
                }
            } => Some(result),
            // The guest may be waiting in a host call, where no epoch
            // check runs: drop the call and release below.
            () = stopped => None,
        };
        let released = store.data_mut().sync.release_all().await;
        if released > 0 {
            tracing::debug!(released, "released leases left by the guest");
        }
        let Some(result) = result else { return Err(RunError::Stopped) };
        match result {
            Ok(Ok(())) => Ok(0),
            Ok(Err(())) => Ok(1),
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    return Ok(exit.0);
                }
                if e.downcast_ref::<CpuLimitHit>().is_some() {
                    Err(RunError::CpuLimit { limit: options.max_cpu.unwrap_or_default() })
                } else if e.downcast_ref::<MemoryLimitHit>().is_some() || store.data().limits.refused() {
                    Err(RunError::MemoryLimit { limit: options.max_memory })
                } else {
                    Err(RunError::Trap(anyhow!("{e:?}")))
                }
            }
        }
    }
}

/// This machine's hostname (for default holder ids).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}
