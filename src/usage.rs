//! What processes use and what the machine has, read from the operating system (`/proc`),
//! never from the store.
//!
//! An agent's usage is that of its whole process tree: its pid and every descendant, found
//! through the children files of `/proc/PID/task/*/` ([`Snapshot::trees_of`]: the cost is
//! the tree's size, not the machine's process count). CPU time
//! adds each live member's own and waited-for children's time, so a child that already
//! exited is still counted once (in the parent that reaped it). One-shot commands report
//! CPU seconds and the percent since the agent's process started ([`Usage::cpu_percent`]);
//! `pas top` turns two successive samples into the percent of the last interval
//! ([`cpu_percent_between`]).
//!
//! One pass over every `/proc/*/stat` ([`Snapshot::take`]) finds the processes `pas kill`
//! must end (a group's members need not descend from one another, [`job_processes`]), and
//! [`stop_tree`] ends them: SIGTERM, a grace, SIGKILL, and a bounded wait until they are
//! gone.

use std::collections::{HashMap, HashSet};
use std::io;
use std::time::{Duration, Instant};

use rustix::process::{self as rproc, Pid, Signal};
use serde::Serialize;

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proc {
    /// Its id.
    pub pid: i32,
    /// Its parent's id.
    pub ppid: i32,
    /// Its process group.
    pub pgrp: i32,
    /// Its state letter (`R`, `S`, `Z`...).
    pub state: char,
    /// Its start time, clock ticks since boot.
    pub start: u64,
    /// CPU time of it and its reaped children, in clock ticks.
    pub cpu_ticks: u64,
    /// Threads.
    pub threads: u64,
    /// Resident memory, in pages.
    pub rss_pages: u64,
}

impl Proc {
    /// Parses the text of `/proc/<pid>/stat`.
    pub fn parse(text: &str) -> Option<Proc> {
        let pid = text.split_whitespace().next()?.parse().ok()?;
        // The command name is in parentheses and may contain spaces: parse after the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields after the name, counting from 0: state, ppid, pgrp, ... utime (11), stime,
        // cutime, cstime (14), ..., num_threads (17), ..., starttime (19), vsize, rss (21).
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok());
        let ticks = (11..=14).map(num).sum::<Option<i64>>()?;
        Some(Proc {
            pid,
            state: f.first()?.chars().next()?,
            ppid: i32::try_from(num(1)?).ok()?,
            pgrp: i32::try_from(num(2)?).ok()?,
            cpu_ticks: u64::try_from(ticks.max(0)).ok()?,
            threads: u64::try_from(num(17)?.max(0)).ok()?,
            start: u64::try_from(num(19)?).ok()?,
            rss_pages: u64::try_from(num(21)?.max(0)).ok()?,
        })
    }

    /// Whether it has exited (a zombie waiting for its parent, or dead).
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Every process of the machine at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The processes, by pid.
    pub procs: HashMap<i32, Proc>,
    /// Seconds since boot when it was taken (`/proc/uptime`).
    pub uptime: Option<f64>,
}

