//! `pas agent ...`

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::cli::Ctx;
use crate::clock;
use crate::error::{Error, Result};
use crate::model::{AgentStatus, ExitCause, StopCause};
use crate::ops::agent::{self, NewAgent, Role};
use crate::ops::cell;
use crate::ops::health::{self, Health};
use crate::ops::heartbeat::{self, BeatReport, Reported};
use crate::ops::policy;
use crate::ops::status::{self, AgentView, RunState};
use crate::ops::supervisor;
use crate::output::{Styled, Tone};
use crate::store::Store;

/// Agent commands.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum AgentCommand {
    /// Add an agent to a cell (within its max_agents) and print its id.
    ///
    /// Example: pas agent add 3f2a agent_001 --role lead --cap planning --cap review
    Add(AddArgs),
    /// List the agents of a cell.
    ///
    /// Example: pas agent list 3f2a
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Describe one agent: its command, process, restarts, health and recent events.
    ///
    /// Example: pas agent show 3f2a agent_001 --json
    Show(AgentArgs),
    /// Remove an agent (one with unfinished tasks only with --force).
    ///
    /// Example: pas agent rm 3f2a agent_001
    Rm(RmArgs),
    /// Stamp a heartbeat (CELL and AGENT default to $PAS_CELL and $PAS_AGENT).
    ///
    /// Prints the reply: when the next beat is due, and a directive (`stop`, `summarize`)
    /// when pas wants something from the agent.
    ///
    /// Example: pas agent beat --progress 0.4 --ctx-used 52000 --ctx-limit 200000 --note "writing tests"
    Beat(BeatArgs),
    /// Record a failure the agent ran into (consecutive failures make it unhealthy).
    ///
    /// Example: pas agent fail 3f2a agent_001 --reason "tool call timed out"
    Fail(FailArgs),
    /// Change an agent: its command, directory, environment, name or status.
    ///
    /// Example: pas agent set 3f2a agent_001 --env MODEL=small -- ./examples/agent.sh
    Set(SetArgs),
    /// Start the agent's command, detached, supervised, output to logs/<agent>.log.
    ///
    /// An agent that already runs is left alone: its pid is printed, with a note (exit 0).
    ///
    /// Example: pas agent start 3f2a agent_001
    Start(StartArgs),
    /// Stop the agent's process group: SIGTERM, then SIGKILL after the grace period.
    ///
    /// Example: pas agent stop 3f2a agent_001 --grace 5
    Stop(StopArgs),
    /// Stop the agent's process (when it runs) and start it again; prints the new pid.
    ///
    /// Example: pas agent restart 3f2a agent_001 --grace 5
    Restart(StopArgs),
    /// Clear the agent's restart tally (restarts in a row, recent deaths, cooldown) and un-fail it.
    ///
    /// Example: pas agent reset 3f2a agent_001
    Reset(StartArgs),
    /// Wait until the agent is healthy, dead or stopped (exit 8 on timeout).
    ///
    /// Example: pas agent wait 3f2a agent_001 --for healthy --timeout 30
    Wait(WaitArgs),
}

// Arguments of `pas agent beat`.
#[derive(Debug, Args)]
pub struct BeatArgs {
    /// Cell id, unique id prefix, or mission name.
    #[arg(env = "PAS_CELL")]
    pub cell: Option<String>,
    /// The agent's id.
    #[arg(env = "PAS_AGENT")]
    pub agent: Option<String>,
    /// What the agent reports about itself.
    #[arg(long, value_enum)]
    pub status: Option<Reported>,
    /// Progress of its current work, 0 to 1.
    #[arg(long, value_name = "0..1")]
    pub progress: Option<f64>,
    /// Context tokens in use.
    #[arg(long, value_name = "N")]
    pub ctx_used: Option<u64>,
    /// Context window size in tokens.
    #[arg(long, value_name = "N")]
    pub ctx_limit: Option<u64>,
    /// Metadata to record; repeat for more.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// What the agent is doing, in a few words.
    #[arg(long)]
    pub note: Option<String>,
    /// Money spent so far, in dollars (cumulative).
    #[arg(long, value_name = "USD")]
    pub cost_usd: Option<f64>,
    /// Tokens used so far (cumulative).
    #[arg(long, value_name = "N")]
    pub tokens: Option<u64>,
}

// Arguments of `pas agent fail`.
#[derive(Debug, Args)]
pub struct FailArgs {
    /// Cell id, unique id prefix, or mission name.
    #[arg(env = "PAS_CELL")]
    pub cell: Option<String>,
    /// The agent's id.
    #[arg(env = "PAS_AGENT")]
    pub agent: Option<String>,
    /// What went wrong.
    #[arg(long)]
    pub reason: String,
}

