//! Control groups on this host: which hierarchies are mounted and writable (the input of
//! `ops::limits::rules::mechanism`), and one agent's group: made, limited, joined, read
//! and removed. Like `process`, this module talks to the kernel's files (`/proc`,
//! `/sys/fs/cgroup`), not to a store.
//!
//! An agent's group is `pas/<cell>@<hash>/<agent>`, the hash that of the cell's directory so
//! two missions roots with the same cell names never share one. Under cgroup v1 it is made
//! below the group pas itself runs in, under each controller (so a pas confined by its
//! service manager keeps its agents inside that confinement); under v2 below the root of the
//! unified hierarchy, since a v2 group that holds processes cannot have controllers enabled
//! for its children.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::ops::limits::rules::{Counters, Hierarchy, Mechanism, Plan, Probe};

/// The environment variable that turns cgroups off for pas (`off`): rlimits and nice only.
pub const CGROUPS_ENV: &str = "PAS_CGROUPS";

/// The v1 controllers an agent's group is made under: those of
/// [`crate::ops::limits::rules::CONTROLLERS`], and `cpuacct` (CPU use) when mounted.
const V1: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

/// The cgroup mounts of this process's mount namespace: `(type, mount point, options)`.
fn mounts() -> Vec<(String, PathBuf, Vec<String>)> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_, dir, kind, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
            matches!(kind, "cgroup" | "cgroup2").then(|| {
                (
                    kind.to_string(),
                    PathBuf::from(dir),
                    opts.split(',').map(str::to_string).collect(),
                )
            })
        })
        .collect()
}

/// This process's groups from `/proc/self/cgroup`: `(controllers, path)`; v2's line has
/// no controllers.
fn own_groups() -> Vec<(Vec<String>, String)> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut f = line.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((controllers, path.to_string()))
        })
        .collect()
}

fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

/// Where each hierarchy is: for v1, the directory of the group pas runs in under each
/// controller; for v2, the mount's root.
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// The unified hierarchy's mount point.
    v2: Option<PathBuf>,
    /// Each v1 controller's mount point and the group this process is in there.
    v1: Vec<(String, PathBuf, String)>,
}

/// Looks at the host: what is mounted, what pas may write, and whether cgroups are turned
/// off; returns the probe for the rules and where the hierarchies are.
pub fn probe() -> (Probe, Host) {
    let disabled = std::env::var(CGROUPS_ENV).is_ok_and(|v| v == "off");
    let own = own_groups();
    let mut probe = Probe {
        disabled,
        ..Probe::default()
    };
    let mut host = Host::default();
    for (kind, dir, opts) in mounts() {
        if kind == "cgroup2" {
            let controllers = std::fs::read_to_string(dir.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
            probe.v2 = Some(Hierarchy {
                controllers,
                writable: writable(&dir),
            });
            host.v2 = Some(dir);
            continue;
        }
        for c in V1 {
            if !opts.iter().any(|o| o == c) || host.v1.iter().any(|(n, ..)| n == c) {
                continue;
            }
            let path = own
                .iter()
                .find(|(cs, _)| cs.iter().any(|x| x == c))
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| "/".to_string());
            let base = dir.join(path.trim_start_matches('/'));
            probe.v1.push((
                c.to_string(),
                Hierarchy {
                    controllers: vec![c.to_string()],
                    writable: writable(&base),
                },
            ));
            host.v1.push((c.to_string(), dir.clone(), path));
        }
    }
    (probe, host)
}

