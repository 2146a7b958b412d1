//! Enforced limits and isolation of one agent's runs (isolation level_1 and up): the
//! agent's own control group with its memory, CPU and process limits, or rlimits where pas
//! may not make groups; its nice value and open-files limit; a private `TMPDIR`. The
//! supervisor sets them up before each spawn ([`confine`]), tells a death by a limit from
//! another by the group's counters ([`Confinement::cause`]), and removes the group and the
//! directory when it ends ([`Confinement::remove`]). The rules are in [`rules`]; what each
//! level protects is in `docs/isolation.md`.

pub mod rules;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroup::{self, Group, Reading};
use crate::error::{Error, Result};
use crate::model::{self, Agent, ExitCause, IsolationLevel, ResourceLimits};
use rules::{Mechanism, Plan};

/// What a run of the agent is confined by; kept by its supervisor while the run lasts,
/// and for the next run of the same supervisor as [`Kept`].
#[derive(Debug)]
pub struct Confinement {
    /// What it was made from.
    basis: rules::Basis,
    /// Who owns its temporary directory besides pas.
    owner: Option<(u32, u32)>,
    /// Its group (cgroup mechanisms).
    group: Option<Group>,
    /// The group's counters when the run started.
    baseline: Reading,
    /// Its private temporary directory.
    tmpdir: Option<PathBuf>,
    /// The rlimits and nice to set on the spawning process.
    plan: Plan,
    /// What the agent file records (`limits`).
    pub record: model::Limits,
    /// Whether the run gets its own mount namespace (level_2): the cell's directory and
    /// its `TMPDIR` writable, the rest read-only.
    pub namespace: bool,
    /// The run's container bundle (level_3), in its temporary directory beside the
    /// container's `/tmp`.
    pub container: Option<crate::container::Bundle>,
    /// Whether the container gets a network namespace of its own (`network_isolation`).
    pub no_network: bool,
}

/// What a supervisor keeps of the confinement of its agent's last run for the next one
/// ([`Confinement::kept`]): when the next is made from the same level, limits and owner
/// ([`rules::keep`]), its group (which the supervisor never left), limit files, plan and
/// temporary directory (emptied) are used again: no probe of the mounts, no writes.
#[derive(Debug, Clone)]
pub struct Kept {
    basis: rules::Basis,
    group: Option<Group>,
    plan: Plan,
    record: model::Limits,
    tmpdir: PathBuf,
    container: Option<crate::container::Bundle>,
}