// Arguments of `pas agent add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The new agent's id (1-128 of [A-Za-z0-9._-]).
    pub agent: String,
    /// A readable name (default: the id).
    #[arg(long)]
    pub name: Option<String>,
    /// The agent's role.
    #[arg(long, value_enum, default_value_t = Role::Write)]
    pub role: Role,
    /// A capability; repeat for more.
    #[arg(long = "cap", value_name = "CAP")]
    pub caps: Vec<String>,
    /// The gateway host the agent runs behind.
    #[arg(long)]
    pub gateway: Option<String>,
    /// The directory the command runs in (default: the cell's directory); a relative one is
    /// taken from the current directory.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// The command that runs the agent (after `--`), for `pas agent start`; a program given
    /// by a relative path (./my-agent.sh) is taken from the current directory.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

// Arguments of `pas agent set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The agent's id.
    pub agent: String,
    /// A readable name.
    #[arg(long)]
    pub name: Option<String>,
    /// The directory the command runs in (default: the cell's directory); a relative one is
    /// taken from the current directory.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// An environment variable for the command; repeat for more.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Remove an environment variable; repeat for more.
    #[arg(long = "unset-env", value_name = "KEY")]
    pub unset_env: Vec<String>,
    /// Pause (`paused`: told to stop, not revived) or resume (`active`) the agent.
    #[arg(long, value_parser = crate::cli::words::settable_status())]
    pub status: Option<AgentStatus>,
    /// The command that runs the agent (after `--`); a program given by a relative path
    /// (./my-agent.sh) is taken from the current directory.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

// Arguments of `pas agent start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The agent's id.
    pub agent: String,
}

// Arguments of `pas agent stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The agent's id.
    pub agent: String,
    /// Seconds between SIGTERM and SIGKILL (default: the agent's stop_grace policy, 10 s).
    #[arg(long, value_name = "SECS", value_parser = crate::cli::words::seconds)]
    pub grace: Option<f64>,
}

// Arguments of `pas agent wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The agent's id.
    pub agent: String,
    /// The state to wait for.
    #[arg(long = "for", value_enum)]
    pub state: supervisor::WaitFor,
    /// Give up after this many seconds (exit 8).
    #[arg(long, value_name = "SECS", value_parser = crate::cli::words::seconds)]
    pub timeout: Option<f64>,
}

// Arguments of `pas agent list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Cell id, unique id prefix, or mission name (or --all).
    pub cell: Option<String>,
    /// Agents of every cell.
    #[arg(long, conflicts_with = "cell")]
    pub all: bool,
    /// Only agents with this role.
    #[arg(long, value_enum)]
    pub role: Option<Role>,
    /// Only agents with this capability.
    #[arg(long, value_name = "CAP")]
    pub cap: Option<String>,
    /// Only agents in this health.
    #[arg(long, value_enum)]
    pub health: Option<Health>,
    /// Only agents behind this gateway.
    #[arg(long)]
    pub gateway: Option<String>,
}

// A cell and one of its agents.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The agent's id.
    pub agent: String,
}

// Arguments of `pas agent rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The agent's id.
    pub agent: String,
    /// Remove it even when tasks are assigned to it (they go back to the queue).
    #[arg(long)]
    pub force: bool,
}

/// Runs an agent command.
pub fn run(ctx: &Ctx, command: AgentCommand) -> Result<()> {
    match command {
        AgentCommand::Add(args) => add(ctx, args),
        AgentCommand::List(args) => list(ctx, args),
        AgentCommand::Show(AgentArgs { cell, agent }) => show(ctx, &cell, &agent),
        AgentCommand::Rm(RmArgs { cell, agent, force }) => rm(ctx, &cell, &agent, force),
        AgentCommand::Beat(args) => beat(ctx, args),
        AgentCommand::Fail(FailArgs {
            cell,
            agent,
            reason,
        }) => fail(ctx, cell, agent, &reason),
        AgentCommand::Set(args) => set(ctx, args),
        AgentCommand::Start(StartArgs { cell, agent }) => start(ctx, &cell, &agent),
        AgentCommand::Stop(StopArgs { cell, agent, grace }) => stop(ctx, &cell, &agent, grace),
        AgentCommand::Restart(StopArgs { cell, agent, grace }) => {
            restart(ctx, &cell, &agent, grace)
        }
        AgentCommand::Wait(args) => wait(ctx, args),
        AgentCommand::Reset(StartArgs { cell, agent }) => {
            crate::store::check_id(crate::store::IdKind::Agent, &agent)?;
            let cell_id = cell::resolve(&ctx.store, &cell)?;
            super::may_change_agent(ctx, &cell_id, &agent)?;
            crate::ops::revive::reset(&ctx.store, &cell_id, &agent, clock::now())?;
            ctx.out
                .info(&format!("agent {agent}: restart tally cleared"));
            Ok(())
        }
    }
}

