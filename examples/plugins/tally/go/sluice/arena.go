package sluice

// The memory the gateway writes into this module (strings and lists it passes in) and
// the memory the WASI adapter keeps its state and stack in come from this arena, not
// from the Go heap:
//
//   - The adapter allocates while the Go runtime starts (`_initialize` makes the first
//     WASI calls), when no Go function may run yet.
//   - The gateway allocates while a call into the gateway is in progress; Go code that
//     allocates can start the garbage collector, which reads the clock through WASI,
//     and a component may not call out of itself at that moment.
//   - Pages the adapter would take with `memory.grow` end up inside the Go heap: the
//     runtime tracks the end of its own memory (it never asks the memory's size again)
//     and hands out the pages grown by anyone else as heap the next time it grows.
//
// `sluice plugin componentize` finds the arena by its tag in the module's data and
// adds the two allocators (`cabi_realloc` for the gateway, `cabi_realloc_adapter` for
// the adapter) as small WebAssembly functions that bump `lowerTop` / `adapterTop`.
// The layout below is what they read: keep it in sync with `host/src/devkit/arena.rs`.

const (
	// Room for what the gateway passes in during one call (the config string, a
	// header value); reset when each export returns.
	lowerSize = 256 << 10
	// Room for the adapter's state and its stack; never reset. The adapter of
	// wasmtime 48 takes 128 KiB (a 64 KiB stack, 64 KiB of state) at the first WASI
	// call and nothing after.
	adapterSize = 192 << 10
)

type arenaLayout struct {
	tag        [16]byte
	lowerTop   uint32 // bytes of `lower` in use
	lowerCap   uint32 // len(lower)
	adapterTop uint32 // bytes of `adapter` in use
	adapterCap uint32 // len(adapter)
	lower      [lowerSize]byte
	adapter    [adapterSize]byte
}

// The tag is written byte by byte so that it appears exactly once in the module's
// data: in the arena itself.
var arena = arenaLayout{
	tag:        [16]byte{'s', 'l', 'u', 'i', 'c', 'e', '-', 'a', 'r', 'e', 'n', 'a', '-', 'v', '1', 0},
	lowerCap:   lowerSize,
	adapterCap: adapterSize,
}

// releaseLowered frees everything the gateway wrote into the arena during the call
// that is returning. Nothing may point into it afterwards: whatever outlives a call
// is copied to the Go heap first.
func releaseLowered() {
	arena.lowerTop = 0
}
