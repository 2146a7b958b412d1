//! `pas-serve`: `pas` with the HTTP server linked in. `pas serve ...` executes it with the
//! same arguments; see docs/http.md.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    pas::run_server()
}