fn add(ctx: &Ctx, args: AddArgs) -> Result<()> {
    let AddArgs {
        cell,
        agent,
        name,
        role,
        caps,
        gateway,
        cwd,
        command,
    } = args;
    crate::store::check_id(crate::store::IdKind::Agent, &agent)?;
    let here = current_dir()?;
    let command = agent::resolve_command(command, &here)?;
    let cwd = cwd.map(|d| agent::resolve_dir(&d, &here)).transpose()?;
    let cell_id = cell::resolve(&ctx.store, &cell)?;
    super::may_change_agent(ctx, &cell_id, &agent)?;
    let spec = NewAgent {
        id: agent,
        name,
        role,
        capabilities: caps,
        gateway,
        command,
        cwd,
    };
    agent::add(&ctx.store, &cell_id, &spec, clock::now())?;
    if ctx.out.is_json() {
        ctx.out.json(&json!({ "cell": cell_id, "id": spec.id }));
    } else {
        ctx.out.line(&spec.id);
    }
    Ok(())
}

/// The tone of an agent's recorded status.
pub fn status_tone(status: AgentStatus) -> Tone {
    match status {
        AgentStatus::Active => Tone::Good,
        AgentStatus::Paused => Tone::Warn,
        AgentStatus::Failed => Tone::Bad,
        AgentStatus::Idle => Tone::Dim,
    }
}

fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

fn list(ctx: &Ctx, args: ListArgs) -> Result<()> {
    let ListArgs {
        cell,
        all,
        role,
        cap,
        health,
        gateway,
    } = args;
    let now = clock::now();
    let cells = match (cell, all) {
        (Some(query), _) => vec![cell::resolve(&ctx.store, &query)?],
        (None, true) => crate::store::Store::cell_ids(&ctx.store)?,
        (None, false) => {
            return Err(
                Error::usage("name a cell, or pass --all for the agents of every cell")
                    .hint("for example `pas agent list --all --health dead`"),
            )
        }
    };
    let mut rows: Vec<(String, AgentView)> = Vec::new();
    for id in cells {
        let view = match status::cell_view(&ctx.store, &id, false, now) {
            Ok(v) => v,
            Err(e) if all => {
                ctx.out.note(&format!("pas: skipped: {}", e.message));
                continue;
            }
            Err(e) => return Err(e),
        };
        for p in &view.problems {
            ctx.out.note(&format!("pas: skipped: {p}"));
        }
        for a in view.agents {
            let keep = role.is_none_or(|r| a.role == r)
                && cap.as_ref().is_none_or(|c| a.capabilities.contains(c))
                && health.is_none_or(|h| a.health == h)
                && gateway
                    .as_ref()
                    .is_none_or(|g| a.gateway.as_ref() == Some(g));
            if keep {
                rows.push((view.id.clone(), a));
            }
        }
    }
    if ctx.out.is_json() {
        let items: Vec<Value> = rows
            .iter()
            .map(|(cell, a)| {
                let mut v = serde_json::to_value(a).unwrap_or_default();
                if let Value::Object(m) = &mut v {
                    m.insert("cell".into(), json!(cell));
                }
                v
            })
            .collect();
        ctx.out.json(&Value::from(items));
        return Ok(());
    }
    let mut headers = vec![
        "ID",
        "NAME",
        "ROLE",
        "HEALTH",
        "LAST BEAT",
        "STATUS",
        "TASK",
        "CAPABILITIES",
    ];
    if all {
        headers.insert(0, "CELL");
    }
    let table = rows
        .iter()
        .map(|(cell, a)| {
            let mut row = vec![
                Styled::from(a.id.as_str()),
                Styled::from(a.name.clone().unwrap_or_else(|| "-".into())),
                Styled::from(a.role.as_str()),
                Styled::new(a.health.as_str(), health_tone(a.health)),
                Styled::from(status::beat_age(a)),
                Styled::new(a.status.as_str(), status_tone(a.status)),
                Styled::from(a.current_task.clone().unwrap_or_else(|| "-".into())),
                Styled::from(a.capabilities.join(",")),
            ];
            if all {
                row.insert(0, Styled::from(cell.get(..8).unwrap_or(cell)));
            }
            row
        })
        .collect();
    // `-q` prints the agents' ids, not the cells' prefixes.
    ctx.out.table_keyed(&headers, table, Some(usize::from(all)));
    Ok(())
}

