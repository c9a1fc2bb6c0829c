//! The allocators `sluice plugin componentize` adds to a module whose language runtime
//! cannot provide them, such as Go's (`GOOS=wasip1`, `//go:wasmexport`).
//!
//! A component needs two allocators in the core module: `cabi_realloc`, with which the
//! gateway places the strings and lists it passes in, and one for the WASI preview 1
//! adapter's state and stack (`cabi_realloc_adapter`, else `cabi_realloc`, else pages
//! from `memory.grow`). Go can provide none of them safely:
//!
//! - the adapter allocates during `_initialize`, while the Go runtime is starting, and
//!   a `//go:wasmexport` function called then traps;
//! - the gateway calls `cabi_realloc` while it is itself being called by the plugin
//!   (lowering an import's result); Go code that allocates there can start the
//!   collector, which reads the clock through WASI, and a component may not call out
//!   at that moment ("cannot leave component instance");
//! - pages the adapter takes with `memory.grow` become Go heap: the Go runtime keeps
//!   its own idea of where memory ends (`blocMax`, set from the memory's size once at
//!   start) and, when it grows, takes everything from there up, including pages
//!   grown by anyone else in between.
//!
//! So the module declares an *arena* in its static data, which the Go heap never
//! overlaps, marked with [`TAG`], and this module adds the two allocators as plain
//! WebAssembly functions bumping offsets stored in the arena's header:
//!
//! ```text
//! offset  0: TAG (16 bytes)
//! offset 16: lower_top    u32   bytes of the lowering region in use (the module resets it)
//! offset 20: lower_cap    u32   size of the lowering region
//! offset 24: adapter_top  u32   bytes of the adapter region in use
//! offset 28: adapter_cap  u32   size of the adapter region
//! offset 32: the lowering region, then the adapter region
//! ```
//!
//! An allocation that does not fit traps (`unreachable`) rather than overwrite memory.

use anyhow::{Context, bail};
use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{
    CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction, MemArg, Module,
    RawSection, TypeSection, ValType,
};
use wasmparser::{DataKind, Operator, Parser, Payload, TypeRef};

/// The 16 bytes that start an arena in a module's data.
pub const TAG: &[u8; 16] = b"sluice-arena-v1\0";

/// The export names of the allocators.
const REALLOC: &str = "cabi_realloc";
const REALLOC_ADAPTER: &str = "cabi_realloc_adapter";

/// Offsets in the arena's header.
const LOWER_TOP: u64 = 16;
const LOWER_CAP: u64 = 20;
const ADAPTER_TOP: u64 = 24;
const ADAPTER_CAP: u64 = 28;
const REGIONS: i32 = 32;

/// The address of the arena's tag in `module`'s initial memory, if it has one.
pub fn find(module: &[u8]) -> anyhow::Result<Option<u32>> {
    let mut found = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        let Payload::DataSection(section) = payload.context("not a valid WebAssembly module")? else {
            continue;
        };
        for data in section {
            let data = data.context("reading the data section")?;
            let DataKind::Active { memory_index: 0, offset_expr } = data.kind else { continue };
            let mut ops = offset_expr.get_operators_reader();
            let Ok(Operator::I32Const { value }) = ops.read() else { continue };
            for (at, _) in data.data.windows(TAG.len()).enumerate().filter(|(_, w)| *w == TAG) {
                found.push((value as u32).wrapping_add(at as u32));
            }
        }
    }
    match found[..] {
        [] => Ok(None),
        [addr] if addr % 4 == 0 => Ok(Some(addr)),
        [addr] => bail!("the arena tag at {addr:#x} is not 4-byte aligned"),
        _ => bail!(
            "the arena tag `sluice-arena-v1` appears {} times in the module's data: keep one arena",
            found.len()
        ),
    }
}