/// The name of an agent's group below the base: `pas/<cell>@<hash>/<agent>`.
pub fn group_name(cell_dir: &Path, cell: &str, agent: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(cell_dir.as_os_str().as_encoded_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("pas/{cell}@{hash}/{agent}")
}

/// One agent's group: a directory per v1 controller, or one in the unified hierarchy.
#[derive(Debug, Clone)]
pub struct Group {
    /// Where it was made, and its name: to make it again ([`Group::remake`]).
    host: Host,
    name: String,
    mechanism: Mechanism,
    /// `(controller, directory, path in the hierarchy)`; v2 has one entry named `unified`.
    dirs: Vec<(String, PathBuf, String)>,
    /// Where this process was before it joined, to go back: `(cgroup.procs file)`.
    home: Vec<PathBuf>,
    /// The group's path inside its hierarchy, as `/proc/<pid>/cgroup` shows it.
    path: String,
    /// The memory limit set, to tell an OOM kill where the kernel does not count them.
    memory_limit: Option<u64>,
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.join(file).display())))
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`memory.events`, `pids.events`,
/// `memory.oom_control`).
fn keyed(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl Group {
    /// Makes (or reuses) the group `name` for `mechanism` (a cgroup one) and sets `plan`'s
    /// group limits on it.
    pub fn create(host: &Host, mechanism: Mechanism, name: &str, plan: &Plan) -> io::Result<Group> {
        let mut dirs = Vec::new();
        let mut home = Vec::new();
        let path;
        match mechanism {
            Mechanism::CgroupV2 => {
                let root = host
                    .v2
                    .clone()
                    .ok_or_else(|| io::Error::other("no unified cgroup hierarchy"))?;
                // Each level enables the controllers for the one below it.
                let mut dir = root.clone();
                for part in name.split('/') {
                    write(&dir, "cgroup.subtree_control", "+memory +cpu +pids")?;
                    dir = dir.join(part);
                    std::fs::create_dir_all(&dir)?;
                }
                let own = own_groups()
                    .into_iter()
                    .find(|(cs, _)| cs.is_empty())
                    .map(|(_, p)| p)
                    .unwrap_or_else(|| "/".to_string());
                let own = outside(&own, name);
                home.push(root.join(own.trim_start_matches('/')).join("cgroup.procs"));
                path = format!("/{name}");
                dirs.push(("unified".to_string(), dir, path.clone()));
            }
            Mechanism::CgroupV1 => {
                let mut memory_path = None;
                for (c, mount, own) in &host.v1 {
                    let own = outside(own, name);
                    let base = mount.join(own.trim_start_matches('/'));
                    let dir = base.join(name);
                    std::fs::create_dir_all(&dir)?;
                    home.push(base.join("cgroup.procs"));
                    let inside = format!("{}/{name}", own.trim_end_matches('/'));
                    if c == "memory" {
                        memory_path = Some(inside.clone());
                    }
                    dirs.push((c.clone(), dir, inside));
                }
                path = memory_path.unwrap_or_else(|| format!("/{name}"));
            }
            Mechanism::Rlimit => return Err(io::Error::other("rlimits make no group")),
        }
        let group = Group {
            host: host.clone(),
            name: name.to_string(),
            mechanism,
            dirs,
            home,
            path,
            memory_limit: plan.group_memory,
        };
        group.limit(plan)?;
        Ok(group)
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        let want = if self.mechanism == Mechanism::CgroupV2 {
            "unified"
        } else {
            controller
        };
        self.dirs
            .iter()
            .find(|(c, ..)| c == want)
            .map(|(_, d, _)| d.as_path())
    }

    /// Makes the group again as it was made (after a sweep took it for stale while it was
    /// empty, before its supervisor joined), with `plan`'s limits.
    pub fn remake(&self, plan: &Plan) -> io::Result<Group> {
        Group::create(&self.host, self.mechanism, &self.name, plan)
    }

    /// Whether the group's (first) directory is there.
    pub fn exists(&self) -> bool {
        self.dirs.first().is_some_and(|(_, d, _)| d.is_dir())
    }

    /// The group's path inside its hierarchy (`/proc/<pid>/cgroup` shows the same).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Sets the group's limits; a limit not asked for is lifted ("max", -1), so a changed
    /// file takes effect at the next start.
    fn limit(&self, plan: &Plan) -> io::Result<()> {
        const PERIOD: u64 = 100_000;
        let quota = plan
            .group_cpu
            .map(|c| ((c * PERIOD as f64).round() as u64).max(1000));
        if self.mechanism == Mechanism::CgroupV2 {
            let Some(dir) = self.dir("") else {
                return Ok(());
            };
            let max = |v: Option<u64>| v.map_or("max".to_string(), |v| v.to_string());
            write(dir, "memory.max", &max(plan.group_memory))?;
            if dir.join("memory.swap.max").exists() {
                // The limit holds memory and swap together, as v1's memsw does.
                write(
                    dir,
                    "memory.swap.max",
                    if plan.group_memory.is_some() {
                        "0"
                    } else {
                        "max"
                    },
                )?;
            }
            write(dir, "cpu.max", &format!("{} {PERIOD}", max(quota)))?;
            // cpu.shares 2..262144 onto cpu.weight 1..10000, as systemd maps them.
            let weight = plan
                .group_shares
                .map_or(100, |s| 1 + (s.saturating_sub(2) * 9999) / 262_142);
            write(dir, "cpu.weight", &weight.to_string())?;
            // One more process for the supervisor, which stays in the group.
            write(dir, "pids.max", &max(plan.group_pids.map(|p| p + 1)))?;
            return Ok(());
        }
        let unlimited = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
        if let Some(dir) = self.dir("memory") {
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            // memsw must stay at or above the memory limit: lift it first, set it last.
            if memsw.exists() {
                let _ = write(dir, "memory.memsw.limit_in_bytes", "-1");
            }
            write(dir, "memory.limit_in_bytes", &unlimited(plan.group_memory))?;
            if memsw.exists() {
                let _ = write(
                    dir,
                    "memory.memsw.limit_in_bytes",
                    &unlimited(plan.group_memory),
                );
            }
        }
        if let Some(dir) = self.dir("cpu") {
            write(dir, "cpu.cfs_period_us", &PERIOD.to_string())?;
            write(
                dir,
                "cpu.cfs_quota_us",
                &quota.map_or("-1".to_string(), |q| q.to_string()),
            )?;
            write(
                dir,
                "cpu.shares",
                &plan.group_shares.unwrap_or(1024).to_string(),
            )?;
        }
        if let Some(dir) = self.dir("pids") {
            // One more process for the supervisor, which stays in the group.
            write(
                dir,
                "pids.max",
                &plan
                    .group_pids
                    .map_or("max".to_string(), |p| (p + 1).to_string()),
            )?;
        }
        Ok(())
    }

    /// Moves this process into the group, where it is not yet: what it spawns now starts
    /// there. Undone by [`Group::leave`]. A move costs the kernel an RCU grace period
    /// (milliseconds under v1), so the supervisor joins once and stays.
    pub fn join(&self) -> io::Result<()> {
        let me = std::process::id().to_string();
        let now = own_groups();
        for (c, dir, inside) in &self.dirs {
            let there = now.iter().any(|(cs, p)| {
                p == inside && (cs.iter().any(|x| x == c) || (cs.is_empty() && c == "unified"))
            });
            if !there {
                write(dir, "cgroup.procs", &me)?;
            }
        }
        Ok(())
    }

    /// Moves this process back where it was before [`Group::join`].
    pub fn leave(&self) -> io::Result<()> {
        let me = std::process::id().to_string();
        for procs in &self.home {
            std::fs::write(procs, &me)?;
        }
        Ok(())
    }

    /// The counters a death is judged by, as they are now; [`Counters`] of a run are the
    /// difference between two readings ([`Reading::since`]).
    pub fn read(&self) -> Reading {
        let memory = self.dir("memory");
        let (oom_kills, failcnt, peak) = match (self.mechanism, memory) {
            (Mechanism::CgroupV2, Some(d)) => {
                (keyed(&d.join("memory.events"), "oom_kill"), None, None)
            }
            (_, Some(d)) => (
                keyed(&d.join("memory.oom_control"), "oom_kill"),
                read_u64(&d.join("memory.failcnt")),
                read_u64(&d.join("memory.max_usage_in_bytes")),
            ),
            (_, None) => (None, None, None),
        };
        let pids_refused = self
            .dir("pids")
            .and_then(|d| keyed(&d.join("pids.events"), "max"))
            .unwrap_or(0);
        Reading {
            oom_kills,
            failcnt,
            peak,
            pids_refused,
            limit: self.memory_limit,
        }
    }

    /// The pids in the group.
    fn pids(&self) -> Vec<i32> {
        let mut all = Vec::new();
        for (_, dir, _) in &self.dirs {
            let text = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for p in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                if !all.contains(&p) {
                    all.push(p);
                }
            }
        }
        all
    }

    /// Removes the group once it is empty, then its cell's group when no other agent's is
    /// in it: what is left in it may end by itself (or by a stop in progress) for `linger`;
    /// then it is killed (SIGKILL; processes that left the agent's process group too) and
    /// waited for up to `wait`. An error names what is left.
    pub fn remove(self, linger: Duration, wait: Duration) -> io::Result<()> {
        let lingering = Instant::now() + linger;
        while !self.pids().is_empty() && Instant::now() < lingering {
            crate::process::reap_children();
            std::thread::sleep(Duration::from_millis(20));
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = self.pids();
            if left.is_empty() {
                break;
            }
            for p in &left {
                let _ = crate::process::kill_pid(*p);
            }
            crate::process::reap_children();
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "processes {left:?} are still in {}",
                    self.path
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for (_, dir, _) in &self.dirs {
            // A v1 group can be briefly busy after its last process left.
            let mut result = std::fs::remove_dir(dir);
            while result.is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                result = std::fs::remove_dir(dir);
            }
            if let Err(e) = result {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(e);
                }
            }
            // The cell's group goes with its last agent's; busy means another is there.
            if let Some(cell) = dir.parent() {
                let _ = std::fs::remove_dir(cell);
            }
        }
        Ok(())
    }
}

