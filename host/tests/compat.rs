//! Components built against an earlier `metaparticle:sync` keep working:
//! the host serves `metaparticle:sync@0.1.2`, and wasmtime's linker, being
//! semver-aware, satisfies an import of `@0.1.0` or `@0.1.1` with it (0.1.1
//! only added the `shared` interface, 0.1.2 only two functions of the
//! `election` resource; nothing was changed or taken away). The tests build a
//! component against each released WIT (`fixtures/sync-0.1.0.wit`,
//! `fixtures/sync-0.1.1.wit`, the contract as it was released) and link it
//! on mpsync's linker.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;

use mpsync::runtime::Runtime;
use wit_component::{ComponentEncoder, StringEncoding, dummy_module, embed_component_metadata};
use wit_parser::{ManglingAndAbi, Resolve};

/// A component of the `app` world of the released WIT `version` (every
/// function a stub): what an app built then imports, exactly.
fn built_against(version: &str) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("mpsync-wit-{version}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(here.join(format!("tests/fixtures/sync-{version}.wit")), dir.join("sync.wit")).unwrap();
    std::os::unix::fs::symlink(here.join("../wit/deps"), dir.join("deps")).unwrap();
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_dir(&dir).unwrap();
    let world = resolve.select_world(&[package], Some("app")).unwrap();
    let mut module = dummy_module(&resolve, world, ManglingAndAbi::Standard32);
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8).unwrap();
    let component = ComponentEncoder::default().module(&module).unwrap().validate(true).encode().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    component
}

/// Builds a component against `version`, checks it imports `interfaces` of
/// that version, and links it on the host.
fn links_on_the_host(version: &str, interfaces: &[&str]) {
    let bytes = built_against(version);
    let runtime = Runtime::new(false).unwrap();
    let component = wasmtime::component::Component::new(runtime.engine(), &bytes).unwrap();
    let imports: Vec<String> =
        component.component_type().imports(runtime.engine()).map(|(name, _)| name.to_owned()).collect();
    for interface in interfaces {
        let old = format!("metaparticle:sync/{interface}@{version}");
        assert!(imports.contains(&old), "{old} not imported: {imports:?}");
    }
    runtime.links(&component).unwrap();
}

#[test]
fn a_component_built_against_0_1_0_links_on_the_0_1_2_host() {
    links_on_the_host("0.1.0", &["lock", "election"]);
}

#[test]
fn a_component_built_against_0_1_1_links_on_the_0_1_2_host() {
    links_on_the_host("0.1.1", &["lock", "election", "shared"]);
}
