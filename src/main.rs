//! The `pas` binary: everything happens in the library.

#[global_allocator]
static ALLOCATOR: pas::arena::Arena = pas::arena::Arena;

fn main() -> std::process::ExitCode {
    pas::run()
}