impl Snapshot {
    /// Reads `/proc/*/stat` once; processes that leave meanwhile are skipped.
    pub fn take() -> io::Result<Snapshot> {
        let mut procs = HashMap::new();
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some(p) = Proc::parse(&text) {
                procs.insert(pid, p);
            }
        }
        let uptime = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse().ok());
        Ok(Snapshot { procs, uptime })
    }

    /// The processes of the trees under `roots` only, found through each process's
    /// `/proc/PID/task/TID/children` files: its cost is the trees' size, not the machine's
    /// process count. Where the kernel has no children files, every process is read.
    pub fn trees_of(roots: &[i32]) -> io::Result<Snapshot> {
        if !std::path::Path::new("/proc/self/task")
            .join(std::process::id().to_string())
            .join("children")
            .exists()
        {
            return Snapshot::take();
        }
        let mut procs = HashMap::new();
        let mut todo: Vec<i32> = roots.to_vec();
        while let Some(pid) = todo.pop() {
            if procs.contains_key(&pid) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue; // gone meanwhile
            };
            let Some(p) = Proc::parse(&text) else {
                continue;
            };
            procs.insert(pid, p);
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let Ok(kids) = std::fs::read_to_string(task.path().join("children")) else {
                    continue;
                };
                todo.extend(
                    kids.split_whitespace()
                        .filter_map(|k| k.parse::<i32>().ok()),
                );
            }
        }
        let uptime = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse().ok());
        Ok(Snapshot { procs, uptime })
    }

    /// `roots` (those that exist) and all their descendants, roots first.
    pub fn tree(&self, roots: &[i32]) -> Vec<i32> {
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for p in self.procs.values() {
            children.entry(p.ppid).or_default().push(p.pid);
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut todo: Vec<i32> = roots
            .iter()
            .copied()
            .filter(|r| self.procs.contains_key(r))
            .collect();
        while let Some(pid) = todo.pop() {
            if !seen.insert(pid) {
                continue;
            }
            out.push(pid);
            if let Some(kids) = children.get(&pid) {
                todo.extend(kids.iter().copied());
            }
        }
        out
    }

    /// The members of process group `pgid`.
    pub fn group(&self, pgid: i32) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .procs
            .values()
            .filter(|p| p.pgrp == pgid)
            .map(|p| p.pid)
            .collect();
        v.sort_unstable();
        v
    }

    /// The usage of `pid`'s tree, when `pid` runs and (if given) started at `start`.
    pub fn usage_of(&self, pid: i32, start: Option<u64>, host: &Host) -> Option<Usage> {
        let root = self.procs.get(&pid)?;
        if root.exited() || start.is_some_and(|s| s != root.start) {
            return None;
        }
        let samples: Vec<Sample> = self
            .tree(&[pid])
            .into_iter()
            .filter_map(|p| self.procs.get(&p))
            .filter(|p| !p.exited())
            .map(|p| Sample::read(p, host))
            .collect();
        let elapsed = self
            .uptime
            .map(|up| up - root.start as f64 / host.ticks_per_second);
        Some(aggregate(&samples, elapsed))
    }
}

/// The facts of this machine that turn `/proc` numbers into units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Host {
    /// Clock ticks per second (`AT_CLKTCK`).
    pub ticks_per_second: f64,
    /// Bytes per page (`AT_PAGESZ`).
    pub page_size: u64,
}

impl Host {
    /// Read from this process's auxiliary vector (`/proc/self/auxv`), which the kernel
    /// fills with both; Linux's usual values when it cannot be read.
    pub fn read() -> Host {
        let mut host = Host {
            ticks_per_second: 100.0,
            page_size: 4096,
        };
        let Ok(bytes) = std::fs::read("/proc/self/auxv") else {
            return host;
        };
        const WORD: usize = std::mem::size_of::<usize>();
        let words: Vec<usize> = bytes
            .chunks_exact(WORD)
            .filter_map(|c| c.try_into().ok().map(usize::from_ne_bytes))
            .collect();
        for pair in words.chunks_exact(2) {
            match pair[0] {
                6 if pair[1] > 0 => host.page_size = pair[1] as u64, // AT_PAGESZ
                17 if pair[1] > 0 => host.ticks_per_second = pair[1] as f64, // AT_CLKTCK
                _ => {}
            }
        }
        host
    }
}

/// What one process uses, in units.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// CPU seconds (own and reaped children's).
    pub cpu_seconds: f64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors; `None` when `/proc/<pid>/fd` may not be read.
    pub open_files: Option<u64>,
    /// `/proc/<pid>/io`; `None` when it may not be read.
    pub io: Option<Io>,
}

/// Bytes read and written, from `/proc/<pid>/io`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Io {
    /// Bytes fetched from storage (`read_bytes`).
    pub read_bytes: u64,
    /// Bytes sent to storage (`write_bytes`).
    pub write_bytes: u64,
    /// Bytes read by any read call, cache and pipes included (`rchar`).
    pub read_chars: u64,
    /// Bytes written by any write call (`wchar`).
    pub write_chars: u64,
}