/// The tone of a health, the same everywhere.
pub fn health_tone(h: Health) -> Tone {
    match h.severity() {
        _ if h == Health::Unknown || h == Health::Offline => Tone::Dim,
        0 => Tone::Good,
        1 => Tone::Warn,
        _ => Tone::Bad,
    }
}

fn show(ctx: &Ctx, cell: &str, agent_id: &str) -> Result<()> {
    crate::store::check_id(crate::store::IdKind::Agent, agent_id)?;
    let cell_id = cell::resolve(&ctx.store, cell)?;
    let doc = agent::read(&ctx.store, &cell_id, agent_id)?;
    let a = agent::typed(agent_id, &doc)?;
    let policy = policy::load(&ctx.store, &cell_id, Some(&a))?;
    let now = clock::now();
    let assessed = health::assess(&a, &policy, now);
    let process = supervisor::state_of(&a);
    let running = process == supervisor::ProcState::Running;
    let (state, next_in) = RunState::of(&a, process, now);
    let uptime = a
        .started_at
        .filter(|_| running)
        .map(|t| ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0));
    let log = ctx
        .store
        .describe_log(&cell_id, crate::store::LogFile::Agent(agent_id));
    let recent = status::recent_events(&ctx.store, &cell_id, agent_id, 5)?;
    let resources = match a.pid.filter(|_| running) {
        Some(pid) => Some(status::agent_resources(
            &ctx.store,
            &cell_id,
            agent_id,
            pid,
            a.pid_start_time,
        )?),
        None => None,
    };
    if ctx.out.is_json() {
        let mut value = doc.to_value();
        if let Value::Object(m) = &mut value {
            m.insert("health".into(), json!(assessed.health.as_str()));
            m.insert("heartbeat_age_seconds".into(), json!(assessed.age));
            m.insert(
                "next_health_change".into(),
                json!(assessed.next_change.map(clock::stamp)),
            );
            m.insert("process".into(), json!(process));
            m.insert("state".into(), json!(state));
            m.insert("uptime_seconds".into(), json!(uptime));
            let (usage, limits, reserved) = match &resources {
                Some((u, l, r)) => (json!(u), json!(l), json!(r)),
                None => (Value::Null, Value::Null, Value::Null),
            };
            m.insert("usage".into(), usage);
            m.insert("cell_quota".into(), limits);
            m.insert("reserved".into(), reserved);
            m.insert("next_restart_in_seconds".into(), json!(next_in));
            m.insert("log".into(), json!(log));
            m.insert("recent_events".into(), json!(recent));
        }
        ctx.out.json(&value);
        return Ok(());
    }
    let ctx_use = match (a.ctx_used, a.ctx_limit) {
        (Some(u), Some(l)) => format!("{u} / {l} ({:.0}%)", 100.0 * u as f64 / l.max(1) as f64),
        (Some(u), None) => u.to_string(),
        _ => "-".to_string(),
    };
    let stamp_or_dash =
        |t: Option<chrono::DateTime<chrono::Utc>>| or_dash(t.map(clock::stamp).as_deref());
    let number_or_dash = |n: Option<i64>| n.map_or("-".into(), |n| n.to_string());
    let command = if a.command.is_empty() {
        "- (none: `pas agent set CELL AGENT -- CMD ARGS`)".to_string()
    } else {
        crate::ops::trust::redact_argv(&a.command).join(" ")
    };
    let cwd = a.cwd.clone().unwrap_or_else(|| {
        format!(
            "{} (the cell's directory)",
            ctx.store.describe_cell(&cell_id)
        )
    });
    let env: Vec<&str> = a.env.keys().map(String::as_str).collect();
    let process_line = match (process, a.pid) {
        (supervisor::ProcState::Running, Some(pid)) => format!(
            "running, pid {pid}, up {} (since {})",
            uptime.map_or("-".into(), clock::human_duration),
            stamp_or_dash(a.started_at)
        ),
        (p, _) => p.as_str().to_string(),
    };
    let max = policy.max_restarts();
    let restarts = format!(
        "{} in all, {} in a row (of {})",
        a.restart_count,
        a.restart_attempts,
        if max == 0 {
            "no limit".to_string()
        } else {
            max.to_string()
        }
    );
    let waits: Vec<String> = (a.restart_attempts + 1..a.restart_attempts + 4)
        .map(|k| clock::precise_duration(crate::ops::revive::rules::backoff_delay(&policy, k)))
        .collect();
    let next = match (state, next_in) {
        (Some(RunState::Crashloop), Some(s)) => format!(
            "cooling down after a restart storm, tried again in {} (until {})",
            clock::human_duration(s.ceil()),
            stamp_or_dash(a.cooldown_until)
        ),
        (_, Some(s)) if s > 0.0 => format!(
            "in {} (at {}); the waits after it: {}",
            clock::human_duration(s.ceil()),
            stamp_or_dash(a.next_restart_at),
            waits[1..].join(", ")
        ),
        (_, Some(_)) => "due now".to_string(),
        (_, None) => format!("- (the next waits: {})", waits.join(", ")),
    };
    let mut fields = vec![
        ("id", Styled::from(a.agent_id.as_str())),
        ("cell", Styled::from(cell_id.as_str())),
        ("name", Styled::from(or_dash(a.name.as_deref()))),
        ("role", Styled::from(a.role.as_str())),
        (
            "status",
            Styled::new(a.status.as_str(), status_tone(a.status)),
        ),
        (
            "state",
            Styled::new(
                state.map_or("-", RunState::as_str),
                match state {
                    Some(RunState::Running) => Tone::Good,
                    Some(RunState::Failed | RunState::Crashloop | RunState::Exited) => Tone::Bad,
                    Some(RunState::Backoff | RunState::Approval | RunState::Paused) => Tone::Warn,
                    Some(RunState::Stopped) | None => Tone::Dim,
                },
            ),
        ),
        (
            "health",
            Styled::new(assessed.health.as_str(), health_tone(assessed.health)),
        ),
        ("command", Styled::from(command)),
        ("cwd", Styled::from(cwd)),
        (
            "env",
            Styled::from(if env.is_empty() {
                "-".to_string()
            } else {
                env.join(", ")
            }),
        ),
        ("log", Styled::from(log)),
        ("process", Styled::from(process_line)),
        (
            "usage",
            Styled::from(match &resources {
                Some((Some(u), _, _)) => usage_line(u),
                Some((None, _, _)) => "- (its processes cannot be read)".to_string(),
                None => "-".to_string(),
            }),
        ),
        (
            "files, io",
            Styled::from(match &resources {
                Some((Some(u), _, _)) => io_line(u),
                _ => "-".to_string(),
            }),
        ),
        (
            "quota",
            Styled::from(match &resources {
                Some((_, quota, reserved)) => quota_line(quota, reserved),
                None => "-".to_string(),
            }),
        ),
        ("limits", Styled::from(limits_line(a.limits.as_ref()))),
        (
            "cgroup",
            Styled::from(
                a.limits
                    .as_ref()
                    .and_then(|l| l.group.clone())
                    .unwrap_or("-".into()),
            ),
        ),
        (
            "tmpdir",
            Styled::from(
                a.limits
                    .as_ref()
                    .and_then(|l| l.tmpdir.clone())
                    .unwrap_or("-".into()),
            ),
        ),
        ("runs", Styled::from(a.runs.unwrap_or(0).to_string())),
        ("restarts", Styled::from(restarts)),
        ("next restart", Styled::from(next)),
        (
            "last exit",
            Styled::from(match &a.exit {
                Some(e) => format!(
                    "{} code={} signal={} at {}",
                    or_dash(e.cause.map(ExitCause::as_str)),
                    number_or_dash(e.code),
                    number_or_dash(e.signal),
                    stamp_or_dash(e.at)
                ),
                None => "-".to_string(),
            }),
        ),
        ("last beat", Styled::from(clock::ago(a.last_heartbeat, now))),
        ("beats", Styled::from(a.heartbeat_count.to_string())),
        (
            "reported",
            Styled::from(or_dash(a.reported_status.map(Reported::as_str))),
        ),
        (
            "progress",
            Styled::from(
                a.progress
                    .map_or("-".into(), |p| format!("{:.0}%", p * 100.0)),
            ),
        ),
        ("context", Styled::from(ctx_use)),
        ("note", Styled::from(or_dash(a.note.as_deref()))),
        ("failures", Styled::from(a.failures.to_string())),
        (
            "capabilities",
            Styled::from(if a.capabilities.is_empty() {
                "-".to_string()
            } else {
                a.capabilities.join(", ")
            }),
        ),
        ("gateway", Styled::from(or_dash(a.gateway.as_deref()))),
        (
            "current task",
            Styled::from(or_dash(a.current_task.as_deref())),
        ),
        (
            "last checkpoint",
            Styled::from(stamp_or_dash(
                a.checkpoint.as_ref().and_then(|c| c.last_checkpoint),
            )),
        ),
    ];
    if let Some(why) = &a.failed_reason {
        fields.insert(7, ("failed because", Styled::new(why.as_str(), Tone::Bad)));
    }
    ctx.out.fields(fields);
    if !recent.is_empty() {
        ctx.out.info("recent events:");
        for e in &recent {
            ctx.out.info(&format!(
                "  {} {:<5} {:<16} {}",
                e.time,
                e.level.as_str(),
                e.kind,
                e.message
            ));
        }
    }
    Ok(())
}