/// `module` with `cabi_realloc` and `cabi_realloc_adapter` added, both allocating from
/// the arena whose tag is at `arena`.
pub fn add_allocators(module: &[u8], arena: u32) -> anyhow::Result<Vec<u8>> {
    let mut reencoder = RoundtripReencoder;
    let mut out = Module::new();
    let mut imported_funcs = 0u32;
    let mut defined_funcs = 0u32;
    let mut realloc_type = None;
    let mut bodies: Vec<&[u8]> = Vec::new();
    let (mut has_funcs, mut has_exports, mut has_code) = (false, false, false);
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.context("not a valid WebAssembly module")?;
        match payload {
            Payload::Version { .. } | Payload::End(_) => {}
            Payload::TypeSection(section) => {
                let mut types = TypeSection::new();
                reencoder.parse_type_section(&mut types, section)?;
                realloc_type = Some(types.len());
                types.ty().function([ValType::I32; 4], [ValType::I32]);
                out.section(&types);
            }
            Payload::ImportSection(section) => {
                for import in section.clone().into_imports() {
                    imported_funcs += u32::from(matches!(import?.ty, TypeRef::Func(_)));
                }
                out.section(&RawSection { id: 2, data: bytes(module, section.range()) });
            }
            Payload::FunctionSection(section) => {
                let ty = realloc_type.context("the module has no type section")?;
                let mut funcs = FunctionSection::new();
                for f in section {
                    funcs.function(f?);
                    defined_funcs += 1;
                }
                funcs.function(ty).function(ty);
                out.section(&funcs);
                has_funcs = true;
            }
            Payload::ExportSection(section) => {
                let mut exports = ExportSection::new();
                for export in section {
                    let export = export?;
                    if export.name == REALLOC || export.name == REALLOC_ADAPTER {
                        bail!(
                            "the module has an arena and exports `{}` itself: drop one of them",
                            export.name
                        );
                    }
                    let kind = RoundtripReencoder.export_kind(export.kind)?;
                    exports.export(export.name, kind, export.index);
                }
                let first = imported_funcs + defined_funcs;
                exports.export(REALLOC, ExportKind::Func, first);
                exports.export(REALLOC_ADAPTER, ExportKind::Func, first + 1);
                out.section(&exports);
                has_exports = true;
            }
            Payload::CodeSectionStart { .. } => {}
            Payload::CodeSectionEntry(body) => bodies.push(bytes(module, body.range())),
            other => {
                if let Some((id, range)) = other.as_section() {
                    if id == 11 {
                        // The code section goes right before the data section.
                        out.section(&code(&bodies, arena));
                        bodies.clear();
                        has_code = true;
                    }
                    out.section(&RawSection { id, data: bytes(module, range) });
                }
            }
        }
    }
    if !(has_funcs && has_exports && has_code) {
        bail!(
            "a module with an arena must define and export functions (it has no function, export or code section)"
        );
    }
    Ok(out.finish())
}

/// The bytes of a range wasmparser reports (offsets into `module`, which it parsed).
fn bytes(module: &[u8], range: std::ops::Range<u64>) -> &[u8] {
    &module[range.start as usize..range.end as usize]
}

fn code(bodies: &[&[u8]], arena: u32) -> CodeSection {
    let mut code = CodeSection::new();
    for body in bodies {
        code.raw(body);
    }
    code.function(&allocator(arena, LOWER_TOP, LOWER_CAP, None));
    code.function(&allocator(arena, ADAPTER_TOP, ADAPTER_CAP, Some(LOWER_CAP)));
    code
}

