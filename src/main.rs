//! The `pas` binary: everything happens in the library.

// musl's malloc made `pas status` about 2.8x slower than the glibc build (it maps and
// unmaps memory all the time); dlmalloc (pure Rust) matches glibc. Other builds use the
// system allocator.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() -> std::process::ExitCode {
    pas::run()
}