/// The limits in force, for `agent show`: how, which, and what is not enforced.
fn limits_line(limits: Option<&crate::model::Limits>) -> String {
    use crate::units::{show, Unit};
    let Some(l) = limits else {
        return "- (none at its last start)".into();
    };
    let mut parts = Vec::new();
    if let Some(m) = l.memory_bytes {
        parts.push(format!("memory {}", show(m as f64, Unit::Bytes)));
    }
    if let Some(c) = l.cpu {
        parts.push(format!("cpu {}", show(c, Unit::Cores)));
    }
    if let Some(s) = l.cpu_shares {
        parts.push(format!("cpu_shares {s}"));
    }
    if let Some(p) = l.pids {
        parts.push(format!("pids {p}"));
    }
    if let Some(n) = l.nice {
        parts.push(format!("nice {n}"));
    }
    if let Some(f) = l.open_files {
        parts.push(format!("open files {f}"));
    }
    // The group and TMPDIR have rows of their own (`cgroup`, `tmpdir`): long paths.
    let mut line = match (&l.group, &l.why) {
        (None, Some(why)) => format!("{} ({why})", l.mechanism),
        _ => l.mechanism.clone(),
    };
    if let Some(runtime) = l.container.as_deref().and_then(|c| c.split(' ').next()) {
        line.push_str(&format!(" in a {runtime} container"));
    }
    line.push_str(": ");
    line.push_str(&if parts.is_empty() {
        "no limits set".to_string()
    } else {
        parts.join(", ")
    });
    if !l.not_enforced.is_empty() {
        line.push_str(&format!("; not enforced: {}", l.not_enforced.join("; ")));
    }
    line
}