/// Sets up the confinement of the agent's next run at `level`: the limits of the cell's
/// `resource_limits` under the agent's own, by the strongest mechanism the host allows, a
/// group named for the cell's directory `cell_dir`, and a fresh `TMPDIR` owned by `owner`
/// (uid, gid) when given; `last` is the group's reading at the end of the previous run,
/// when this process saw it (the next run's counters start there: no reading on the
/// restart path), and `kept` what this supervisor kept of that run's confinement.
/// `None` at level `none`. Bad limits are refused naming the key; a group that cannot be
/// made is refused naming the way out (`PAS_CGROUPS=off`).
#[allow(clippy::too_many_arguments)]
pub fn confine(
    level: IsolationLevel,
    cell_limits: &ResourceLimits,
    agent: &Agent,
    cell_dir: &Path,
    cell: &str,
    owner: Option<(u32, u32)>,
    last: Option<Reading>,
    kept: Option<Kept>,
) -> Result<Option<Confinement>> {
    if level == IsolationLevel::None {
        return Ok(None);
    }
    let wanted = rules::resolve(cell_limits, agent.resource_limits.as_ref())?;
    let basis = rules::Basis {
        level,
        wanted,
        owner,
    };
    if let Some(k) = kept {
        // The group is still there when its directory is (the supervisor is in it).
        let there = k.group.as_ref().is_none_or(Group::exists);
        let agent_tmp = k.record.tmpdir.as_deref().map(Path::new);
        if rules::keep(Some(&k.basis), &basis, there)
            && agent_tmp.is_some_and(|t| cgroup::renew_tmpdir(t, owner))
        {
            let baseline = baseline(k.group.as_ref(), last);
            return Ok(Some(Confinement {
                basis,
                owner,
                group: k.group,
                baseline,
                tmpdir: Some(k.tmpdir),
                plan: k.plan,
                record: k.record,
                namespace: level == IsolationLevel::Level2,
                container: k.container,
                no_network: false,
            }));
        }
    }
    let wanted = &basis.wanted;
    let (probe, host) = cgroup::probe();
    let name = cgroup::group_name(cell_dir, cell, &agent.agent_id);
    // A supervisor's first run: what earlier supervisors of the agent that were killed
    // left in the temporary directory goes (the group itself is used again).
    for problem in sweep_tmpdirs(Some(&cgroup::tmpdir_prefix(&name)), owner) {
        eprintln!("pas: {problem}");
    }
    let (mechanism, why) = rules::mechanism(&probe);
    let plan = rules::plan(mechanism, wanted);
    let group = match mechanism {
        Mechanism::Rlimit => None,
        m => Some(Group::create(&host, m, &name, &plan).map_err(|e| {
            Error::failure(format!(
                "cannot set up the control group of agent {}: {e}",
                agent.agent_id
            ))
            .hint(format!(
                "fix the cgroup hierarchy, or set {}=off for pas to use rlimits instead",
                cgroup::CGROUPS_ENV
            ))
        })?),
    };
    let level3 = level == IsolationLevel::Level3;
    let tmp_error = |e: std::io::Error| {
        Error::failure(format!(
            "cannot make the temporary directory of agent {}: {e}",
            agent.agent_id
        ))
        .hint("check that the temporary directory (TMPDIR, else /tmp) is writable")
    };
    // Level_3: the directory holds the container's /tmp (the agent's) and its bundle.
    let tmpdir =
        cgroup::fresh_tmpdir(&name, if level3 { None } else { owner }).map_err(tmp_error)?;
    let (agent_tmp, container) = if level3 {
        let bundle = crate::container::prepare(&tmpdir, owner).map_err(tmp_error)?;
        (tmpdir.join(crate::container::TMP), Some(bundle))
    } else {
        (tmpdir.clone(), None)
    };
    let record = model::Limits {
        mechanism: mechanism.as_str().to_string(),
        why: Some(why),
        group: group.as_ref().map(|g| g.path().to_string()),
        memory_bytes: plan.group_memory.or(plan.rlimit_data),
        cpu: plan.group_cpu,
        cpu_shares: plan.group_shares,
        pids: plan.group_pids.or(plan.rlimit_nproc),
        nice: plan.nice,
        open_files: plan.rlimit_nofile,
        not_enforced: plan.not_enforced.clone(),
        tmpdir: Some(agent_tmp.display().to_string()),
        container: container
            .as_ref()
            .map(|b| format!("{} {}", crate::container::RUNTIME, b.id)),
        extra: Default::default(),
    };
    let baseline = baseline(group.as_ref(), last);
    Ok(Some(Confinement {
        basis,
        owner,
        group,
        baseline,
        tmpdir: Some(tmpdir),
        plan,
        record,
        namespace: level == IsolationLevel::Level2,
        container,
        no_network: false,
    }))
}

/// How long an empty group is left alone by [`sweep`]: a supervisor joins the group it
/// made within milliseconds.
const QUIET: Duration = Duration::from_secs(10);

/// Removes what supervisors killed with SIGKILL left on this host: agents' groups that
/// hold no process (a live supervisor stays in its agent's group) and have been quiet for
/// 10 s, and agents' temporary directories whose supervisor's pid is no process and that
/// belong to pas's user (never following a link). Run by `pas watch` at each reconcile of
/// its root; returns what it removed and what it could not, in words.
pub fn sweep() -> Vec<String> {
    let mut said = Vec::new();
    let (probe, host) = cgroup::probe();
    if !probe.disabled {
        for dir in cgroup::stale_groups(&host, QUIET) {
            said.push(match cgroup::remove_group_dir(&dir) {
                Ok(()) => format!("removed the stale control group {}", dir.display()),
                Err(e) => format!(
                    "cannot remove the stale control group {}: {e}",
                    dir.display()
                ),
            });
        }
    }
    said.extend(sweep_tmpdirs(None, None));
    said
}

