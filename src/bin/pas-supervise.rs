//! `pas-supervise`: the supervisor of one agent and nothing else. `pas agent start` (and
//! revival) executes it, found next to `pas`, as `pas-supervise --root DIR __supervise CELL
//! AGENT`; see docs/design.md (Processes and revival). It is linked without PIE (build.rs),
//! so its relocated read-only data stays clean and shared between supervisors.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    pas::run_supervisor()
}