impl Io {
    /// Parses the text of `/proc/<pid>/io`.
    pub fn parse(text: &str) -> Option<Io> {
        let mut io = Io::default();
        let mut seen = 0;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let Ok(n) = value.trim().parse::<u64>() else {
                continue;
            };
            let slot = match key {
                "read_bytes" => &mut io.read_bytes,
                "write_bytes" => &mut io.write_bytes,
                "rchar" => &mut io.read_chars,
                "wchar" => &mut io.write_chars,
                _ => continue,
            };
            *slot = n;
            seen += 1;
        }
        (seen == 4).then_some(io)
    }
}

impl Sample {
    /// Reads the files of `p` beyond its `stat`.
    fn read(p: &Proc, host: &Host) -> Sample {
        let open_files = std::fs::read_dir(format!("/proc/{}/fd", p.pid))
            .ok()
            .map(|d| d.count() as u64);
        let io = std::fs::read_to_string(format!("/proc/{}/io", p.pid))
            .ok()
            .and_then(|t| Io::parse(&t));
        Sample {
            rss_bytes: p.rss_pages * host.page_size,
            cpu_seconds: p.cpu_ticks as f64 / host.ticks_per_second,
            threads: p.threads,
            open_files,
            io,
        }
    }
}

/// What a process tree uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Live processes in the tree.
    pub processes: u64,
    /// Resident memory of them all, bytes.
    pub rss_bytes: u64,
    /// CPU seconds used so far.
    pub cpu_seconds: f64,
    /// CPU percent (100 = one core): since the agent's process started in one-shot
    /// commands, over the last refresh in `pas top`.
    pub cpu_percent: Option<f64>,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors (of the processes whose `/proc/<pid>/fd` pas may read).
    pub open_files: Option<u64>,
    /// IO of the processes whose `/proc/<pid>/io` pas may read.
    pub io: Option<Io>,
}

/// Adds up a tree's samples; `elapsed` is how long its root has run (seconds), for the
/// percent since start.
pub fn aggregate(samples: &[Sample], elapsed: Option<f64>) -> Usage {
    let mut u = Usage {
        processes: samples.len() as u64,
        ..Usage::default()
    };
    for s in samples {
        u.rss_bytes += s.rss_bytes;
        u.cpu_seconds += s.cpu_seconds;
        u.threads += s.threads;
        if let Some(n) = s.open_files {
            *u.open_files.get_or_insert(0) += n;
        }
        if let Some(io) = s.io {
            let sum = u.io.get_or_insert_with(Io::default);
            sum.read_bytes += io.read_bytes;
            sum.write_bytes += io.write_bytes;
            sum.read_chars += io.read_chars;
            sum.write_chars += io.write_chars;
        }
    }
    u.cpu_percent = elapsed.and_then(|e| cpu_percent_between(0.0, u.cpu_seconds, e));
    u
}

/// CPU percent from two readings of CPU seconds `wall` seconds apart; `None` when no time
/// passed. A tree whose total went down (a child left without being reaped into it) shows 0.
pub fn cpu_percent_between(before: f64, after: f64, wall: f64) -> Option<f64> {
    if wall.is_finite() && wall > 0.0 {
        Some((((after - before).max(0.0) / wall) * 1000.0).round() / 10.0)
    } else {
        None
    }
}

/// What the machine has, measured: CPUs this process may use, `MemTotal`, and NVIDIA
/// GPUs listed under `/proc/driver/nvidia/gpus` (with their memory from `nvidia-smi` when
/// there are any). Amounts in `crate::ops::reservation::RESOURCES` order; GPU memory is
/// `None` (unknown) when there are GPUs but `nvidia-smi` does not answer.
pub fn machine() -> [Option<f64>; 4] {
    let cpu = std::thread::available_parallelism()
        .ok()
        .map(|n| n.get() as f64);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| mem_total(&t));
    let gpus = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    let gpu_mem = if gpus == 0 {
        Some(0.0)
    } else {
        std::process::Command::new("nvidia-smi")
            .args(["--query-gpu=memory.total", "--format=csv,noheader,nounits"])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(|l| l.trim().parse::<f64>().ok().map(|mib| mib * 1_048_576.0))
                    .sum::<Option<f64>>()
            })
    };
    [cpu, mem, Some(gpus as f64), gpu_mem]
}

