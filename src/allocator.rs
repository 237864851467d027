//! The process allocator: mimalloc for small blocks, the C library's allocator for large
//! ones.
//!
//! Why mimalloc: the static binary links musl, whose allocator is slow under threads, and
//! even with glibc's, malloc and free took about a tenth of the CPU of a DPoP token; with
//! mimalloc the server spends ~13% less CPU per token and issues ~15% more tokens/s
//! (`docs/performance.md`). Why large blocks stay with the C library: sled builds 41
//! histograms of 512 KiB at start-up. Through mimalloc alone the idle server was 43 MB
//! resident instead of 22 MB; with blocks of 256 KiB and more left to the C library,
//! which maps each from the kernel on its own (glibc's mmap threshold, musl's likewise),
//! it is back to 21–22 MB (measured with `sealkit bench`). Large blocks are rare and never
//! per request (bodies are capped far below the threshold), so their cost does not show
//! on the hot path.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Blocks at least this large go to the C library's allocator.
const LARGE: usize = 256 * 1024;

/// The `#[global_allocator]` of the `sealkit` binary.
pub struct Allocator;

fn is_large(size: usize) -> bool {
    size >= LARGE
}

// SAFETY: every block is returned to the allocator that made it: the size a block is
// freed or resized with is the one it was allocated with (GlobalAlloc's contract), and
// `is_large` of that size decides the allocator in both directions.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size()) {
            System.alloc(layout)
        } else {
            mimalloc::MiMalloc.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size()) {
            System.alloc_zeroed(layout)
        } else {
            mimalloc::MiMalloc.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if is_large(layout.size()) {
            System.dealloc(block, layout)
        } else {
            mimalloc::MiMalloc.dealloc(block, layout)
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (is_large(layout.size()), is_large(new_size)) {
            (false, false) => mimalloc::MiMalloc.realloc(block, layout, new_size),
            (true, true) => System.realloc(block, layout, new_size),
            _ => {
                // Crossing the threshold: copy into a block of the other allocator.
                let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                let new_block = self.alloc(new_layout);
                if !new_block.is_null() {
                    ptr::copy_nonoverlapping(block, new_block, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                new_block
            }
        }
    }
}

/// Routes OpenSSL's own allocations (a dozen BIGNUMs and contexts per ES256 operation) to
/// mimalloc too; otherwise they go to the C library's malloc, which in the static binary
/// is musl's. Must run before OpenSSL allocates anything, so `main` calls it first.
/// `false` when OpenSSL had already allocated: it then keeps its allocator, which is
/// slower but correct.
pub fn route_openssl_allocations() -> bool {
    use std::ffi::{c_char, c_int, c_void};
    type Malloc = unsafe extern "C" fn(usize, *const c_char, c_int) -> *mut c_void;
    type Realloc = unsafe extern "C" fn(*mut c_void, usize, *const c_char, c_int) -> *mut c_void;
    type Free = unsafe extern "C" fn(*mut c_void, *const c_char, c_int);
    extern "C" {
        // OpenSSL 3, crypto.h; returns 0 once OpenSSL has allocated.
        fn CRYPTO_set_mem_functions(m: Malloc, r: Realloc, f: Free) -> c_int;
    }
    unsafe extern "C" fn malloc(size: usize, _: *const c_char, _: c_int) -> *mut c_void {
        libmimalloc_sys::mi_malloc(size)
    }
    unsafe extern "C" fn realloc(
        block: *mut c_void,
        size: usize,
        _: *const c_char,
        _: c_int,
    ) -> *mut c_void {
        libmimalloc_sys::mi_realloc(block, size)
    }
    unsafe extern "C" fn free(block: *mut c_void, _: *const c_char, _: c_int) {
        libmimalloc_sys::mi_free(block)
    }
    // SAFETY: the three functions form one allocator (mimalloc's malloc/realloc/free, with
    // OpenSSL's contract: realloc and free of null are valid), and OpenSSL only accepts them
    // before its first allocation, so no block crosses allocators.
    unsafe { CRYPTO_set_mem_functions(malloc, realloc, free) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Contents survive every kind of resize, and zeroed blocks of both kinds are zero.
    #[test]
    fn blocks_keep_their_contents_across_the_threshold() {
        let a = Allocator;
        unsafe {
            for (start, sizes) in [
                (64usize, [LARGE * 2, LARGE * 4, LARGE + 1, 100, 10]),
                (LARGE * 3, [LARGE * 5, 512, LARGE * 2, LARGE, 1]),
            ] {
                let layout = Layout::from_size_align(start, 8).unwrap();
                let mut block = a.alloc_zeroed(layout);
                assert!(!block.is_null());
                assert!(std::slice::from_raw_parts(block, start)
                    .iter()
                    .all(|&b| b == 0));
                let mut size = start;
                for (i, byte) in std::slice::from_raw_parts_mut(block, size)
                    .iter_mut()
                    .enumerate()
                {
                    *byte = (i % 251) as u8;
                }
                for new_size in sizes {
                    block = a.realloc(block, Layout::from_size_align(size, 8).unwrap(), new_size);
                    assert!(!block.is_null());
                    let kept = size.min(new_size);
                    let contents = std::slice::from_raw_parts(block, kept);
                    assert!(contents
                        .iter()
                        .enumerate()
                        .all(|(i, &b)| b == (i % 251) as u8));
                    // Fill the rest so the next resize has a full pattern to keep.
                    for (i, byte) in std::slice::from_raw_parts_mut(block, new_size)
                        .iter_mut()
                        .enumerate()
                        .skip(kept)
                    {
                        *byte = (i % 251) as u8;
                    }
                    size = new_size;
                }
                a.dealloc(block, Layout::from_size_align(size, 8).unwrap());
            }
        }
    }
}