/// The directories of agents' groups on this host that hold no process and have not
/// changed for `quiet`: `pas/<cell>@<hash>/<agent>` under each hierarchy's base (for v1,
/// the group pas runs in under each controller). A group holds its supervisor for as long
/// as the supervisor lives, so an empty one was left by a supervisor that was killed;
/// `quiet` spares a group just made, whose supervisor has not joined it yet.
pub fn stale_groups(host: &Host, quiet: Duration) -> Vec<PathBuf> {
    let mut bases: Vec<PathBuf> = host.v2.iter().map(|d| d.join("pas")).collect();
    for (_, mount, own) in &host.v1 {
        let own = match own.find("/pas/") {
            Some(i) => &own[..i],
            None => own.as_str(),
        };
        bases.push(mount.join(own.trim_start_matches('/')).join("pas"));
    }
    let mut stale = Vec::new();
    for base in bases {
        let Ok(cells) = std::fs::read_dir(&base) else {
            continue;
        };
        for cell in cells.filter_map(|e| e.ok()).map(|e| e.path()) {
            let Ok(agents) = std::fs::read_dir(&cell) else {
                continue;
            };
            for dir in agents.filter_map(|e| e.ok()).map(|e| e.path()) {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs"));
                let empty = procs.is_ok_and(|p| p.trim().is_empty());
                let changed = std::fs::metadata(&dir).and_then(|m| m.modified());
                let old = changed.is_ok_and(|t| t.elapsed().is_ok_and(|e| e >= quiet));
                if empty && old {
                    stale.push(dir);
                }
            }
        }
    }
    stale
}

