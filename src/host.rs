//! The name of the host pas runs on: `$PAS_HOST`, else the kernel's host name. An agent
//! records the host its process runs on; pas looks at a pid in `/proc`, or signals it, only
//! on that host (see `ops::supervisor::on_this_host`).

use std::sync::OnceLock;

/// The variable that names this host (several `pas watch` nodes on one machine, tests).
pub const HOST_ENV: &str = "PAS_HOST";

/// This host's name: `$PAS_HOST` when set and not empty, else the kernel's host name
/// (`/proc/sys/kernel/hostname`, as `uname -n`), else `localhost`.
///
/// Found once per process and kept: a fleet view asks it of every agent (`state_of`), and
/// reading `/proc/sys/kernel/hostname` each time cost five system calls per agent, 12% of
/// `pas status` at 10,000 agents. A process keeps the name it started with, so a
/// long-running `pas watch` goes on naming the host its agents were recorded on even if the
/// machine is renamed under it.
pub fn name() -> String {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(read_name).clone()
}

fn read_name() -> String {
    let named = |text: String| Some(text.trim().to_string()).filter(|h| !h.is_empty());
    std::env::var(HOST_ENV)
        .ok()
        .and_then(named)
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .and_then(named)
        })
        .unwrap_or_else(|| "localhost".to_string())
}