/// `(func (param $old_ptr i32) (param $old_len i32) (param $align i32) (param $new_len
/// i32) (result i32))`: bumps the region's top, traps when the region is full, and
/// copies the old bytes when reallocating.
fn allocator(arena: u32, top: u64, cap: u64, after: Option<u64>) -> Function {
    use Instruction as I;
    let (old_ptr, old_len, align, new_len, base, start) = (0, 1, 2, 3, 4, 5);
    let word = |offset| MemArg { offset, align: 2, memory_index: 0 };
    let arena = arena as i32;
    let mut f = Function::new([(2, ValType::I32)]);
    let mut ins = |i: I<'_>| {
        f.instruction(&i);
    };
    // $base = arena + 32 (+ lower_cap for the region after the lowering one)
    ins(I::I32Const(arena.wrapping_add(REGIONS)));
    if let Some(after) = after {
        ins(I::I32Const(arena));
        ins(I::I32Load(word(after)));
        ins(I::I32Add);
    }
    ins(I::LocalSet(base));
    // if $new_len > cap: unreachable
    ins(I::LocalGet(new_len));
    ins(I::I32Const(arena));
    ins(I::I32Load(word(cap)));
    ins(I::I32GtU);
    ins(I::If(wasm_encoder::BlockType::Empty));
    ins(I::Unreachable);
    ins(I::End);
    // $start = ($base + top + $align - 1) & -$align
    ins(I::LocalGet(base));
    ins(I::I32Const(arena));
    ins(I::I32Load(word(top)));
    ins(I::I32Add);
    ins(I::LocalGet(align));
    ins(I::I32Add);
    ins(I::I32Const(1));
    ins(I::I32Sub);
    ins(I::I32Const(0));
    ins(I::LocalGet(align));
    ins(I::I32Sub);
    ins(I::I32And);
    ins(I::LocalSet(start));
    // if $start + $new_len > $base + cap: unreachable
    ins(I::LocalGet(start));
    ins(I::LocalGet(new_len));
    ins(I::I32Add);
    ins(I::LocalGet(base));
    ins(I::I32Const(arena));
    ins(I::I32Load(word(cap)));
    ins(I::I32Add);
    ins(I::I32GtU);
    ins(I::If(wasm_encoder::BlockType::Empty));
    ins(I::Unreachable);
    ins(I::End);
    // top = $start + $new_len - $base
    ins(I::I32Const(arena));
    ins(I::LocalGet(start));
    ins(I::LocalGet(new_len));
    ins(I::I32Add);
    ins(I::LocalGet(base));
    ins(I::I32Sub);
    ins(I::I32Store(word(top)));
    // a reallocation keeps the old bytes (as many as fit)
    ins(I::LocalGet(old_len));
    ins(I::If(wasm_encoder::BlockType::Empty));
    ins(I::LocalGet(start));
    ins(I::LocalGet(old_ptr));
    ins(I::LocalGet(old_len));
    ins(I::LocalGet(new_len));
    ins(I::LocalGet(old_len));
    ins(I::LocalGet(new_len));
    ins(I::I32LtU);
    ins(I::Select);
    ins(I::MemoryCopy { src_mem: 0, dst_mem: 0 });
    ins(I::End);
    ins(I::LocalGet(start));
    ins(I::End);
    f
}

