//! `memcpy` and `memmove` for the static musl build (the recommended deployment build).
//!
//! musl's x86_64 `memcpy` copies with single `movsb` instructions and `rep movsq`, whose
//! start-up cost dominates the tiny copies Rust code makes all the time (serde_json writes a
//! quote, a colon, a key...): it was a fifth of `pas status` on musl, 1.5x slower than the
//! glibc build. These two replace musl's when linking for musl (the symbols are exported
//! under the C names only there); other builds keep their libc's and only the tests call
//! them. Small copies use two overlapping unaligned loads and stores, larger ones
//! `rep movsb`, fast on every x86_64 CPU with ERMS (Intel since Ivy Bridge, AMD since Zen).
//!
//! LLVM turns a byte loop into a call to `memcpy`, so nothing here loops in Rust: the code
//! is straight-line loads and stores, and the `rep movsb` instruction.

use core::arch::asm;
use core::ptr::{read_unaligned, write_unaligned};

/// C's `memcpy` (the ranges do not overlap). Returns `dst`.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `n` bytes, and they must not
/// overlap: the C contract.
#[cfg_attr(target_env = "musl", unsafe(export_name = "memcpy"))]
pub unsafe extern "C" fn fast_memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n <= 32 {
        // SAFETY: the caller's contract; `up_to_32` stays within the n bytes.
        unsafe { up_to_32(dst, src, n) };
    } else {
        // SAFETY: the caller's contract: n bytes readable at src, writable at dst.
        unsafe { forward(dst, src, n) };
    }
    dst
}

/// C's `memmove` (the ranges may overlap). Returns `dst`.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `n` bytes: the C contract.
#[cfg_attr(target_env = "musl", unsafe(export_name = "memmove"))]
pub unsafe extern "C" fn fast_memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n <= 32 {
        // SAFETY: as above; `up_to_32` loads everything before it stores, so overlap is fine.
        unsafe { up_to_32(dst, src, n) };
    } else if (dst as usize).wrapping_sub(src as usize) >= n {
        // dst starts before src, or after the end of src: a forward copy never overwrites a
        // byte it has still to read.
        // SAFETY: the caller's contract.
        unsafe { forward(dst, src, n) };
    } else {
        // dst starts inside src: copy from the last byte down (direction flag set, then
        // cleared again, as the ABI requires on return).
        // SAFETY: the caller's contract; the pointers are the last byte of each range.
        unsafe {
            asm!("std", "rep movsb", "cld",
                inout("rcx") n => _,
                inout("rdi") dst.add(n - 1) => _,
                inout("rsi") src.add(n - 1) => _,
                options(nostack));
        }
    }
    dst
}

/// Copies 0 to 32 bytes, loading all of them before storing any.
#[inline(always)]
unsafe fn up_to_32(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY (all branches): every offset read or written is below n.
    unsafe {
        if n > 16 {
            let a = read_unaligned(src as *const u128);
            let b = read_unaligned(src.add(n - 16) as *const u128);
            write_unaligned(dst as *mut u128, a);
            write_unaligned(dst.add(n - 16) as *mut u128, b);
        } else if n >= 8 {
            let a = read_unaligned(src as *const u64);
            let b = read_unaligned(src.add(n - 8) as *const u64);
            write_unaligned(dst as *mut u64, a);
            write_unaligned(dst.add(n - 8) as *mut u64, b);
        } else if n >= 4 {
            let a = read_unaligned(src as *const u32);
            let b = read_unaligned(src.add(n - 4) as *const u32);
            write_unaligned(dst as *mut u32, a);
            write_unaligned(dst.add(n - 4) as *mut u32, b);
        } else if n > 0 {
            let (a, b, c) = (*src, *src.add(n / 2), *src.add(n - 1));
            *dst = a;
            *dst.add(n / 2) = b;
            *dst.add(n - 1) = c;
        }
    }
}

/// `rep movsb` from the first byte up.
#[inline(always)]
unsafe fn forward(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller guarantees n bytes at each pointer and no harmful overlap.
    unsafe {
        asm!("rep movsb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn memcpy_copies_every_size_at_every_alignment() {
        let src = pattern(700);
        for n in 0..600 {
            for (s_off, d_off) in [(0, 0), (1, 0), (0, 3), (5, 7), (8, 1)] {
                let mut dst = vec![0xAAu8; 700];
                let ret =
                    unsafe { fast_memcpy(dst.as_mut_ptr().add(d_off), src.as_ptr().add(s_off), n) };
                assert_eq!(ret, unsafe { dst.as_mut_ptr().add(d_off) });
                assert_eq!(&dst[d_off..d_off + n], &src[s_off..s_off + n], "n={n}");
                assert!(
                    dst[..d_off].iter().all(|&b| b == 0xAA),
                    "wrote before dst, n={n}"
                );
                assert!(
                    dst[d_off + n..].iter().all(|&b| b == 0xAA),
                    "wrote past n={n}"
                );
            }
        }
    }

    #[test]
    fn memmove_handles_overlap_in_both_directions() {
        for n in 0..300 {
            for shift in [1usize, 2, 7, 16, 31, 33, 64] {
                // dst after src (a backward copy is needed) and dst before src.
                for dst_after in [true, false] {
                    let mut buf = pattern(700);
                    let (s, d) = if dst_after {
                        (10, 10 + shift)
                    } else {
                        (10 + shift, 10)
                    };
                    let mut want = buf.clone();
                    want.copy_within(s..s + n, d);
                    let p = buf.as_mut_ptr();
                    let ret = unsafe { fast_memmove(p.add(d), p.add(s), n) };
                    assert_eq!(ret, unsafe { p.add(d) });
                    assert_eq!(buf, want, "n={n} shift={shift} dst_after={dst_after}");
                }
            }
        }
    }

    #[test]
    fn the_direction_flag_is_clear_after_a_backward_move() {
        let mut buf = pattern(200);
        let p = buf.as_mut_ptr();
        unsafe { fast_memmove(p.add(5), p, 150) };
        // A forward copy right after must still go forward.
        let src = pattern(100);
        let mut dst = vec![0u8; 100];
        unsafe { fast_memcpy(dst.as_mut_ptr(), src.as_ptr(), 100) };
        assert_eq!(dst, src);
    }
}