/// `MemTotal` of `/proc/meminfo` text, bytes.
pub fn mem_total(meminfo: &str) -> Option<f64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Why a tree could not be ended.
#[derive(Debug)]
pub enum StopError {
    /// A signal was refused (`EPERM`: the process belongs to someone else).
    Signal {
        /// The process.
        pid: i32,
        /// The refusal.
        err: io::Error,
    },
    /// Processes were still there after SIGKILL and the wait.
    Survived(Vec<i32>),
}

impl std::fmt::Display for StopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopError::Signal { pid, err } => write!(f, "cannot signal process {pid}: {err}"),
            StopError::Survived(pids) => write!(
                f,
                "process{} {} still running after SIGKILL",
                if pids.len() == 1 { "" } else { "es" },
                pids.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// How a tree ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// Nothing was running.
    NotRunning,
    /// Everything left after SIGTERM.
    Terminated,
    /// Something was left after the grace and SIGKILL ended it.
    Killed,
}

/// What `pas kill` ends: whole process groups (signalled at once, as `kill -- -PGID` does,
/// so a shell and its children get the signal together) and single processes with their
/// start times (so a reused pid is never signalled).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Targets {
    /// Process groups.
    pub groups: Vec<i32>,
    /// Processes: pid and start time.
    pub procs: Vec<(i32, u64)>,
}

/// The processes a job names: the members of group `pgid` (or, when no group has that id,
/// the process with that pid: a job's pid given as its group) and `pid`, with all their
/// descendants.
pub fn job_processes(snap: &Snapshot, pgid: Option<i32>, pid: Option<i32>) -> Targets {
    let mut roots = Vec::new();
    let mut groups = Vec::new();
    if let Some(g) = pgid.filter(|g| *g > 0) {
        let members = snap.group(g);
        if members.is_empty() {
            roots.push(g);
        } else {
            groups.push(g);
            roots.extend(members);
        }
    }
    roots.extend(pid.filter(|p| *p > 0));
    let procs = snap
        .tree(&roots)
        .into_iter()
        .filter_map(|p| snap.procs.get(&p))
        .filter(|p| !p.exited())
        .map(|p| (p.pid, p.start))
        .collect();
    Targets { groups, procs }
}

/// The processes of `targets` still running (same pid and start time, not exited), with
/// any descendants they started since.
fn still_running(targets: &mut Vec<(i32, u64)>) -> io::Result<Vec<(i32, u64)>> {
    let snap = Snapshot::take()?;
    let live: Vec<i32> = targets
        .iter()
        .filter(|(pid, start)| {
            snap.procs
                .get(pid)
                .is_some_and(|p| p.start == *start && !p.exited())
        })
        .map(|(pid, _)| *pid)
        .collect();
    for pid in snap.tree(&live) {
        if let Some(p) = snap.procs.get(&pid).filter(|p| !p.exited()) {
            if !targets.iter().any(|(t, _)| *t == pid) {
                targets.push((pid, p.start));
            }
        }
    }
    Ok(targets
        .iter()
        .copied()
        .filter(|(pid, start)| {
            snap.procs
                .get(pid)
                .is_some_and(|p| p.start == *start && !p.exited())
        })
        .collect())
}

fn signal_all(groups: &[i32], procs: &[(i32, u64)], sig: Signal) -> Result<(), StopError> {
    let whole = groups.iter().map(|g| (*g, true));
    let single = procs.iter().map(|(pid, _)| (*pid, false));
    for (id, group) in whole.chain(single) {
        let Some(p) = Pid::from_raw(id) else {
            continue;
        };
        let sent = if group {
            rproc::kill_process_group(p, sig)
        } else {
            rproc::kill_process(p, sig)
        };
        match sent {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => {
                return Err(StopError::Signal {
                    pid: id,
                    err: e.into(),
                })
            }
        }
    }
    Ok(())
}

