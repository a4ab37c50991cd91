//! What a guest may use: its linear memory capped at `--max-memory`, its
//! running time at `--max-cpu` (counted in epoch ticks by the runtime), and
//! the traps that say which limit stopped it.

use wasmtime::StoreLimitsBuilder;

/// The trap the epoch callback raises when the guest used up `--max-cpu`.
#[derive(Debug, thiserror::Error)]
#[error("mpsync: CPU limit exceeded")]
pub struct CpuLimitHit;

/// The trap raised when the guest asks for memory past `--max-memory`.
#[derive(Debug, thiserror::Error)]
#[error("mpsync: memory limit of {limit} bytes exceeded (asked for {desired})")]
pub struct MemoryLimitHit {
    /// The limit.
    pub limit: usize,
    /// What the guest asked for.
    pub desired: usize,
}

/// The guest's resource limits: its linear memory capped at `--max-memory`
/// (growing past it traps with [`MemoryLimitHit`], and the refusal is
/// recorded, so a guest that catches the failed grow and traps later is
/// still reported as out of memory); tables and instances as wasmtime's
/// defaults.
pub struct GuestLimits {
    memory: usize,
    refused: bool,
    defaults: wasmtime::StoreLimits,
}

impl GuestLimits {
    /// Limits with linear memory capped at `memory` bytes.
    pub fn new(memory: usize) -> GuestLimits {
        GuestLimits { memory, refused: false, defaults: StoreLimitsBuilder::new().build() }
    }

    /// Whether a memory grow was refused.
    pub fn refused(&self) -> bool {
        self.refused
    }
}

impl wasmtime::ResourceLimiter for GuestLimits {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.refused = true;
            return Err(wasmtime::Error::new(MemoryLimitHit { limit: self.memory, desired }));
        }
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.defaults.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.defaults.instances()
    }

    fn tables(&self) -> usize {
        self.defaults.tables()
    }

    fn memories(&self) -> usize {
        self.defaults.memories()
    }
}
