//! The allocator: a bump arena for the first few megabytes, then the system's malloc.
//!
//! Most `pas` runs are short (a beat, a claim, a check) and allocate a few hundred small
//! objects that live until exit. glibc's malloc spends about a third of such a run's
//! instructions keeping books on memory that is freed a millisecond before the process
//! ends anyway. Here the first [`ARENA_BYTES`] are handed out by bumping an offset and
//! never reused; after that (long runs: `pas watch`, `pas top`) every allocation goes to
//! the system allocator as usual. Freeing arena memory is a no-op.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Size of the arena: a short command uses well under a megabyte.
pub const ARENA_BYTES: usize = 2 << 20;

#[repr(C, align(4096))]
struct Bytes(UnsafeCell<[u8; ARENA_BYTES]>);

// SAFETY: disjoint ranges of the array are handed out exactly once (an atomic offset), so no
// two threads ever access the same bytes through the arena.
unsafe impl Sync for Bytes {}

static BYTES: Bytes = Bytes(UnsafeCell::new([0; ARENA_BYTES]));
static USED: AtomicUsize = AtomicUsize::new(0);

/// The global allocator of the `pas` binary.
pub struct Arena;

impl Arena {
    fn base() -> usize {
        BYTES.0.get() as usize
    }

    fn owns(ptr: *mut u8) -> bool {
        let p = ptr as usize;
        p >= Self::base() && p < Self::base() + ARENA_BYTES
    }
}

// SAFETY: every pointer returned is either a fresh, suitably aligned, in-bounds range of the
// arena that is never handed out again, or comes from `System`; `dealloc` and `realloc`
// pass `System`'s pointers back to `System` and never free arena memory.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = Self::base();
        let mut used = USED.load(Ordering::Relaxed);
        loop {
            // Alignment is a power of two (a Layout guarantees it).
            let start = (base + used + layout.align() - 1) & !(layout.align() - 1);
            let end = start - base + layout.size();
            if end > ARENA_BYTES {
                // SAFETY: the caller's contract for `alloc` is passed on unchanged.
                return unsafe { System.alloc(layout) };
            }
            match USED.compare_exchange_weak(used, end, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return start as *mut u8,
                Err(now) => used = now,
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !Self::owns(ptr) {
            // SAFETY: not arena memory, so `System.alloc` returned it with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !Self::owns(ptr) {
            // SAFETY: not arena memory, so it came from `System` with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // The last allocation (a growing Vec or String, typically) grows in place.
        let base = Self::base();
        let end = ptr as usize - base + layout.size();
        if new_size >= layout.size() {
            let new_end = ptr as usize - base + new_size;
            if new_end <= ARENA_BYTES
                && USED
                    .compare_exchange(end, new_end, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                return ptr;
            }
        }
        // SAFETY: `new_size` with the old alignment is a valid layout (the caller's contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as for `alloc`.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both ranges are valid for the smaller size and do not overlap (the new
            // one is fresh).
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_memory_is_aligned_distinct_and_falls_back_when_full() {
        let a = Arena;
        unsafe {
            let l8 = Layout::from_size_align(24, 8).unwrap();
            let l64 = Layout::from_size_align(10, 64).unwrap();
            let p = a.alloc(l8);
            let q = a.alloc(l64);
            assert_eq!(q as usize % 64, 0);
            assert!(q as usize >= p as usize + 24);
            std::ptr::write_bytes(p, 1, 24);
            let r = a.realloc(p, l8, 100);
            assert_eq!(*r.add(23), 1);
            assert_ne!(r, p, "not the last allocation: moved");
            let s = a.realloc(r, Layout::from_size_align(100, 8).unwrap(), 4000);
            assert_eq!(s, r, "the last allocation grows in place");
            assert_eq!(*s.add(23), 1);
            a.dealloc(s, Layout::from_size_align(4000, 8).unwrap());
            let big = Layout::from_size_align(ARENA_BYTES + 1, 8).unwrap();
            let outside = a.alloc(big);
            assert!(!outside.is_null() && !Arena::owns(outside));
            a.dealloc(outside, big);
        }
    }
}