/// Ends `job`'s processes and whatever they start meanwhile: SIGTERM to its groups and each
/// process, up to `grace` for them to leave, SIGKILL to what is left, then up to `wait`
/// until none runs. Fails, rather than report an end that did not happen, when a signal is
/// refused or a process is still there.
pub fn stop_tree(job: Targets, grace: Duration, wait: Duration) -> Result<Ended, StopError> {
    let Targets { groups, mut procs } = job;
    let targets = &mut procs;
    let proc_error = |e: io::Error| StopError::Signal { pid: 0, err: e };
    let running = still_running(targets).map_err(proc_error)?;
    if running.is_empty() {
        return Ok(Ended::NotRunning);
    }
    signal_all(&groups, &running, Signal::TERM)?;
    let deadline = Instant::now() + grace;
    loop {
        crate::process::reap_children();
        let running = still_running(targets).map_err(proc_error)?;
        if running.is_empty() {
            return Ok(Ended::Terminated);
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + wait;
    let mut killed = false;
    loop {
        let running = still_running(targets).map_err(proc_error)?;
        if running.is_empty() {
            return Ok(if killed {
                Ended::Killed
            } else {
                Ended::Terminated
            });
        }
        if Instant::now() >= deadline {
            return Err(StopError::Survived(
                running.iter().map(|(p, _)| *p).collect(),
            ));
        }
        signal_all(&groups, &running, Signal::KILL)?;
        killed = true;
        crate::process::reap_children();
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: i32, ppid: i32, pgrp: i32, state: char) -> Proc {
        Proc {
            pid,
            ppid,
            pgrp,
            state,
            start: pid as u64 * 10,
            cpu_ticks: 0,
            threads: 1,
            rss_pages: 1,
        }
    }

    fn snap(procs: &[Proc]) -> Snapshot {
        Snapshot {
            procs: procs.iter().map(|p| (p.pid, *p)).collect(),
            uptime: None,
        }
    }

    #[test]
    fn stat_lines_parse_after_the_command_name() {
        let line = "4242 (my prog) x) S 1 4240 4240 0 -1 4194560 100 0 0 0 \
                    150 50 7 3 20 0 3 0 98765 12345678 2500 18446744073709551615";
        let p = Proc::parse(line).unwrap();
        assert_eq!(
            p,
            Proc {
                pid: 4242,
                ppid: 1,
                pgrp: 4240,
                state: 'S',
                start: 98765,
                cpu_ticks: 150 + 50 + 7 + 3,
                threads: 3,
                rss_pages: 2500,
            }
        );
        assert_eq!(Proc::parse("12 (short) S 1"), None);
        assert_eq!(Proc::parse("garbage"), None);
    }

    #[test]
    fn trees_follow_parent_links_and_jobs_name_groups_or_pids() {
        // 10 leads group 10 and has 11 (a non-leader in group 10) which has 12 and 13;
        // 20 is elsewhere; 14 is an exited child of 11.
        let s = snap(&[
            proc(1, 0, 1, 'S'),
            proc(10, 1, 10, 'S'),
            proc(11, 10, 10, 'S'),
            proc(12, 11, 10, 'S'),
            proc(13, 11, 13, 'S'),
            proc(14, 11, 10, 'Z'),
            proc(20, 1, 20, 'S'),
        ]);
        let sorted = |mut v: Vec<i32>| {
            v.sort_unstable();
            v
        };
        let pids = |t: Targets| {
            let procs = sorted(t.procs.into_iter().map(|(p, _)| p).collect());
            (t.groups, procs)
        };
        type Case = (Option<i32>, Option<i32>, (Vec<i32>, Vec<i32>));
        let cases: [Case; 7] = [
            (Some(10), None, (vec![10], vec![10, 11, 12, 13])),
            // 11 is no group leader: taken as a pid, with its children.
            (Some(11), None, (vec![], vec![11, 12, 13])),
            (None, Some(11), (vec![], vec![11, 12, 13])),
            (None, Some(12), (vec![], vec![12])),
            (None, Some(99), (vec![], vec![])),
            (Some(0), Some(-1), (vec![], vec![])),
            (Some(20), Some(12), (vec![20], vec![12, 20])),
        ];
        for (pgid, pid, want) in cases {
            assert_eq!(
                pids(job_processes(&s, pgid, pid)),
                want,
                "pgid {pgid:?} pid {pid:?}"
            );
        }
        assert_eq!(sorted(s.tree(&[11])), vec![11, 12, 13, 14]);
        assert_eq!(s.group(10), vec![10, 11, 12, 14]);
    }

    #[test]
    fn usage_adds_up_the_tree_and_cpu_percent_needs_time() {
        let a = Sample {
            rss_bytes: 1000,
            cpu_seconds: 2.0,
            threads: 3,
            open_files: Some(5),
            io: Some(Io {
                read_bytes: 1,
                write_bytes: 2,
                read_chars: 3,
                write_chars: 4,
            }),
        };
        let b = Sample {
            rss_bytes: 500,
            cpu_seconds: 1.0,
            threads: 1,
            open_files: None,
            io: None,
        };
        let cases: [(Vec<Sample>, Option<f64>, Usage); 3] = [
            (
                vec![],
                Some(10.0),
                Usage {
                    cpu_percent: Some(0.0),
                    ..Usage::default()
                },
            ),
            (
                vec![a, b],
                Some(10.0),
                Usage {
                    processes: 2,
                    rss_bytes: 1500,
                    cpu_seconds: 3.0,
                    cpu_percent: Some(30.0),
                    threads: 4,
                    open_files: Some(5),
                    io: a.io,
                },
            ),
            (
                vec![b],
                None,
                Usage {
                    processes: 1,
                    rss_bytes: 500,
                    cpu_seconds: 1.0,
                    cpu_percent: None,
                    threads: 1,
                    open_files: None,
                    io: None,
                },
            ),
        ];
        for (samples, elapsed, want) in cases {
            assert_eq!(aggregate(&samples, elapsed), want);
        }
        let percents = [
            (1.0, 1.5, 1.0, Some(50.0)),
            (1.0, 3.0, 1.0, Some(200.0)),
            (2.0, 1.0, 1.0, Some(0.0)),
            (1.0, 2.0, 0.0, None),
            (1.0, 2.0, f64::NAN, None),
        ];
        for (before, after, wall, want) in percents {
            assert_eq!(cpu_percent_between(before, after, wall), want);
        }
    }

    #[test]
    fn io_and_meminfo_parse() {
        let io = "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(
            Io::parse(io),
            Some(Io {
                read_bytes: 4096,
                write_bytes: 8192,
                read_chars: 10,
                write_chars: 20,
            })
        );
        assert_eq!(Io::parse("rchar: 10\n"), None);
        assert_eq!(
            mem_total("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16384.0 * 1024.0)
        );
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn this_process_has_usage_and_the_host_facts_are_sane() {
        let host = Host::read();
        assert!(host.page_size >= 4096 && host.ticks_per_second >= 100.0);
        let snap = Snapshot::take().unwrap();
        let me = std::process::id() as i32;
        let u = snap.usage_of(me, None, &host).unwrap();
        // The tree alone gives the same processes as the whole machine's snapshot.
        let child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        // Other tests of this process start and end children meanwhile: the two reads
        // agree once no child came or went between them (a bounded number of tries).
        let mut last = (Vec::new(), Vec::new());
        for _ in 0..50 {
            let (whole, trees) = (
                Snapshot::take().unwrap(),
                Snapshot::trees_of(&[me]).unwrap(),
            );
            let mut a = whole.tree(&[me]);
            let mut b = trees.tree(&[me]);
            a.sort_unstable();
            b.sort_unstable();
            assert!(b.contains(&(child.id() as i32)), "{b:?}");
            last = (a, b);
            if last.0 == last.1 {
                break;
            }
        }
        assert_eq!(last.0, last.1);
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(u.rss_bytes > 0 && u.threads >= 1 && u.processes >= 1);
        assert!(u.open_files.is_some_and(|n| n >= 3));
        let wrong_start = snap.procs[&me].start + 1;
        assert_eq!(snap.usage_of(me, Some(wrong_start), &host), None);
    }
}