/// The directory pas was run from: relative paths of an agent's command and `--cwd` are
/// taken from it.
fn current_dir() -> Result<std::path::PathBuf> {
    std::env::current_dir()
        .map_err(|e| Error::failure(format!("cannot tell the current directory: {e}")))
}

/// CELL and AGENT from the arguments or `$PAS_CELL` / `$PAS_AGENT`.
fn cell_and_agent(
    ctx: &Ctx,
    cell: Option<String>,
    agent: Option<String>,
) -> Result<(String, String)> {
    let (Some(cell), Some(agent)) = (cell, agent) else {
        return Err(
            Error::usage("which agent? pass CELL AGENT, or set PAS_CELL and PAS_AGENT")
                .hint("agents started by `pas agent start` have both set"),
        );
    };
    crate::store::check_id(crate::store::IdKind::Agent, &agent)?;
    let cell_id = cell::resolve(&ctx.store, &cell)?;
    super::may_change_agent(ctx, &cell_id, &agent)?;
    Ok((cell_id, agent))
}

fn beat(ctx: &Ctx, args: BeatArgs) -> Result<()> {
    let BeatArgs {
        cell,
        agent,
        status,
        progress,
        ctx_used,
        ctx_limit,
        meta,
        note,
        cost_usd,
        tokens,
    } = args;
    let meta = meta
        .iter()
        .map(|m| heartbeat::parse_meta(m))
        .collect::<Result<Vec<_>>>()?;
    let report = BeatReport {
        status,
        progress,
        ctx_used,
        ctx_limit,
        meta,
        note,
        cost_usd,
        tokens,
    };
    let (cell_id, agent_id) = cell_and_agent(ctx, cell, agent)?;
    let reply = heartbeat::beat(&ctx.store, &cell_id, &agent_id, &report, clock::now())?;
    if ctx.out.is_json() {
        ctx.out
            .json(&serde_json::to_value(&reply).unwrap_or_default());
    } else if ctx.out.is_quiet() {
        if let Some(d) = reply.directive {
            ctx.out.line(d.as_str());
        }
    } else {
        let mut line = format!(
            "ok: beat {} of {agent_id}, {}; next beat in {}",
            reply.heartbeat_count,
            reply.health.as_str(),
            clock::human_duration(reply.next_beat_in)
        );
        if let Some(d) = &reply.directive {
            line.push_str(&format!(
                "; directive: {d} ({})",
                reply.reason.as_deref().unwrap_or("-")
            ));
        }
        ctx.out.line(&line);
    }
    Ok(())
}

