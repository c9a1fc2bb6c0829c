//! Is a component a Sluice plugin for this gateway? Checks a component's imports and
//! exports against the `sluice:plugin` world before it is linked, so a plugin author
//! reads what is wrong and how to fix it — the wrong world, the wrong WIT version, a
//! missing export — instead of a linker error.
//!
//! Versioning: the WIT package is `sluice:plugin@MAJOR.MINOR.PATCH`, and the linker
//! matches versions the way wasmtime does: for `0.x`, every `0.x.*` is compatible
//! (for `1.x` and later, every `MAJOR.*.*`). Compatible releases only *add* (new
//! functions, new interfaces), so a plugin built against an older compatible version
//! always loads, and one built against a newer one loads as long as it uses nothing
//! the gateway lacks. An incompatible version (`0.2` on a `0.1` gateway) is refused
//! with a message naming both versions.

use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::bindings::{PluginPre, sync};
use super::engine::engine;
use super::state::PluginState;

/// The host's WIT: the contract plugins compile against (`sluice plugin wit`).
pub const WIT: &str = include_str!("../../../wit/plugin.wit");

/// The version of the `sluice:plugin` package this gateway implements.
pub const WIT_VERSION: &str = "0.1.2";

/// The package's name.
pub const PACKAGE: &str = "sluice:plugin";

/// The interfaces of the package.
pub const INTERFACES: &[&str] =
    &["types", "log", "clock", "kv", "http", "secrets", "metrics", "crypto", "tokens"];

/// What the world exports, in the order `info` documents them.
pub const EXPORTS: &[&str] = &["info", "configure", "on-request", "on-response", "on-response-chunk"];

/// A version as (major, minor, patch); `None` for anything else (pre-releases too).
fn parse(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.split('.').map(|p| p.parse::<u64>().ok());
    let parsed = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(parsed)
}

/// Whether a component built against `theirs` links with a host implementing `ours`,
/// under the component model's semver rule (wasmtime's linker).
pub fn compatible(theirs: &str, ours: &str) -> bool {
    match (parse(theirs), parse(ours)) {
        (Some((a, b, c)), Some((x, y, z))) => match (a, b) {
            (0, 0) => x == 0 && y == 0 && c == z,
            (0, _) => x == 0 && b == y,
            _ => a == x,
        },
        _ => theirs == ours,
    }
}

/// What the component's `sluice:plugin` imports say about the version it was built
/// against: the newest version it names.
fn targeted_version(component: &Component) -> Option<String> {
    let ty = component.component_type();
    ty.imports(engine())
        .filter_map(|(name, _)| name.strip_prefix(PACKAGE)?.split_once('@').map(|(_, v)| v.to_owned()))
        .max_by_key(|v| parse(v))
}