/// Removes an empty group's directory, and its cell's when no other agent's is left in it.
pub fn remove_group_dir(dir: &Path) -> io::Result<()> {
    std::fs::remove_dir(dir)?;
    if let Some(cell) = dir.parent() {
        let _ = std::fs::remove_dir(cell);
    }
    Ok(())
}

/// The temporary directories of agents whose supervisor is gone: in the temporary
/// directory, `pas-<cell>@<8 hex digits>-<agent>.<pid>` whose pid is no process and that
/// belong to one of `uids`: those of the agent whose names start with `agent`
/// ([`tmpdir_prefix`]), or of any. Their names.
pub fn stale_tmpdirs(agent: Option<&str>, uids: &[u32]) -> Vec<std::ffi::OsString> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        // Links are not followed here either: only directories are candidates, and only
        // those of pas's user or the agent's (others are not pas's to judge).
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| e.metadata().is_ok_and(|m| uids.contains(&m.uid())))
        .map(|e| e.file_name())
        .filter(|name| {
            let Some(name) = name.to_str() else {
                return false;
            };
            let Some((stem, pid)) = name.rsplit_once('.') else {
                return false;
            };
            let hashed = stem.split_once('@').is_some_and(|(_, rest)| {
                rest.len() > 9
                    && rest.as_bytes()[8] == b'-'
                    && rest[..8].bytes().all(|b| b.is_ascii_hexdigit())
            });
            let gone = pid.parse::<i32>().is_ok_and(|p| {
                p > 0 && !crate::process::alive(p, None) && p as u32 != std::process::id()
            });
            agent.is_none_or(|a| a == stem) && name.starts_with("pas-") && hashed && gone
        })
        .collect()
}