fn fail(ctx: &Ctx, cell: Option<String>, agent: Option<String>, reason: &str) -> Result<()> {
    let (cell_id, agent_id) = cell_and_agent(ctx, cell, agent)?;
    let failures =
        heartbeat::record_failure(&ctx.store, &cell_id, &agent_id, reason, clock::now())?;
    if ctx.out.is_json() {
        ctx.out
            .json(&json!({ "cell": cell_id, "agent": agent_id, "consecutive_failures": failures }));
    } else {
        ctx.out.info(&format!(
            "recorded failure {failures} in a row for {agent_id}"
        ));
    }
    Ok(())
}

fn rm(ctx: &Ctx, cell: &str, agent_id: &str, force: bool) -> Result<()> {
    crate::store::check_id(crate::store::IdKind::Agent, agent_id)?;
    let cell_id = cell::resolve(&ctx.store, cell)?;
    super::may_change_agent(ctx, &cell_id, agent_id)?;
    let released = agent::remove(&ctx.store, &cell_id, agent_id, force, clock::now())?;
    if ctx.out.is_json() {
        ctx.out.json(&json!({ "cell": cell_id, "id": agent_id, "removed": true, "released_tasks": released }));
    } else {
        ctx.out
            .info(&format!("removed agent {agent_id} from cell {cell_id}"));
        if !released.is_empty() {
            ctx.out
                .info(&format!("tasks back in the queue: {}", released.join(", ")));
        }
    }
    Ok(())
}

fn set(ctx: &Ctx, args: SetArgs) -> Result<()> {
    let SetArgs {
        cell,
        agent,
        name,
        cwd,
        env,
        unset_env,
        status,
        command,
    } = args;
    crate::store::check_id(crate::store::IdKind::Agent, &agent)?;
    let env = env
        .iter()
        .map(|e| heartbeat::parse_meta(e))
        .collect::<Result<Vec<_>>>()?;
    let here = current_dir()?;
    let command = agent::resolve_command(command, &here)?;
    let cwd = cwd.map(|d| agent::resolve_dir(&d, &here)).transpose()?;
    let cell_id = cell::resolve(&ctx.store, &cell)?;
    super::may_change_agent(ctx, &cell_id, &agent)?;
    let change = agent::AgentChange {
        name,
        cwd,
        env,
        unset_env,
        status,
        command: (!command.is_empty()).then_some(command),
    };
    let doc = agent::change(&ctx.store, &cell_id, &agent, &change, clock::now())?;
    if ctx.out.is_json() {
        ctx.out.json(&doc.to_value());
    } else {
        ctx.out.info(&format!("agent {agent} updated"));
    }
    Ok(())
}

fn start(ctx: &Ctx, cell: &str, agent_id: &str) -> Result<()> {
    crate::store::check_id(crate::store::IdKind::Agent, agent_id)?;
    let cell_id = cell::resolve(&ctx.store, cell)?;
    super::may_change_agent(ctx, &cell_id, agent_id)?;
    // Like `systemctl start`: starting what runs is done already.
    if let Some(pid) = supervisor::running_pid(&ctx.store, &cell_id, agent_id)? {
        ctx.out.note(&format!(
            "pas: agent {agent_id} is already running (pid {pid}); nothing to do (`pas agent restart` restarts it)"
        ));
        if ctx.out.is_json() {
            ctx.out
                .json(&json!({ "agent": agent_id, "pid": pid, "already_running": true }));
        } else {
            ctx.out.line(&pid.to_string());
        }
        return Ok(());
    }
    let started = supervisor::start(&ctx.store, &cell_id, agent_id, &ctx.launch)?;
    if ctx.out.is_json() {
        ctx.out
            .json(&serde_json::to_value(&started).unwrap_or_default());
    } else {
        ctx.out.line(&started.pid.to_string());
    }
    Ok(())
}

/// What `stop` and `restart` check first: the agent's id, `--grace`, the cell, and that
/// the caller may change the agent. The cell's id and the grace period.
fn stop_target(
    ctx: &Ctx,
    cell: &str,
    agent_id: &str,
    grace: Option<f64>,
) -> Result<(String, Option<std::time::Duration>)> {
    crate::store::check_id(crate::store::IdKind::Agent, agent_id)?;
    if let Some(grace) = grace.filter(|g| !(0.0..=86_400.0).contains(g)) {
        return Err(
            Error::usage(format!("--grace {grace} is outside 0..86400 seconds"))
                .hint("give the seconds to wait after SIGTERM, for example --grace 10"),
        );
    }
    let cell_id = cell::resolve(&ctx.store, cell)?;
    super::may_change_agent(ctx, &cell_id, agent_id)?;
    Ok((cell_id, grace.map(std::time::Duration::from_secs_f64)))
}

