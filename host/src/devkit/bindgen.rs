//! `sluice plugin bindgen --lang c`: the C bindings of a plugin's WIT world, made
//! with the `wit-bindgen-c` library so a C or Zig author needs no `wit-bindgen` CLI.
//!
//! For a world `plugin` the files are `plugin.h` (the types, the imports to call and
//! the exports to define), `plugin.c` (the canonical ABI glue) and
//! `plugin_component_type.o` (the world's type, as a custom section the linker keeps
//! and [`super::componentize`] reads). Borrowed handles passed to an export
//! (`borrow<request>`) are dropped by the glue when the export returns, so plugin
//! code never drops them itself.

use std::path::Path;

use anyhow::Context;
use wit_bindgen_core::Files;
use wit_parser::{Resolve, WorldId};

/// Generates the C bindings of `world` (the folder's only world when `None`) of the
/// WIT package in `wit_dir`, whose `deps/` folder holds the packages it uses. Returns
/// (file name, contents) pairs, to write side by side.
pub fn c_bindings(wit_dir: &Path, world: Option<&str>) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let (mut resolve, world_id) = load_world(wit_dir, world)?;
    let opts = wit_bindgen_c::Opts { autodrop_borrows: wit_bindgen_c::Enabled::Yes, ..Default::default() };
    let mut files = Files::default();
    opts.build()
        .generate(&mut resolve, world_id, &mut files)
        .with_context(|| format!("generating C bindings for world `{}`", resolve.worlds[world_id].name))?;
    Ok(files.iter().map(|(name, contents)| (name.to_owned(), contents.to_vec())).collect())
}

/// Reads the WIT package in `wit_dir` (its `deps/` folder holding the packages it
/// uses) and picks `world` (the folder's only world when `None`). The errors say where
/// the gateway's WIT belongs.
pub fn load_world(wit_dir: &Path, world: Option<&str>) -> anyhow::Result<(Resolve, WorldId)> {
    if !wit_dir.is_dir() {
        anyhow::bail!(
            "{} is not a folder: give the WIT folder of the plugin (its world's .wit files, \
             and a `deps/` folder with the Sluice WIT, e.g. from `sluice plugin wit --out {}/deps/sluice-plugin`)",
            wit_dir.display(),
            wit_dir.display()
        );
    }
    let mut resolve = Resolve::default();
    let (package, _sources) = resolve.push_dir(wit_dir).map_err(|e| {
        let cause = format!("{e:#}");
        // A missing or dangling `deps/sluice-plugin` is the usual cause: say where it goes.
        let hint = if cause.contains("sluice:plugin") || cause.contains("deps") {
            format!(
                "\n(the gateway's WIT belongs in {0}/deps/sluice-plugin: `sluice plugin wit --out \
                 {0}/deps/sluice-plugin`, or a symlink to a Sluice checkout's wit/)",
                wit_dir.display()
            )
        } else {
            String::new()
        };
        anyhow::anyhow!("reading the WIT in {}: {cause}{hint}", wit_dir.display())
    })?;
    let world_id = resolve.select_world(&[package], world).with_context(|| match world {
        Some(name) => format!("no world `{name}` in the WIT package of {}", wit_dir.display()),
        None => format!(
            "choosing the world of {} (pass `--world NAME` when the package has several)",
            wit_dir.display()
        ),
    })?;
    Ok((resolve, world_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn example_wit() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/plugins/tally/c/wit")
    }

    fn file<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        files.iter().find(|(n, _)| n == name).map(|(_, c)| c.as_slice()).unwrap_or_else(|| {
            panic!("no {name} among {names:?}");
        })
    }

    #[test]
    fn example_world_has_the_plugin_exports() {
        let files = c_bindings(&example_wit(), None).unwrap();
        assert_eq!(files.len(), 3, "{:?}", files.iter().map(|(n, _)| n).collect::<Vec<_>>());
        let header = String::from_utf8(file(&files, "plugin.h").to_vec()).unwrap();
        for prototype in [
            "void exports_plugin_info(plugin_plugin_info_t *ret);",
            "bool exports_plugin_configure(plugin_string_t *config, plugin_string_t *err);",
            "void exports_plugin_on_request(plugin_borrow_request_t request, plugin_decision_t *ret);",
            "void exports_plugin_on_response(plugin_borrow_response_t response, plugin_decision_t *ret);",
            "void exports_plugin_on_response_chunk(plugin_list_u8_t *chunk, bool last, plugin_list_u8_t *ret);",
        ] {
            assert!(header.contains(prototype), "plugin.h lacks `{prototype}`:\n{header}");
        }
        // The one capability it imports, and the types' methods it calls.
        assert!(header.contains("sluice_plugin_kv_increment("), "{header}");
        assert!(header.contains("sluice_plugin_types_method_request_header("), "{header}");
        assert!(!header.contains("sluice_plugin_http_send("), "imports only what the world does");
        assert!(file(&files, "plugin.c").starts_with(b"// Generated by `wit-bindgen`"));
        // A relocatable wasm object whose custom section carries the world's type.
        let object = file(&files, "plugin_component_type.o");
        assert!(object.starts_with(b"\0asm"));
        assert!(object.windows(14).any(|w| w == b"component-type"));
    }

    #[test]
    fn world_is_chosen_by_name() {
        assert!(c_bindings(&example_wit(), Some("plugin")).is_ok());
        let err = c_bindings(&example_wit(), Some("nope")).unwrap_err();
        assert!(format!("{err:#}").contains("no world `nope`"), "{err:#}");
    }

    #[test]
    fn missing_deps_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(example_wit().join("world.wit"), dir.path().join("world.wit")).unwrap();
        let err = format!("{:#}", c_bindings(dir.path(), None).unwrap_err());
        assert!(err.contains("package 'sluice:plugin@0.1.2' not found"), "{err}");
        assert!(err.contains("deps/sluice-plugin`"), "{err}");
        // A dangling symlink, as in a project moved away from its checkout.
        std::fs::create_dir(dir.path().join("deps")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("deps/sluice-plugin"))
            .unwrap();
        let err = format!("{:#}", c_bindings(dir.path(), None).unwrap_err());
        assert!(err.contains("deps/sluice-plugin`"), "{err}");
        let err = format!("{:#}", c_bindings(&dir.path().join("absent"), None).unwrap_err());
        assert!(err.contains("is not a folder"), "{err}");
    }
}
