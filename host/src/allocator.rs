//! The binary's allocator: mimalloc, called the way the C library's `malloc` is.
//!
//! The `mimalloc` crate's own `GlobalAlloc` asks for every block through
//! `mi_malloc_aligned`, even when the alignment is one `mi_malloc` gives anyway; that
//! detour cost ~23 instructions per allocation, ~390 per proxied request
//! (BENCHMARKS.md, P1, 2026-12-04). This one takes the plain entry points when the alignment is at
//! most what they guarantee (a word), as the standard library's `System` does with
//! `malloc`, and the aligned ones otherwise.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::{c_int, c_long, c_void};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use libmimalloc_sys as mi;

/// The alignment every block from mimalloc's plain entry points has: a word. (A
/// 24-byte block, say, lies in a page of 24-byte blocks, so it is 8- but not always
/// 16-aligned; the C library's 16 cannot be assumed.) Layouts asking for more take the
/// aligned entry points.
const PLAIN_ALIGN: usize = std::mem::size_of::<usize>();

/// mimalloc as the global allocator: `#[global_allocator] static A: MiMalloc = MiMalloc;`.
pub struct MiMalloc;

fn plain(align: usize) -> bool {
    align <= PLAIN_ALIGN
}

// SAFETY: every block comes from mimalloc and goes back to it: `mi_free` takes blocks
// from both the plain and the aligned entry points, and `mi_realloc` keeps the plain
// alignment guarantee, so a block reallocated on the plain path stays aligned for its
// layout. Sizes are never zero (`GlobalAlloc`'s contract).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain calls into mimalloc with a non-zero size.
        unsafe {
            if plain(layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if plain(layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, hence from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new size is
        // non-zero.
        unsafe {
            if plain(layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

/// mimalloc's options, numbered as in its v2 `mimalloc.h` (`mi_option_t`).
const OPTION_ARENA_EAGER_COMMIT: c_int = 4;

// SAFETY: `mi_option_set` (mimalloc's `options.c`) stores a value in a static table; it
// has no preconditions and any option number below `_mi_option_last` is valid.
// `mi_collect` works on the calling thread's heap, which mimalloc makes on first use.
#[allow(unsafe_code)]
unsafe extern "C" {
    safe fn mi_option_set(option: c_int, value: c_long);
    safe fn mi_collect(force: bool);
}

/// Whether [`configure`] ran: mimalloc is the process's allocator.
static CONFIGURED: AtomicBool = AtomicBool::new(false);

/// Sets mimalloc's options for a gateway: call first thing in `main`.
///
/// - Arenas made from now on are committed as their pages are used
///   (`arena_eager_commit` 0). The first one is made before `main`, eagerly.
/// - Transparent huge pages are off for the process: mimalloc asks for them on its
///   eagerly committed arenas, and an idle gateway started 6–8 MB larger and held
///   ~37 KiB per idle HTTP/2 connection instead of ~24.
///
/// Freed memory is returned to the OS with mimalloc's own delay (`purge_delay`,
/// 10 ms, at the thread's next allocation), and by each worker once a second
/// ([`collect`], `crate::trim`) for a worker that makes no next allocation. Purging
/// at once (`purge_delay` 0) returned every page the moment it emptied: when the
/// request's future grew past 8 KiB into mimalloc's 512 KiB pages, each of them was
/// given back and faulted in again every few dozen requests (BENCHMARKS.md, P1,
/// 2026-12-04, evening).
///
/// An operator's `MIMALLOC_*` environment variables are read before this and are
/// overridden by it for the option it sets.
pub fn configure() {
    mi_option_set(OPTION_ARENA_EAGER_COMMIT, 0);
    #[cfg(target_os = "linux")]
    // SAFETY: `prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)` sets a flag on this process's
    // memory map; no pointers are passed.
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    CONFIGURED.store(true, Relaxed);
}

/// Returns what the calling thread's heap holds free to the OS: its wholly free pages
/// go back to their segments and every purge they have scheduled happens now. A walk
/// over the thread's pages, for a periodic call (each worker, once a second). Does
/// nothing unless [`configure`] ran: the library's tests allocate with the C library.
pub fn collect() {
    if CONFIGURED.load(Relaxed) {
        mi_collect(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path hands back a block aligned as asked, that can be written whole, and
    /// that keeps its bytes when it grows or shrinks.
    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_aligned_and_keep_their_bytes() {
        let a = MiMalloc;
        for &(size, align) in
            &[(1, 1), (8, 8), (24, 8), (24, 16), (16, 16), (100, 32), (4096, 128), (8, 4096)]
        {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a non-zero layout; the block is written within its size and
            // freed once, with the layout it has at that point.
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "{size} bytes aligned to {align}");
                std::ptr::write_bytes(p, 0xA5, size);
                let grown = a.realloc(p, layout, size * 3);
                assert_eq!(grown as usize % align, 0, "grown {size} bytes aligned to {align}");
                assert!((0..size).all(|i| *grown.add(i) == 0xA5));
                let shrunk = a.realloc(grown, Layout::from_size_align(size * 3, align).unwrap(), size);
                assert_eq!(shrunk as usize % align, 0);
                assert!((0..size).all(|i| *shrunk.add(i) == 0xA5));
                a.dealloc(shrunk, layout);
                let z = a.alloc_zeroed(layout);
                assert_eq!(z as usize % align, 0);
                assert!((0..size).all(|i| *z.add(i) == 0));
                a.dealloc(z, layout);
            }
        }
    }

    /// A worker's periodic [`collect`] gives back the memory its thread freed: most
    /// of the freed blocks' pages are no longer resident after it (`mincore` on their
    /// own addresses, so other tests' memory does not count). Without it they stay
    /// resident: mimalloc's delayed purge waits for a next allocation on the thread,
    /// which an idle worker never makes.
    #[test]
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn collect_returns_a_threads_freed_memory() {
        const BLOCK: usize = 16 * 1024;
        const COUNT: usize = 1024; // 16 MiB
        // SAFETY: `sysconf` has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
        // The whole pages within the blocks, and how many of them are resident.
        let pages = move |b: usize| (b.next_multiple_of(page), (b + BLOCK) / page * page);
        let resident = move |blocks: &[usize]| -> (usize, usize) {
            let mut vec = vec![0u8; BLOCK / page];
            blocks.iter().fold((0, 0), |(all, res), &b| {
                let (start, end) = pages(b);
                let n = (end - start) / page;
                // SAFETY: the range is mapped (mimalloc keeps its arenas mapped; a
                // purge only decommits), and `vec` has a byte for each of its pages.
                let rc = unsafe { libc::mincore(start as *mut libc::c_void, end - start, vec.as_mut_ptr()) };
                assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
                (all + n, res + vec[..n].iter().filter(|&&v| v & 1 == 1).count())
            })
        };
        configure();
        std::thread::spawn(move || {
            // SAFETY: blocks from mimalloc, written within their size, freed once.
            let blocks: Vec<usize> = unsafe {
                (0..COUNT)
                    .map(|_| {
                        let b = mi::mi_malloc(BLOCK).cast::<u8>();
                        assert!(!b.is_null());
                        std::ptr::write_bytes(b, 1, BLOCK);
                        b as usize
                    })
                    .collect()
            };
            // SAFETY: each block freed once.
            blocks.iter().for_each(|&b| unsafe { mi::mi_free(b as *mut c_void) });
            // Past mimalloc's own purge delay, with no allocation on this thread.
            std::thread::sleep(std::time::Duration::from_millis(50));
            let (total, before) = resident(&blocks);
            collect();
            let (_, after) = resident(&blocks);
            assert!(
                total > 0 && after * 2 <= total,
                "{total} pages freed: {before} resident before collect, {after} after"
            );
        })
        .join()
        .unwrap();
    }
}