/// Removes the stale temporary directories of one agent (`agent`, the names' stem) or of
/// any ([`cgroup::stale_tmpdirs`]) that belong to pas's user or `owner`; says what it
/// removed and what it could not.
fn sweep_tmpdirs(agent: Option<&str>, owner: Option<(u32, u32)>) -> Vec<String> {
    let base = std::env::temp_dir();
    let uids = cgroup::owners(owner);
    let mut said = Vec::new();
    for leaf in cgroup::stale_tmpdirs(agent, &uids) {
        let path = base.join(&leaf);
        match cgroup::remove_owned_dir(&base, &leaf, &uids) {
            Ok(()) => said.push(format!("removed the stale directory {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => said.push(format!("cannot remove {}: {e}", path.display())),
        }
    }
    said
}

/// Where a run's counters start: at the last run's end when this process read it, else now.
fn baseline(group: Option<&Group>, last: Option<Reading>) -> Reading {
    match (group, last) {
        (Some(_), Some(last)) => last,
        (Some(g), None) => g.read(),
        (None, _) => Reading::default(),
    }
}

impl Confinement {
    /// What the supervisor keeps of it for its agent's next run.
    pub fn kept(&self) -> Option<Kept> {
        Some(Kept {
            basis: self.basis.clone(),
            group: self.group.clone(),
            plan: self.plan.clone(),
            record: self.record.clone(),
            tmpdir: self.tmpdir.clone()?,
            container: self.container.clone(),
        })
    }

    /// The private temporary directory, for `TMPDIR`.
    pub fn tmpdir(&self) -> Option<&Path> {
        self.tmpdir.as_deref()
    }

    /// Runs `spawn` so that what it starts is confined: this process takes the run's
    /// nice value and rlimits and joins the group (the child inherits all of it before its
    /// first instruction). The supervisor stays in the group until [`Confinement::remove`]:
    /// moving a process between groups waits for an RCU grace period, milliseconds under
    /// cgroup v1, which a restart should not pay.
    pub fn spawn<T>(&self, spawn: impl FnOnce() -> T) -> Result<T> {
        set_rlimits(&self.plan)?;
        if let Some(group) = &self.group {
            // Swept as stale while empty, before this supervisor joined: made again once.
            let joined = group
                .join()
                .or_else(|_| group.remake(&self.plan).and_then(|g| g.join()));
            if let Err(e) = joined {
                // Back out of the controllers it did join.
                let _ = group.leave();
                return Err(Error::failure(format!(
                    "cannot enter the agent's control group: {e}"
                )));
            }
        }
        Ok(spawn())
    }

    /// The cause to record for a death the supervisor saw as `cause`: `oom` or `limit`
    /// when the group's counters show a limit did it ([`rules::classify`]); and the
    /// group's reading now, where the next run's counters start. A container (level_3)
    /// whose crun was killed is ended first, so that its processes do not outlive the
    /// run nor meet the next one.
    pub fn cause(
        &self,
        cause: ExitCause,
        code: Option<i32>,
        signal: Option<i32>,
    ) -> (ExitCause, Option<Reading>) {
        if let Some(bundle) = &self.container {
            if let Err(e) = crate::container::end(bundle) {
                // The supervisor's stderr is the agent's log.
                eprintln!("pas: cannot end the container of the run: {e}");
            }
        }
        let now = self.group.as_ref().map(Group::read);
        let counters = now.map(|n| n.since(&self.baseline)).unwrap_or_default();
        let cause = rules::classify(cause, code.map(i64::from), signal.map(i64::from), &counters);
        (cause, now)
    }

    /// Ends the confinement once the agent is gone: what is left in the group gets
    /// `grace` to end (a stop in progress kills it by then), then is killed, and the group
    /// is removed, and the temporary directory with it. Returns what could not be removed,
    /// in words.
    pub fn remove(self, grace: Duration) -> Vec<String> {
        let mut left = Vec::new();
        if let Some(group) = self.group {
            let path = group.path().to_string();
            if let Err(e) = group.leave() {
                left.push(format!("cannot leave control group {path}: {e}"));
            }
            if let Err(e) = group.remove(grace, Duration::from_secs(3)) {
                left.push(format!("cannot remove control group {path}: {e}"));
            }
        }
        if let Some(dir) = self.tmpdir {
            if let Err(e) = cgroup::remove_tmpdir(&dir, self.owner) {
                left.push(format!("cannot remove {}: {e}", dir.display()));
            }
        }
        left
    }
}

/// Sets `plan`'s rlimits and nice on this process.
fn set_rlimits(plan: &Plan) -> Result<()> {
    use rustix::process::{setrlimit, Resource, Rlimit};
    for (limit, resource, name) in [
        (plan.rlimit_data, Resource::Data, "RLIMIT_DATA"),
        (plan.rlimit_nproc, Resource::Nproc, "RLIMIT_NPROC"),
        (plan.rlimit_nofile, Resource::Nofile, "RLIMIT_NOFILE"),
    ] {
        if let Some(v) = limit {
            setrlimit(
                resource,
                Rlimit {
                    current: Some(v),
                    maximum: Some(v),
                },
            )
            .map_err(|e| Error::failure(format!("cannot set {name} to {v}: {e}")))?;
        }
    }
    if let Some(n) = plan.nice {
        // The nice value of this process, as getpriority(2) counts it.
        let now = rustix::process::getpriority_process(None).unwrap_or(0);
        if now != n as i32 {
            rustix::process::setpriority_process(None, n as i32).map_err(|e| {
                Error::failure(format!("cannot set the nice value to {n}: {e}"))
                    .hint("only root may lower a nice value")
            })?;
        }
    }
    Ok(())
}
