//! Components built against an earlier `metaparticle:sync` keep working:
//! the host serves `metaparticle:sync@0.1.1`, and wasmtime's linker, being
//! semver-aware, satisfies an import of `@0.1.0` with it (0.1.1 only adds
//! the `shared` interface; `lock` and `election` are as they were). The
//! test builds a component against the 0.1.0 WIT (`fixtures/sync-0.1.0.wit`,
//! the contract as it was released) and links it on mpsync's linker.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;

use mpsync::runtime::Runtime;
use wit_component::{ComponentEncoder, StringEncoding, dummy_module, embed_component_metadata};
use wit_parser::{ManglingAndAbi, Resolve};

/// A component of the 0.1.0 `app` world (every function a stub): what an
/// app built then imports, exactly.
fn built_against_0_1_0() -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("mpsync-wit-0.1.0-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(here.join("tests/fixtures/sync-0.1.0.wit"), dir.join("sync.wit")).unwrap();
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

#[test]
fn a_component_built_against_0_1_0_links_on_the_0_1_1_host() {
    let bytes = built_against_0_1_0();
    let runtime = Runtime::new(false).unwrap();
    let component = wasmtime::component::Component::new(runtime.engine(), &bytes).unwrap();
    let imports: Vec<String> =
        component.component_type().imports(runtime.engine()).map(|(name, _)| name.to_owned()).collect();
    for old in ["metaparticle:sync/lock@0.1.0", "metaparticle:sync/election@0.1.0"] {
        assert!(imports.iter().any(|i| i == old), "{old} not imported: {imports:?}");
    }
    runtime.links(&component).unwrap();
}