/// Checks `component` against the world. `Err` lists every problem in one message.
pub fn check(component: &Component) -> Result<(), String> {
    let ty = component.component_type();
    let mut problems = Vec::new();
    for (name, item) in ty.imports(engine()) {
        if matches!(item.ty, ComponentItem::Type(_) | ComponentItem::Resource(_)) {
            continue;
        }
        let Some(rest) = name.strip_prefix(PACKAGE).and_then(|r| r.strip_prefix('/')) else { continue };
        let (iface, version) = match rest.split_once('@') {
            Some((i, v)) => (i, Some(v)),
            None => (rest, None),
        };
        match version {
            None => problems.push(format!(
                "imports `{name}` without a version: generate its bindings from this gateway's WIT \
                 (`sluice plugin wit`), which is {PACKAGE}@{WIT_VERSION}"
            )),
            Some(v) if !compatible(v, WIT_VERSION) => {
                let msg = format!(
                    "targets {PACKAGE}@{v}, but this gateway implements {PACKAGE}@{WIT_VERSION}, which is not \
                     compatible: rebuild the plugin against this gateway's WIT (`sluice plugin wit`), or run a \
                     gateway that implements {PACKAGE}@{v}"
                );
                if !problems.contains(&msg) {
                    problems.push(msg);
                }
            }
            Some(_) if !INTERFACES.contains(&iface) => problems.push(format!(
                "imports `{name}`, an interface {PACKAGE}@{WIT_VERSION} does not have (it has {})",
                INTERFACES.join(", ")
            )),
            Some(_) => {}
        }
    }
    let exported: Vec<String> = ty.exports(engine()).map(|(n, _)| n.to_owned()).collect();
    let missing: Vec<&str> = EXPORTS.iter().copied().filter(|e| !exported.iter().any(|x| x == e)).collect();
    if !missing.is_empty() {
        let what = if exported.iter().any(|e| e.starts_with("wasi:cli/run")) {
            "it is a WASI command (it exports `wasi:cli/run`), not a plugin. ".to_owned()
        } else if exported.is_empty() {
            "it exports nothing. ".to_owned()
        } else {
            format!(
                "it exports {}. ",
                exported.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
            )
        };
        problems.push(format!(
            "does not implement the world {PACKAGE}/plugin@{WIT_VERSION}: {what}Missing: {}. A plugin exports {} \
             — build it for the world `plugin` of this gateway's WIT (`sluice plugin wit`)",
            missing.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", "),
            EXPORTS.join(", ")
        ));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

/// A component linked for the gateway's two call paths (see [`super::bindings`]).
#[derive(Clone)]
pub struct Linked {
    /// The asynchronous path: every plugin links here.
    pub async_pre: PluginPre<PluginState>,
    /// The synchronous path, or why the component cannot take it (it imports a
    /// timer or sockets, or does not link there). Whether an entry of it does also
    /// depends on its grants ([`super::host_api::sync_blocker`]).
    pub sync_pre: Result<sync::PluginPre<PluginState>, String>,
}

impl Linked {
    /// The component.
    pub fn component(&self) -> &Component {
        self.async_pre.instance_pre().component()
    }
}

/// [`check`], then links the component as the gateway does: the pre-instantiated
/// plugin, or what is wrong.
pub fn link(component: &Component) -> Result<Linked, String> {
    check(component)?;
    let pre = super::host_api::linker()
        .instantiate_pre(component)
        .map_err(|e| explain_link_error(component, &format!("{e:#}")))?;
    let async_pre =
        PluginPre::new(pre).map_err(|e| format!("does not implement the {PACKAGE} world: {e:#}"))?;
    let sync_pre = match super::host_api::wasi::sync_blocker(component) {
        Some(why) => Err(why),
        None => super::host_api::sync_linker()
            .instantiate_pre(component)
            .and_then(sync::PluginPre::new)
            .map_err(|e| format!("it does not link without waiting imports: {e:#}")),
    };
    Ok(Linked { async_pre, sync_pre })
}

/// [`link`], and then the capabilities the component imports (what a route may have
/// to grant), or every import sluice does not provide.
pub fn check_links(component: &Component) -> Result<Vec<&'static str>, String> {
    link(component)?;
    let (caps, unprovided) = super::host_api::imported_capabilities(component);
    if unprovided.is_empty() { Ok(caps) } else { Err(unprovided.join("; ")) }
}

/// Explains why `wasm` (from `source`) did not compile as a component: most often
/// it is not one yet.
pub fn explain_compile_error(wasm: &[u8], source: &dyn std::fmt::Display, err: &wasmtime::Error) -> String {
    const CORE_MODULE: [u8; 8] = *b"\0asm\x01\0\0\0";
    if wasm.starts_with(&CORE_MODULE) {
        return format!(
            "{source} is a core WebAssembly module, not a component: turn it into one with \
             `sluice plugin componentize {source} -o OUT.wasm` (C, Zig; Go adds `--wit DIR`), or build for the \
             `wasm32-wasip2` target (Rust)"
        );
    }
    if !wasm.starts_with(b"\0asm") {
        return format!("{source} is not WebAssembly (it does not start with `\\0asm`)");
    }
    format!("{source}: {err:#}")
}

/// Explains a linker failure of a component that passed [`check`]: when it was built
/// against a newer compatible version, the likely cause is a function this gateway
/// does not have yet.
pub fn explain_link_error(component: &Component, err: &str) -> String {
    match targeted_version(component) {
        Some(v) if parse(&v) > parse(WIT_VERSION) => format!(
            "was built against {PACKAGE}@{v}, newer than this gateway's {WIT_VERSION}, and uses something \
             {WIT_VERSION} does not have ({err}): run a gateway that implements {PACKAGE}@{v}, or rebuild the \
             plugin against this gateway's WIT (`sluice plugin wit`)"
        ),
        _ => format!("cannot be linked: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_version_is_the_wits() {
        assert!(WIT.contains(&format!("package {PACKAGE}@{WIT_VERSION};")), "WIT_VERSION is out of date");
        for iface in INTERFACES {
            assert!(WIT.contains(&format!("interface {iface} {{")), "{iface}");
        }
        for export in EXPORTS {
            assert!(WIT.contains(&format!("export {export}: func(")), "{export}");
        }
    }

    #[test]
    fn semver_compatibility_follows_the_component_model() {
        assert!(compatible("0.1.0", "0.1.0"));
        assert!(compatible("0.1.0", "0.1.3"), "an older patch links");
        assert!(compatible("0.1.7", "0.1.3"), "a newer patch links if it uses nothing new");
        assert!(!compatible("0.2.0", "0.1.3"));
        assert!(!compatible("1.0.0", "0.1.0"));
        assert!(compatible("1.2.0", "1.0.0"));
        assert!(!compatible("2.0.0", "1.9.0"));
        assert!(!compatible("0.0.1", "0.0.2"));
        assert!(!compatible("0.1.0-rc1", "0.1.0"));
    }
}
