//! The static binary's `memcpy` and `memmove`: an SSE2 copy in place of musl's.
//!
//! Why: musl's x86-64 `memcpy` is `rep movsq` with a byte-at-a-time loop for the unaligned
//! head and the tail, on every call. Most copies on the hot path are small (claims,
//! records, futures moved into boxes, TLS records), where that costs most: in the static
//! binary's profile of `/token` with DPoP, musl's `memcpy` was 5.5% of the server's CPU,
//! where the glibc build's `memmove` was 1.5% for the same copies
//! (docs/performance.md, session 12). glibc picks a vector copy for the CPU at run time;
//! the static binary cannot link glibc, so it brings its own.
//!
//! What: `sealkit_memmove` (src/memmove_x86_64.s) copies with unaligned 16-byte loads and
//! stores, loading every byte of a size class before storing any, so overlapping buffers
//! copy correctly and `memcpy` can be the same function. It uses SSE2 only, which every
//! x86-64 CPU has, so the one binary runs on any of them.
//!
//! Which builds use it: on x86-64 musl (the static binary) the assembly also defines the
//! symbols `memcpy` and `memmove`. The linker then takes them from sealkit's own object
//! and never pulls `memcpy.o` and `memmove.o` out of musl's `libc.a` (both must be
//! defined: musl's `memmove` calls into its `memcpy`). Every caller in the binary, Rust,
//! OpenSSL's C and musl itself, then copies with it. On glibc the C library's copy stays,
//! and `sealkit_memmove` is only there for the tests below, which check it against the
//! C library's `memmove` for every size up to 600 bytes, every alignment and overlaps in
//! both directions. `sealkit --version --verbose` says which copy the binary runs, and
//! scripts/build-static.sh refuses a static binary that does not run this one.

#[cfg(all(target_arch = "x86_64", not(target_env = "musl")))]
core::arch::global_asm!(include_str!("memmove_x86_64.s"), options(att_syntax));

#[cfg(all(target_arch = "x86_64", target_env = "musl"))]
core::arch::global_asm!(
    include_str!("memmove_x86_64.s"),
    ".globl memcpy",
    ".type memcpy,@function",
    ".set memcpy, sealkit_memmove",
    ".globl memmove",
    ".type memmove,@function",
    ".set memmove, sealkit_memmove",
    options(att_syntax)
);

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    /// The copy of src/memmove_x86_64.s, with `memmove`'s contract.
    fn sealkit_memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;
    /// The `memcpy` this binary was linked with.
    fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;
}

/// Whether this binary's `memcpy` is sealkit's own (the static x86-64 build), rather than
/// the C library's.
pub fn memcpy_is_sealkits() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Addresses, not function pointers, are compared: both symbols are resolved by the
        // linker, and in the static binary they are one address.
        std::ptr::eq(memcpy as *const (), sealkit_memmove as *const ())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Bytes no copy writes: a buffer's fill, so a stray store shows.
    fn patterned(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Copies `n` bytes within one buffer from offset `src` to offset `dst` with sealkit's
    /// copy and with the C library's `memmove`, and asserts the two buffers are the same
    /// in every byte, inside the copy and around it.
    fn assert_copies_like_libc(buf_len: usize, src: usize, dst: usize, n: usize) {
        let mut ours = patterned(buf_len, 7);
        let mut libcs = ours.clone();
        // SAFETY: src + n and dst + n are within buf_len (the callers' ranges), and
        // memmove's contract allows the ranges to overlap.
        unsafe {
            let base = ours.as_mut_ptr();
            let returned = sealkit_memmove(base.add(dst), base.add(src), n);
            assert_eq!(returned, base.add(dst), "memmove returns dst");
            std::ptr::copy(libcs.as_ptr().add(src), libcs.as_mut_ptr().add(dst), n);
        }
        if ours != libcs {
            let first = ours.iter().zip(&libcs).position(|(a, b)| a != b).unwrap();
            panic!(
                "copy of {n} bytes from offset {src} to offset {dst} in {buf_len}: \
                 byte {first} is {:#04x}, the C library's memmove wrote {:#04x}",
                ours[first], libcs[first]
            );
        }
    }

    #[test]
    fn copies_apart_every_size_and_alignment_like_libc() {
        // Separate ranges: source at 64 + its misalignment, destination after it.
        for n in (0..=600).chain([1000, 4095, 4096, 4097, 65_536 + 3]) {
            for src_align in 0..16 {
                for dst_align in 0..16 {
                    let src = 64 + src_align;
                    let dst = src + n + 64 + dst_align;
                    assert_copies_like_libc(dst + n + 64, src, dst, n);
                    // And the destination before the source.
                    assert_copies_like_libc(dst + n + 64, dst, src, n);
                }
            }
        }
    }

    #[test]
    fn copies_overlapping_ranges_in_both_directions_like_libc() {
        for n in (0..=300).chain([511, 512, 513, 1000, 4099]) {
            for src_align in 0..16 {
                let src = 160 + src_align;
                // The destination from 150 bytes before the source to 150 after it, which
                // covers both directions, every shift under the 64-byte step and equal
                // ranges.
                for shift in -150isize..=150 {
                    let dst = (src as isize + shift) as usize;
                    assert_copies_like_libc(src.max(dst) + n + 64, src, dst, n);
                }
            }
        }
    }

    #[test]
    fn the_binary_under_test_reports_the_c_librarys_memcpy() {
        // Tests build for glibc, where the C library's copy stays; the static binary's
        // answer is checked by scripts/build-static.sh.
        assert_eq!(memcpy_is_sealkits(), cfg!(target_env = "musl"));
    }
}
