//! `mpsync run`: a wasm command component with metaparticle:sync.

use std::path::Path;
use std::process::ExitCode;

use mpsync::runtime::{RunError, RunOptions, Runtime};

/// Compiles (or loads from the cache) and runs `app`, stopping it on
/// SIGTERM or SIGINT; the guest's exit code, or 143 once stopped.
pub async fn run(app: &Path, mut options: RunOptions, cache: bool) -> anyhow::Result<ExitCode> {
    options.stop = Some(crate::signal::stop_on_signal()?);
    let runtime = Runtime::new(cache)?;
    let component = runtime.load(app)?;
    match runtime.run(&component, &app.display().to_string(), &options).await {
        Ok(code) => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
        // The conventional code for "ended by SIGTERM", after a clean release.
        Err(RunError::Stopped) => Ok(ExitCode::from(143)),
        Err(e) => Err(e.into()),
    }
}
