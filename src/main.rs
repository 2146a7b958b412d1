//! The `pas` binary: everything happens in the library.

fn main() -> std::process::ExitCode {
    pas::run()
}
