//! A proxy-wasm HTTP filter that does nothing: every callback keeps the
//! SDK's default (continue). The leader filter's benchmark runs it in the
//! same Envoy configuration to show what any wasm filter costs there, next
//! to what the leader filter costs.

// `proxy_wasm::main!` defines the undocumented `_start` entry point.
#![allow(missing_docs)]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Nothing))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Nothing;

impl Context for Nothing {}

impl HttpContext for Nothing {}
