//! The name of the host pas runs on: `--host NAME`, else `$PAS_HOST`, else the kernel's
//! host name. An agent records the host its process runs on; pas looks at a pid in
//! `/proc`, or signals it, only on that host (see `ops::supervisor::on_this_host`), and a
//! `pas watch` node on a shared store keeps `nodes/<host>` alive under this name.

use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The variable that names this host (several `pas watch` nodes on one machine, tests).
pub const HOST_ENV: &str = "PAS_HOST";

/// The name `--host` gave, for the whole process.
static GIVEN: OnceLock<String> = OnceLock::new();

/// Names this host for the rest of the process (`--host NAME`), after [`check`]. The
/// processes pas starts are given it as `$PAS_HOST`. A second call keeps the first name.
pub fn set(name: &str) -> Result<()> {
    check(name)?;
    let _ = GIVEN.set(name.to_string());
    Ok(())
}

/// Refuses a host name pas cannot use as a key or a file name: empty, longer than 253
/// bytes, or with anything but letters, digits, `.`, `-` and `_`.
pub fn check(name: &str) -> Result<()> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if name.is_empty() || name.len() > 253 || !name.chars().all(fine) || name.starts_with('.') {
        return Err(Error::usage(format!(
            "host name {name:?} is not usable: use letters, digits, '.', '-' and '_' (at most 253)"
        ))
        .hint("give --host NAME or PAS_HOST=NAME, e.g. the machine's short host name"));
    }
    Ok(())
}

/// This host's name: the one [`set`] gave, else `$PAS_HOST` when set and not empty, else
/// the kernel's host name (`/proc/sys/kernel/hostname`, as `uname -n`), else `localhost`.
///
/// Found once per process and kept: a fleet view asks it of every agent (`state_of`), and
/// reading `/proc/sys/kernel/hostname` each time cost five system calls per agent, 12% of
/// `pas status` at 10,000 agents. A process keeps the name it started with, so a
/// long-running `pas watch` goes on naming the host its agents were recorded on even if the
/// machine is renamed under it.
pub fn name() -> String {
    if let Some(given) = GIVEN.get() {
        return given.clone();
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn host_names_pas_can_use_as_keys() {
        for (name, ok) in [
            ("a", true),
            ("node-1.example.com", true),
            ("host_2", true),
            ("", false),
            (".hidden", false),
            ("a/b", false),
            ("a b", false),
            ("é", false),
        ] {
            assert_eq!(super::check(name).is_ok(), ok, "{name:?}");
        }
        assert!(super::check(&"x".repeat(254)).is_err());
    }
}
