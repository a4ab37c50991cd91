//! The stock wasmtime CLI's `run` command, built from the `wasmtime-cli`
//! crate of the same release as the host's wasmtime and in the same build,
//! so the portable components are tested under `wasmtime run -S http`
//! exactly as users run them without compiling wasmtime a second time.
//! Only `run` is here: the other subcommands need features the tests do not.

use clap::Parser;
use wasmtime_cli::commands::RunCommand;

/// The wasmtime CLI (only `run`).
#[derive(Parser)]
#[command(name = "wasmtime", version = "48.0.8 (the wasmtime-cli crate, run only, built by mpsync-tools)")]
enum Wasmtime {
    /// Runs a WebAssembly module or component.
    Run(RunCommand),
}

fn main() -> std::process::ExitCode {
    let Wasmtime::Run(command) = Wasmtime::parse();
    // As the stock CLI: a guest's exit code is passed on by `execute`
    // itself; any other error is printed with its causes.
    match command.execute() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            std::process::ExitCode::FAILURE
        }
    }
}