/// Whether `module` was linked by Go's toolchain (it carries a `go:buildid` section).
pub fn is_go(module: &[u8]) -> bool {
    Parser::new(0)
        .parse_all(module)
        .any(|p| matches!(p, Ok(Payload::CustomSection(s)) if s.name() == "go:buildid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{ConstExpr, DataSection, MemorySection, MemoryType};
    use wasmtime::{Engine, Instance, Store, TypedFunc};

    /// Where the test module's arena starts.
    const AT: u32 = 1024;

    /// A module with one function (`f`), an exported memory and an arena at [`AT`]
    /// with a 64-byte lowering region and a 128-byte adapter region.
    fn module_with_arena(tags: usize) -> Vec<u8> {
        let mut m = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], [ValType::I32]);
        m.section(&types);
        let mut funcs = FunctionSection::new();
        funcs.function(0);
        m.section(&funcs);
        m.section(MemorySection::new().memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        }));
        let mut exports = ExportSection::new();
        exports.export("memory", ExportKind::Memory, 0).export("f", ExportKind::Func, 0);
        m.section(&exports);
        let mut code = CodeSection::new();
        let mut f = Function::new([]);
        f.instruction(&Instruction::I32Const(7)).instruction(&Instruction::End);
        code.function(&f);
        m.section(&code);
        let mut header = TAG.to_vec();
        for word in [0u32, 64, 0, 128] {
            header.extend(word.to_le_bytes());
        }
        let mut data = DataSection::new();
        for i in 0..tags {
            data.active(0, &ConstExpr::i32_const((AT + 4096 * i as u32) as i32), header.iter().copied());
        }
        m.section(&data);
        m.finish()
    }

    type Realloc = TypedFunc<(u32, u32, u32, u32), u32>;

    fn instantiate(module: &[u8]) -> (Store<()>, Instance, Realloc, Realloc) {
        let engine = Engine::default();
        let module = wasmtime::Module::new(&engine, module).unwrap();
        let mut store = Store::new(&engine, ());
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let lower = instance.get_typed_func(&mut store, REALLOC).unwrap();
        let adapter = instance.get_typed_func(&mut store, REALLOC_ADAPTER).unwrap();
        (store, instance, lower, adapter)
    }

    #[test]
    fn the_arena_is_found_by_its_tag() {
        assert_eq!(find(&module_with_arena(1)).unwrap(), Some(AT));
        assert_eq!(find(&module_with_arena(0)).unwrap(), None);
        let err = find(&module_with_arena(2)).unwrap_err().to_string();
        assert!(err.contains("appears 2 times"), "{err}");
    }

    #[test]
    fn the_allocators_bump_within_their_regions() {
        let module = add_allocators(&module_with_arena(1), AT).unwrap();
        let (mut store, instance, lower, adapter) = instantiate(&module);
        // The module's own function is still there, at its index.
        let f: TypedFunc<(), i32> = instance.get_typed_func(&mut store, "f").unwrap();
        assert_eq!(f.call(&mut store, ()).unwrap(), 7);
        let lowering = AT + 32;
        assert_eq!(lower.call(&mut store, (0, 0, 1, 3)).unwrap(), lowering);
        // Aligned, after the first allocation.
        assert_eq!(lower.call(&mut store, (0, 0, 8, 8)).unwrap(), lowering + 8);
        // The adapter's region follows the lowering one, and has its own top.
        let adapting = lowering + 64;
        assert_eq!(adapter.call(&mut store, (0, 0, 8, 100)).unwrap(), adapting);
        assert_eq!(adapter.call(&mut store, (0, 0, 4, 28)).unwrap(), adapting + 100);
        // The tops are in the header, where the module resets the lowering one.
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        let word = |store: &Store<()>, at: u32| {
            let bytes = &memory.data(store)[at as usize..at as usize + 4];
            u32::from_le_bytes(bytes.try_into().unwrap())
        };
        assert_eq!(word(&store, AT + 16), 16);
        assert_eq!(word(&store, AT + 24), 128);
        memory.data_mut(&mut store)[(AT + 16) as usize..(AT + 20) as usize]
            .copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(lower.call(&mut store, (0, 0, 1, 1)).unwrap(), lowering);
    }

    #[test]
    fn a_reallocation_keeps_the_old_bytes() {
        let module = add_allocators(&module_with_arena(1), AT).unwrap();
        let (mut store, instance, lower, _) = instantiate(&module);
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        let first = lower.call(&mut store, (0, 0, 1, 4)).unwrap();
        memory.data_mut(&mut store)[first as usize..first as usize + 4].copy_from_slice(b"abcd");
        let grown = lower.call(&mut store, (first, 4, 1, 10)).unwrap();
        assert_ne!(grown, first);
        assert_eq!(&memory.data(&store)[grown as usize..grown as usize + 4], b"abcd");
        let shrunk = lower.call(&mut store, (grown, 10, 1, 2)).unwrap();
        assert_eq!(&memory.data(&store)[shrunk as usize..shrunk as usize + 2], b"ab");
    }

    #[test]
    fn a_full_region_traps_instead_of_overflowing() {
        let module = add_allocators(&module_with_arena(1), AT).unwrap();
        let (mut store, _, lower, adapter) = instantiate(&module);
        lower.call(&mut store, (0, 0, 1, 60)).unwrap();
        let err = lower.call(&mut store, (0, 0, 1, 5)).unwrap_err();
        assert_eq!(err.downcast_ref::<wasmtime::Trap>(), Some(&wasmtime::Trap::UnreachableCodeReached));
        // More than the whole region, which would wrap around if added first.
        assert!(adapter.call(&mut store, (0, 0, 1, u32::MAX)).is_err());
        assert_eq!(adapter.call(&mut store, (0, 0, 1, 128)).unwrap(), AT + 32 + 64);
    }

    #[test]
    fn a_module_exporting_its_own_realloc_is_refused() {
        let module = add_allocators(&module_with_arena(1), AT).unwrap();
        let err = add_allocators(&module, AT).unwrap_err().to_string();
        assert!(err.contains("exports `cabi_realloc` itself"), "{err}");
    }
}