/// The group `own` is in, or the one it is below when that is the agent's group `name`
/// itself (a supervisor stays in its agent's group between runs).
fn outside(own: &str, name: &str) -> String {
    match own.strip_suffix(&format!("/{name}")) {
        Some("") => "/".to_string(),
        Some(base) => base.to_string(),
        None => own.to_string(),
    }
}

/// One reading of a group's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    oom_kills: Option<u64>,
    failcnt: Option<u64>,
    peak: Option<u64>,
    pids_refused: u64,
    limit: Option<u64>,
}

impl Reading {
    /// What happened between `start` and this reading.
    pub fn since(&self, start: &Reading) -> Counters {
        let grew = |now: Option<u64>, then: Option<u64>| match (now, then) {
            (Some(n), Some(t)) => Some(n.saturating_sub(t)),
            (Some(n), None) => Some(n),
            _ => None,
        };
        // Within a page per CPU of the limit counts as at it.
        let at_limit = match (self.peak, self.limit) {
            (Some(p), Some(l)) => p + (1 << 20) >= l,
            _ => false,
        };
        Counters {
            oom_kills: grew(self.oom_kills, start.oom_kills),
            memory_at_limit: at_limit && grew(self.failcnt, start.failcnt).is_some_and(|n| n > 0),
            pids_refused: self.pids_refused.saturating_sub(start.pids_refused),
        }
    }
}

/// The name of an agent's temporary directory in the temporary directory:
/// `pas-<cell>@<hash>-<agent>.<supervisor pid>`, from its group's name.
pub fn tmpdir_name(group: &str, pid: u32) -> String {
    format!("{}.{pid}", tmpdir_prefix(group))
}

/// What the names of an agent's temporary directories start with, whichever supervisor
/// made them: `pas-<cell>@<hash>-<agent>` (then `.` and the pid).
pub fn tmpdir_prefix(group: &str) -> String {
    format!("pas-{}", group.trim_start_matches("pas/").replace('/', "-"))
}

/// The per-agent temporary directory (`TMPDIR`) of isolation level_1 and up:
/// `<tmp>/pas-<cell>@<hash>-<agent>.<supervisor pid>` (two supervisors racing to start one
/// agent never share one), made empty and owned by `owner` (uid, gid) when given. What
/// was there under that name before is removed without following a symbolic link, and
/// only when it is a directory of pas's user or of `owner`.
pub fn fresh_tmpdir(name: &str, owner: Option<(u32, u32)>) -> io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let base = std::env::temp_dir();
    let leaf = tmpdir_name(name, std::process::id());
    let dir = base.join(&leaf);
    match remove_owned_dir(&base, &leaf, &owners(owner)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
    }
    Ok(dir)
}

/// The uids a temporary directory of pas's may belong to: pas's own, and the agent's
/// (`owner`) when known.
pub fn owners(owner: Option<(u32, u32)>) -> Vec<u32> {
    let mut uids = vec![rustix::process::geteuid().as_raw()];
    uids.extend(owner.map(|(uid, _)| uid));
    uids
}

/// Empties the temporary directory `dir` of a previous run for the next one, keeping the
/// directory: false when it is not one to keep (gone, a symbolic link, not a directory,
/// owned by a uid other than pas's or `owner`'s), for the caller to make a fresh one.
pub fn renew_tmpdir(dir: &Path, owner: Option<(u32, u32)>) -> bool {
    use rustix::fs::{fstat, openat, Mode, OFlags, CWD};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let Ok(fd) = openat(CWD, dir, flags, Mode::empty()) else {
        return false;
    };
    let owned = fstat(&fd).is_ok_and(|st| owners(owner).contains(&st.st_uid));
    owned && empty_dir(&fd, 0).is_ok()
}

