//! `wit/` resolves on its own: the worlds apps and toolchains target, with
//! the vendored WASI WIT in `wit/deps/`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;

use wit_parser::Resolve;

fn world(name: &str) -> (Vec<String>, Vec<String>) {
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit")).unwrap();
    let id = resolve.select_world(&[package], Some(name)).unwrap();
    let world = &resolve.worlds[id];
    let names = |items: &mut dyn Iterator<Item = &wit_parser::WorldKey>| {
        items.map(|key| resolve.name_world_key(key)).collect::<Vec<_>>()
    };
    (names(&mut world.imports.keys()), names(&mut world.exports.keys()))
}

#[test]
fn the_app_world_is_a_command_with_sync_wasi_and_http() {
    let (imports, exports) = world("app");
    for import in [
        "metaparticle:sync/lock@0.1.2",
        "metaparticle:sync/election@0.1.2",
        "metaparticle:sync/shared@0.1.2",
        "wasi:cli/environment@0.2.12",
        "wasi:clocks/monotonic-clock@0.2.12",
        "wasi:io/poll@0.2.12",
        "wasi:http/outgoing-handler@0.2.12",
    ] {
        assert!(imports.iter().any(|i| i == import), "{import} not imported: {imports:?}");
    }
    assert_eq!(exports, ["wasi:cli/run@0.2.12"]);
}

#[test]
fn the_client_and_provider_worlds_still_resolve() {
    let (imports, exports) = world("client");
    assert!(imports.iter().any(|i| i == "metaparticle:sync/shared@0.1.2") && exports.is_empty(), "{imports:?}");
    let (_, exports) = world("provider");
    assert_eq!(exports.len(), 4, "{exports:?}");
}
