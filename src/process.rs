//! Operating-system processes: liveness from `/proc` (pid plus start time, so a reused pid
//! is never taken for the agent), signals to process groups, and reaping.

use std::io;
use std::time::{Duration, Instant};

use rustix::process::{self as rproc, Pid, Signal};

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`), and
/// its state letter; `None` when there is no such process.
pub fn stat(pid: i32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// The start time of a live process.
pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|(start, _)| start)
}

/// Whether `pid` is a live (not zombie) process started at `start_time` (when known).
pub fn alive(pid: i32, start_time: Option<u64>) -> bool {
    match stat(pid) {
        Some((_, 'Z')) | Some((_, 'X')) | None => false,
        Some((start, _)) => start_time.is_none_or(|t| t == start),
    }
}

/// Whether `pid` is the given process and has exited but not been reaped by its parent.
pub fn zombie(pid: i32, start_time: Option<u64>) -> bool {
    matches!(stat(pid), Some((start, 'Z')) if start_time.is_none_or(|t| t == start))
}

/// Whether any process is left running in group `pgid`. Zombies do not count: nothing
/// of theirs runs, and an orphan's zombie is reaped by init, which in a container may be
/// slow to do it or never does.
pub fn group_alive(pgid: i32) -> bool {
    let signalable = match Pid::from_raw(pgid) {
        Some(p) => rproc::test_kill_process_group(p).is_ok(),
        None => false,
    };
    signalable && group_runs(pgid).unwrap_or(true)
}

/// Whether a process of group `pgid` that is not a zombie is in `/proc`; `None` when
/// `/proc` cannot be read.
fn group_runs(pgid: i32) -> Option<bool> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // gone meanwhile
        };
        // After the command name in parentheses: state, ppid, pgrp, ...
        let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let state = fields.first().and_then(|s| s.chars().next());
        let group = fields.get(2).and_then(|g| g.parse::<i32>().ok());
        if group == Some(pgid) && !matches!(state, Some('Z') | Some('X')) {
            return Some(true);
        }
    }
    Some(false)
}

/// Sends SIGTERM (or SIGKILL with `kill`) to every process of group `pgid`.
pub fn signal_group(pgid: i32, kill: bool) -> io::Result<()> {
    let pid = Pid::from_raw(pgid)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad process group"))?;
    let sig = if kill { Signal::KILL } else { Signal::TERM };
    match rproc::kill_process_group(pid, sig) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sends SIGKILL to one process (the demo's "crash").
pub fn kill_pid(pid: i32) -> io::Result<()> {
    let pid =
        Pid::from_raw(pid).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad pid"))?;
    rproc::kill_process(pid, Signal::KILL).map_err(io::Error::from)
}

/// Sends SIGTERM to one process.
pub fn terminate_pid(pid: i32) -> io::Result<()> {
    let pid =
        Pid::from_raw(pid).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad pid"))?;
    rproc::kill_process(pid, Signal::TERM).map_err(io::Error::from)
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopOutcome {
    /// Nothing was running.
    NotRunning,
    /// The group left after SIGTERM.
    Terminated,
    /// Something was still there after the grace period and got SIGKILL.
    Killed,
}

/// SIGTERM to the group, SIGKILL to whatever is left after `grace`; waits until the group is
/// gone (or a few seconds after SIGKILL).
pub fn stop_group(pgid: i32, grace: Duration) -> io::Result<StopOutcome> {
    if !group_alive(pgid) {
        return Ok(StopOutcome::NotRunning);
    }
    signal_group(pgid, false)?;
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !group_alive(pgid) {
            return Ok(StopOutcome::Terminated);
        }
        reap_children();
        std::thread::sleep(Duration::from_millis(20));
    }
    if !group_alive(pgid) {
        return Ok(StopOutcome::Terminated);
    }
    signal_group(pgid, true)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_alive(pgid) && Instant::now() < deadline {
        reap_children();
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(StopOutcome::Killed)
}

/// Replaces this process with `program` from the directory of the running executable,
/// given this process's own arguments (`pas serve ...` becomes `pas-serve serve ...`).
/// Returns only when it cannot.
pub fn exec_sibling(program: &str) -> crate::error::Result<()> {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe().map_err(|e| {
        crate::error::Error::failure(format!("cannot find the pas executable: {e}"))
    })?;
    let path = me.with_file_name(program);
    let err = std::process::Command::new(&path)
        .args(std::env::args_os().skip(1))
        .exec();
    Err(crate::error::Error::failure(format!(
        "cannot run {}: {err}",
        path.display()
    ))
    .hint(format!(
        "`pas serve` runs the {program} program installed next to pas; install both (cargo install --path . does)"
    )))
}

/// Collects exited children so they do not linger as zombies (for long-running commands).
pub fn reap_children() {
    while let Ok(Some(_)) = rproc::waitpid(None, rproc::WaitOptions::NOHANG) {}
}

/// Runs `work` on a thread of its own and waits for it; on this thread when no thread can
/// be made (`work` then runs here, once). A long-lived process whose occasional steps go
/// deep (the supervisor's start-up and restarts) keeps only its own shallow stack resident:
/// the pages the steps touched go with their thread's stack when it ends, provided the
/// C library does not keep dead threads' stacks for reuse (`pas-supervise` runs with
/// glibc's `glibc.pthread.stack_cache_size=0` and a single malloc arena).
pub fn on_own_stack<T: Send>(mut work: impl FnMut() -> T + Send) -> T {
    let ran = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("pas-step".into())
            .spawn_scoped(scope, &mut work)
            .map(|thread| thread.join())
    });
    match ran {
        Ok(Ok(out)) => out,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // No thread to be had (too many, or an address-space limit): here instead.
        Err(_) => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_on_its_own_stack_runs_once_on_another_thread_and_its_panic_comes_back() {
        let here = std::thread::current().id();
        let mut runs = 0;
        let there = on_own_stack(|| {
            runs += 1;
            std::thread::current().id()
        });
        assert_eq!(runs, 1);
        assert_ne!(there, here);
        let panicked = std::panic::catch_unwind(|| on_own_stack(|| -> u8 { panic!("deep") }));
        let payload = panicked.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"deep"));
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not_it() {
        let me = std::process::id() as i32;
        let start = start_time(me).unwrap();
        assert!(alive(me, Some(start)));
        assert!(alive(me, None));
        assert!(!alive(me, Some(start + 1)));
        assert!(!alive(i32::MAX, None));
    }
}