fn stop(ctx: &Ctx, cell: &str, agent_id: &str, grace: Option<f64>) -> Result<()> {
    let (cell_id, grace) = stop_target(ctx, cell, agent_id, grace)?;
    let outcome = supervisor::stop_for(
        &ctx.store,
        &cell_id,
        agent_id,
        grace,
        StopCause::Stopped,
        clock::now(),
    )?;
    if ctx.out.is_json() {
        ctx.out
            .json(&json!({ "cell": cell_id, "agent": agent_id, "outcome": outcome }));
    } else {
        let text = match outcome {
            crate::process::StopOutcome::NotRunning => "was not running",
            crate::process::StopOutcome::Terminated => "stopped (SIGTERM)",
            crate::process::StopOutcome::Killed => "killed (SIGKILL after the grace period)",
        };
        ctx.out.info(&format!("agent {agent_id} {text}"));
    }
    Ok(())
}

fn restart(ctx: &Ctx, cell: &str, agent_id: &str, grace: Option<f64>) -> Result<()> {
    let (cell_id, grace) = stop_target(ctx, cell, agent_id, grace)?;
    let (stopped, started) = supervisor::restart(
        &ctx.store,
        &cell_id,
        agent_id,
        grace,
        &ctx.launch,
        clock::now(),
    )?;
    if ctx.out.is_json() {
        ctx.out.json(&json!({
            "cell": cell_id,
            "agent": agent_id,
            "stopped": stopped,
            "pid": started.pid,
            "checkpoint": started.checkpoint,
        }));
    } else {
        ctx.out.line(&started.pid.to_string());
    }
    Ok(())
}

fn wait(ctx: &Ctx, args: WaitArgs) -> Result<()> {
    let WaitArgs {
        cell,
        agent: agent_id,
        state,
        timeout,
    } = args;
    crate::store::check_id(crate::store::IdKind::Agent, &agent_id)?;
    let cell_id = cell::resolve(&ctx.store, &cell)?;
    let reached = supervisor::wait_for(
        &ctx.store,
        &cell_id,
        &agent_id,
        state,
        timeout.map(std::time::Duration::from_secs_f64),
    )?;
    if ctx.out.is_json() {
        ctx.out.json(&json!({ "agent": agent_id, "health": reached.health.as_str(), "process": reached.process, "waited_seconds": reached.waited.as_secs_f64() }));
    } else {
        ctx.out.info(&format!(
            "agent {agent_id}: {} (process {})",
            reached.health.as_str(),
            reached.process.as_str()
        ));
    }
    Ok(())
}

/// A process tree's usage in one line: `52.4 MB RSS, 3.2% CPU (1.5 s), 2 processes, 4
/// threads, 12 open files, IO 0 B read / 1 kB written`.
fn usage_line(u: &crate::usage::Usage) -> String {
    use crate::units::{show, Unit};
    let plural = |n: u64, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "es" });
    format!(
        "{} RSS, CPU {} s ({} since start), {}, {} thread{}",
        show(u.rss_bytes as f64, Unit::Bytes),
        (u.cpu_seconds * 100.0).round() / 100.0,
        u.cpu_percent.map_or("-".into(), |p| format!("{p}%")),
        plural(u.processes, "process"),
        u.threads,
        if u.threads == 1 { "" } else { "s" }
    )
}

/// The open files and IO of an agent's process tree: `5 open files, 1.2 MB read, 0 B
/// written`.
fn io_line(u: &crate::usage::Usage) -> String {
    use crate::units::{show, Unit};
    let mut parts = Vec::new();
    if let Some(n) = u.open_files {
        parts.push(format!("{n} open file{}", if n == 1 { "" } else { "s" }));
    }
    if let Some(io) = u.io {
        parts.push(format!(
            "{} read, {} written",
            show(io.read_bytes as f64, Unit::Bytes),
            show(io.write_bytes as f64, Unit::Bytes)
        ));
    }
    if parts.is_empty() {
        return "- (not readable)".into();
    }
    parts.join(", ")
}

/// The cell's quota and what the agent reserved: `cpu 2 cores (reserved 1 core), memory
/// unlimited`.
fn quota_line(quota: &status::Limits, reserved: &status::Reserved) -> String {
    crate::ops::reservation::RESOURCES
        .iter()
        .map(|(key, unit, label)| {
            let limit = quota
                .get(key)
                .copied()
                .flatten()
                .map_or("unlimited".into(), |v| crate::units::show(v, *unit));
            match reserved.get(key).copied().filter(|r| *r > 0.0) {
                Some(r) => format!(
                    "{label} {limit} (reserved {})",
                    crate::units::show(r, *unit)
                ),
                None => format!("{label} {limit}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