/// Removes a temporary directory made by [`fresh_tmpdir`], and what is in it.
pub fn remove_tmpdir(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    let (Some(base), Some(leaf)) = (dir.parent(), dir.file_name()) else {
        return Err(io::Error::other(format!("{} has no parent", dir.display())));
    };
    match remove_owned_dir(base, leaf, &owners(owner)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// How deep [`empty_dir`] goes before it gives up: no directory pas makes is that deep.
const MAX_DEPTH: usize = 64;

/// Removes the directory `name` in `parent` and everything in it, when it is a directory
/// (not a symbolic link: never followed) owned by one of `uids`; else an error saying
/// which (`NotFound` when there is nothing of that name). The walk holds each directory
/// open and works relative to it (`openat` with `O_NOFOLLOW`, `unlinkat`): a directory
/// swapped for a link on the way is unlinked, never entered.
pub fn remove_owned_dir(
    parent: &Path,
    name: impl AsRef<std::ffi::OsStr>,
    uids: &[u32],
) -> io::Result<()> {
    use rustix::fs::{fstat, openat, unlinkat, AtFlags, Mode, OFlags, CWD};
    let name = name.as_ref();
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let parent_fd = openat(CWD, parent, dir_flags, Mode::empty())?;
    let fd = match openat(
        &parent_fd,
        name,
        dir_flags | OFlags::NOFOLLOW,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::NOTDIR) => {
            return Err(io::Error::other(format!(
                "{} is not a directory (a symbolic link or a file): left alone",
                parent.join(name).display()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let uid = fstat(&fd)?.st_uid;
    if !uids.contains(&uid) {
        return Err(io::Error::other(format!(
            "{} belongs to uid {uid}, not to pas or the agent: left alone",
            parent.join(name).display()
        )));
    }
    empty_dir(&fd, 0)?;
    unlinkat(&parent_fd, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// Removes everything in the open directory `fd`, depth first, never following a link.
fn empty_dir(fd: &rustix::fd::OwnedFd, depth: usize) -> io::Result<()> {
    use rustix::fs::{openat, unlinkat, AtFlags, Dir, Mode, OFlags};
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "more than {MAX_DEPTH} directories deep"
        )));
    }
    let mut names = Vec::new();
    for entry in Dir::read_from(fd)? {
        let name = entry?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for name in names {
        match openat(fd, name.as_c_str(), flags, Mode::empty()) {
            Ok(sub) => {
                empty_dir(&sub, depth + 1)?;
                unlinkat(fd, name.as_c_str(), AtFlags::REMOVEDIR)?;
            }
            // A file, a link (not followed), a socket...: unlinked itself.
            Err(rustix::io::Errno::NOTDIR) | Err(rustix::io::Errno::LOOP) => {
                match unlinkat(fd, name.as_c_str(), AtFlags::empty()) {
                    Err(rustix::io::Errno::NOENT) => {}
                    other => other?,
                }
            }
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_differ_by_cell_directory_and_keep_the_ids() {
        let a = group_name(Path::new("/r1/c1"), "c1", "a1");
        let b = group_name(Path::new("/r2/c1"), "c1", "a1");
        assert!(a.starts_with("pas/c1@") && a.ends_with("/a1"), "{a}");
        assert_eq!(a.len(), "pas/c1@".len() + 8 + "/a1".len());
        assert_ne!(a, b, "two roots with the same cell id never share a group");
        assert_eq!(a, group_name(Path::new("/r1/c1"), "c1", "a1"));
    }

    #[test]
    #[rustfmt::skip]
    fn a_runs_counters_are_the_difference_of_two_readings() {
        let r = |oom: Option<u64>, failcnt: Option<u64>, peak: Option<u64>, pids: u64| Reading {
            oom_kills: oom, failcnt, peak, pids_refused: pids, limit: Some(64 << 20),
        };
        let cases = [
            ("nothing happened", r(Some(2), Some(5), Some(1 << 20), 1), r(Some(2), Some(5), Some(1 << 20), 1),
                Counters { oom_kills: Some(0), memory_at_limit: false, pids_refused: 0 }),
            ("an oom kill during the run", r(Some(2), None, None, 0), r(Some(3), None, None, 0),
                Counters { oom_kills: Some(1), memory_at_limit: false, pids_refused: 0 }),
            ("not counted; the limit hit with the peak at it", r(None, Some(0), None, 0), r(None, Some(9), Some(64 << 20), 0),
                Counters { oom_kills: None, memory_at_limit: true, pids_refused: 0 }),
            ("the limit hit but the peak far below (reclaimed, not killed)", r(None, Some(0), None, 0), r(None, Some(9), Some(8 << 20), 0),
                Counters { oom_kills: None, memory_at_limit: false, pids_refused: 0 }),
            ("forks refused", r(None, None, None, 4), r(None, None, None, 7),
                Counters { oom_kills: None, memory_at_limit: false, pids_refused: 3 }),
        ];
        for (name, start, end, want) in cases {
            assert_eq!(end.since(&start), want, "{name}");
        }
    }

    #[test]
    fn keyed_files_are_read_by_key() {
        let dir = std::env::temp_dir().join(format!("pas-keyed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("memory.oom_control");
        std::fs::write(&file, "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n").unwrap();
        assert_eq!(keyed(&file, "oom_kill"), Some(4));
        assert_eq!(keyed(&file, "under_oom"), Some(0));
        assert_eq!(keyed(&file, "max"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn removing_a_temporary_directory_never_follows_a_link_nor_takes_anothers() {
        use std::os::unix::fs::symlink;
        let base = std::env::temp_dir().join(format!("pas-rm-{}", std::process::id()));
        let outside = base.join("outside");
        std::fs::create_dir_all(outside.join("keep")).unwrap();
        std::fs::write(outside.join("keep/file"), "x").unwrap();
        let me = rustix::process::geteuid().as_raw();
        // A tree with files, a subdirectory and links to the outside, inside and on top.
        let tree = base.join("pas-c@1-a.1");
        std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
        std::fs::write(tree.join("sub/deeper/f"), "x").unwrap();
        symlink(&outside, tree.join("link")).unwrap();
        symlink(&outside, tree.join("sub/link")).unwrap();
        symlink(&outside, base.join("pas-c@1-a.2")).unwrap();
        std::fs::write(base.join("pas-c@1-a.3"), "a file").unwrap();
        let cases: [(&str, &str, &[u32], bool); 4] = [
            ("a link planted under the name", "pas-c@1-a.2", &[me], false),
            ("a file under the name", "pas-c@1-a.3", &[me], false),
            (
                "a directory of another uid",
                "pas-c@1-a.1",
                &[me + 1],
                false,
            ),
            ("pas's own directory", "pas-c@1-a.1", &[me], true),
        ];
        for (name, leaf, uids, removed) in cases {
            let result = remove_owned_dir(&base, leaf, uids);
            assert_eq!(result.is_ok(), removed, "{name}: {result:?}");
            assert!(
                outside.join("keep/file").exists(),
                "{name}: the outside is intact"
            );
        }
        assert!(!tree.exists());
        assert!(
            base.join("pas-c@1-a.2").symlink_metadata().is_ok(),
            "the link stays"
        );
        let gone = remove_owned_dir(&base, "pas-c@1-a.9", &[me]).unwrap_err();
        assert_eq!(gone.kind(), io::ErrorKind::NotFound);
        // Renewing empties a directory in place; a link is not renewed.
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/f"), "x").unwrap();
        symlink(&outside, tree.join("link")).unwrap();
        assert!(renew_tmpdir(&tree, None));
        assert_eq!(std::fs::read_dir(&tree).unwrap().count(), 0);
        assert!(!renew_tmpdir(&base.join("pas-c@1-a.2"), None));
        assert!(outside.join("keep/file").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_group_is_made_and_limited_in_a_hierarchy_laid_out_like_sys_fs_cgroup() {
        let base = std::env::temp_dir().join(format!("pas-fakecg-{}", std::process::id()));
        let plan = |memory: Option<u64>, cpu: Option<f64>, shares: Option<u64>, pids| Plan {
            group_memory: memory,
            group_cpu: cpu,
            group_shares: shares,
            group_pids: pids,
            ..Plan::default()
        };
        let name = "pas/c1@0123abcd/a1";
        #[rustfmt::skip]
        type Case<'a> = (&'a str, Mechanism, Plan, &'a [(&'a str, &'a str)]);
        let cases: [Case; 4] = [
            (
                "v2, every limit",
                Mechanism::CgroupV2,
                plan(Some(64 << 20), Some(0.5), Some(512), Some(10)),
                &[
                    ("memory.max", "67108864"),
                    ("memory.swap.max", "0"),
                    ("cpu.max", "50000 100000"),
                    ("cpu.weight", "20"),
                    ("pids.max", "11"),
                ],
            ),
            (
                "v2, none: lifted",
                Mechanism::CgroupV2,
                plan(None, None, None, None),
                &[
                    ("memory.max", "max"),
                    ("memory.swap.max", "max"),
                    ("cpu.max", "max 100000"),
                    ("cpu.weight", "100"),
                    ("pids.max", "max"),
                ],
            ),
            (
                "v1, every limit",
                Mechanism::CgroupV1,
                plan(Some(64 << 20), Some(0.2), Some(512), Some(10)),
                &[
                    ("memory/memory.limit_in_bytes", "67108864"),
                    ("memory/memory.memsw.limit_in_bytes", "67108864"),
                    ("cpu/cpu.cfs_quota_us", "20000"),
                    ("cpu/cpu.cfs_period_us", "100000"),
                    ("cpu/cpu.shares", "512"),
                    ("pids/pids.max", "11"),
                ],
            ),
            (
                "v1, none: lifted",
                Mechanism::CgroupV1,
                plan(None, None, None, None),
                &[
                    ("memory/memory.limit_in_bytes", "-1"),
                    ("memory/memory.memsw.limit_in_bytes", "-1"),
                    ("cpu/cpu.cfs_quota_us", "-1"),
                    ("cpu/cpu.shares", "1024"),
                    ("pids/pids.max", "max"),
                ],
            ),
        ];
        for (case, mechanism, plan, want) in cases {
            let _ = std::fs::remove_dir_all(&base);
            let mut host = Host::default();
            let group_dir = |controller: &str| match mechanism {
                Mechanism::CgroupV2 => base.join(name),
                _ => base.join(controller).join(name),
            };
            // What the kernel shows: the root's files, and the group's once it is made
            // (made here in advance, as the kernel makes them with the directory).
            match mechanism {
                Mechanism::CgroupV2 => {
                    std::fs::create_dir_all(group_dir("")).unwrap();
                    std::fs::write(base.join("cgroup.controllers"), "cpu memory pids").unwrap();
                    std::fs::write(group_dir("").join("memory.swap.max"), "max").unwrap();
                    host.v2 = Some(base.clone());
                }
                _ => {
                    for c in ["memory", "cpu", "pids"] {
                        std::fs::create_dir_all(group_dir(c)).unwrap();
                        host.v1.push((c.to_string(), base.join(c), "/".to_string()));
                    }
                    let memsw = group_dir("memory").join("memory.memsw.limit_in_bytes");
                    std::fs::write(memsw, "-1").unwrap();
                }
            }
            let group = Group::create(&host, mechanism, name, &plan).unwrap();
            assert_eq!(group.path(), format!("/{name}"), "{case}");
            assert!(group.exists(), "{case}");
            for (file, value) in want {
                let path = match mechanism {
                    Mechanism::CgroupV2 => group_dir("").join(file),
                    _ => {
                        let (c, f) = file.split_once('/').unwrap();
                        group_dir(c).join(f)
                    }
                };
                let got = std::fs::read_to_string(&path).unwrap();
                assert_eq!(got, *value, "{case}: {file}");
            }
            if mechanism == Mechanism::CgroupV2 {
                // Each level enables the controllers for the one below it.
                for dir in [base.clone(), base.join("pas"), base.join("pas/c1@0123abcd")] {
                    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control"));
                    assert_eq!(
                        enabled.unwrap(),
                        "+memory +cpu +pids",
                        "{case}: {}",
                        dir.display()
                    );
                }
            }
        }
        std::fs::remove_dir_all(&base).unwrap();
    }
}
