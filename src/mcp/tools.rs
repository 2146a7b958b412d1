//! The tools of `pas mcp`: their names, descriptions and input schemas, and how a call
//! becomes the CLI command that does the work ([`plan`], pure, table-tested). Each tool is
//! one `pas` command run in-process as the acting agent, so it meets the same checks,
//! permissions, quotas, budgets and events as the command typed in a shell, and fails with
//! the same one-line message.

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::ops::registry::rules::text;
use crate::store::{check_id, IdKind};

/// Who a call acts as and on, unless its arguments say otherwise.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    /// The cell (`--cell`, `$PAS_CELL`, `X-Pas-Cell`).
    pub cell: Option<String>,
    /// The agent the server acts as (`--agent`, `$PAS_AGENT`, `X-Pas-As`); none: operator.
    pub agent: Option<String>,
}

/// What a call does.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// `pas --json ARGS` in-process, as the acting agent.
    Cli(Vec<String>),
    /// `pas agent show` seen as the seed's health record ([`health_view`]).
    Health(Vec<String>),
    /// A claim: `pas task claim`, where "nothing ready" is an answer, not an error.
    Claim(Vec<String>),
    /// A checkpoint whose state and context come with the call (no files to read).
    Save {
        /// The cell as given (resolved by the caller).
        cell: String,
        /// The agent.
        agent: String,
        /// `state.json` (none: a snapshot of the agent file).
        state: Option<Vec<u8>>,
        /// `context.json` (none: `{}`).
        context: Option<Vec<u8>>,
        /// Why it is saved.
        reason: String,
    },
}

/// Names of every tool, in the order they are listed.
pub const NAMES: [&str; 13] = [
    "create_mission_cell",
    "add_agent_to_cell",
    "get_agent_health",
    "beat",
    "claim_task",
    "complete_task",
    "fail_task",
    "save_checkpoint",
    "load_checkpoint",
    "report_context",
    "request_handoff",
    "list_tasks",
    "cell_status",
];

const CELL: &str =
    "Cell id, unique id prefix, or mission name (default: the server's cell, $PAS_CELL)";
const AGENT: &str = "The agent's id (default: the agent the server acts as, $PAS_AGENT)";

/// One tool's description and input schema (a JSON Schema object).
pub fn describe(name: &str) -> Option<(&'static str, Value)> {
    let cell = json!({ "type": "string", "description": CELL });
    let agent = json!({ "type": "string", "description": AGENT });
    let task = json!({ "type": "string", "description": "The task's id" });
    let (text, props, required): (&str, Value, &[&str]) = match name {
        "create_mission_cell" => (
            "Create a mission cell (`pas cell create`); returns its id and name.",
            json!({
                "name": { "type": "string", "description": "The mission's name" },
                "isolation": { "type": "string", "enum": ["none", "level_1", "level_2", "level_3"] },
                "max_agents": { "type": "integer", "minimum": 1, "description": "Most agents the cell may hold (default 10)" },
                "timeout": { "type": "integer", "minimum": 0, "description": "Seconds the mission may run (0: no limit; default 3600)" },
                "id": { "type": "string", "description": "The cell's id (default: a new uuid); makes a retry safe" },
            }),
            &["name"],
        ),
        "add_agent_to_cell" => (
            "Add an agent to a cell (`pas agent add`).",
            json!({
                "cell": cell,
                "agent_id": { "type": "string", "description": "The new agent's id (1-128 of [A-Za-z0-9._-])" },
                "name": { "type": "string", "description": "A readable name (default: the id)" },
                "role": { "type": "string", "enum": ["lead", "write", "read", "audit"] },
                "capabilities": { "type": "array", "items": { "type": "string" } },
            }),
            &["agent_id"],
        ),
        "get_agent_health" => (
            "An agent's health: the seed's record (status healthy|degraded|unhealthy, last_heartbeat, consecutive_failures, metadata) with pas's own words (health, heartbeat age, current task).",
            json!({ "cell": cell, "agent_id": agent }),
            &[],
        ),
        "beat" => (
            "Stamp a heartbeat (`pas agent beat`). The reply says when the next beat is due (next_beat_in, seconds) and carries a directive when pas wants something: `summarize` (save state, clear the context, resume) or `stop`.",
            json!({
                "cell": cell,
                "agent": agent,
                "status": { "type": "string", "enum": ["active", "degraded", "offline"], "description": "What the agent reports about itself" },
                "progress": { "type": "number", "minimum": 0, "maximum": 1 },
                "ctx_used": { "type": "integer", "minimum": 0, "description": "Context tokens in use" },
                "ctx_limit": { "type": "integer", "minimum": 0, "description": "Context window size in tokens" },
                "note": { "type": "string", "description": "What the agent is doing, in a few words" },
                "meta": { "type": "object", "additionalProperties": { "type": ["string", "number", "boolean"] }, "description": "Metadata to record" },
                "cost_usd": { "type": "number", "minimum": 0, "description": "Money spent so far (cumulative)" },
                "tokens": { "type": "integer", "minimum": 0, "description": "Tokens used so far (cumulative)" },
            }),
            &[],
        ),
        "claim_task" => (
            "Claim the best ready task (`pas task claim`); {\"claimed\": false, \"task\": null} when none is ready.",
            json!({ "cell": cell, "agent": agent }),
            &[],
        ),
        "complete_task" => (
            "Report a claimed task completed (`pas task done`).",
            json!({
                "cell": cell,
                "task_id": task,
                "artifacts": { "type": "array", "items": { "type": "string" }, "description": "Paths of what it produced" },
            }),
            &["task_id"],
        ),
        "fail_task" => (
            "Report a claimed task failed (`pas task fail`): back in the queue until max_retries, then failed.",
            json!({ "cell": cell, "task_id": task, "reason": { "type": "string" } }),
            &["task_id", "reason"],
        ),
        "save_checkpoint" => (
            "Save a checkpoint generation (`pas checkpoint save`) with the state and context given.",
            json!({
                "cell": cell,
                "agent": agent,
                "state": { "description": "Any JSON: the agent's state (default: a snapshot of its agent file)" },
                "context": { "description": "Any JSON: its context (default {})" },
                "reason": { "type": "string", "description": "Why it is saved (default manual)" },
            }),
            &[],
        ),
        "load_checkpoint" => (
            "Load a checkpoint generation (`pas checkpoint show`): its manifest and state.",
            json!({
                "cell": cell,
                "agent": agent,
                "generation": { "type": "integer", "minimum": 1, "description": "Default: the latest" },
            }),
            &[],
        ),
        "report_context" => (
            "Report context use (`pas budget track`); past the policy's ratios the reply says warning or breach, and a breach runs the breach action.",
            json!({
                "cell": cell,
                "agent": agent,
                "ctx_used": { "type": "integer", "minimum": 0, "description": "Context tokens in use" },
                "ctx_limit": { "type": "integer", "minimum": 1, "description": "Context window size" },
                "cost_usd": { "type": "number", "minimum": 0 },
                "tokens": { "type": "integer", "minimum": 0 },
            }),
            &["ctx_used"],
        ),
        "request_handoff" => (
            "Hand a task to another agent (`pas task handoff`), policy and permissions permitting; may wait for approval.",
            json!({
                "cell": cell,
                "task_id": task,
                "to": { "type": "string", "description": "The receiving agent" },
            }),
            &["task_id"],
        ),
        "list_tasks" => (
            "The tasks of a cell (`pas task list`).",
            json!({
                "cell": cell,
                "status": { "type": "string", "enum": ["pending", "blocked", "in_progress", "completed", "failed"] },
            }),
            &[],
        ),
        "cell_status" => (
            "A cell's status (`pas status CELL`): its agents, their health, tasks.",
            json!({ "cell": cell }),
            &[],
        ),
        _ => return None,
    };
    Some((
        text,
        json!({ "type": "object", "properties": props, "required": required, "additionalProperties": false }),
    ))
}

/// A number argument, as the command line writes it.
fn number(args: &Map<String, Value>, key: &str, whole: bool) -> Result<Option<String>> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if !whole || n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => Err(Error::usage(format!(
            "\"{key}\" must be {}, not {other}",
            if whole {
                "a whole number >= 0"
            } else {
                "a number"
            }
        ))),
    }
}

/// A list-of-strings argument.
fn texts(args: &Map<String, Value>, key: &str) -> Result<Vec<String>> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                other => Err(Error::usage(format!(
                    "\"{key}\" must be a list of strings; {other} is not one"
                ))),
            })
            .collect(),
        Some(other) => Err(Error::usage(format!(
            "\"{key}\" must be a list of strings, not {other}"
        ))),
    }
}

/// A required argument.
fn needed(value: Option<String>, key: &str) -> Result<String> {
    value.ok_or_else(|| Error::usage(format!("the call needs \"{key}\"")))
}

/// The cell: the argument, else the default; never something the command line would take
/// for an option.
fn cell_of(args: &Map<String, Value>, d: &Defaults) -> Result<String> {
    let cell = text(args, "cell")?
        .or_else(|| d.cell.clone())
        .ok_or_else(|| {
            Error::usage("which cell? pass \"cell\", or start pas mcp with --cell or PAS_CELL set")
        })?;
    if cell.is_empty() || cell.starts_with('-') {
        return Err(Error::usage(format!("{cell:?} is not a cell id or name")));
    }
    Ok(cell)
}

/// The agent: the argument `key`, else the acting agent; checked as an id.
fn agent_of(args: &Map<String, Value>, key: &str, d: &Defaults) -> Result<String> {
    let agent = text(args, key)?
        .or_else(|| d.agent.clone())
        .ok_or_else(|| {
            Error::usage(format!(
                "which agent? pass \"{key}\", or start pas mcp with --agent or PAS_AGENT set"
            ))
        })?;
    check_id(IdKind::Agent, &agent)?;
    Ok(agent)
}

/// A task id argument, checked.
fn task_of(args: &Map<String, Value>) -> Result<String> {
    let task = needed(text(args, "task_id")?, "task_id")?;
    check_id(IdKind::Task, &task)?;
    Ok(task)
}

/// Adds `--flag=VALUE` when there is a value (the `=` keeps a value starting with `-` a
/// value).
fn flag(argv: &mut Vec<String>, name: &str, value: Option<String>) {
    if let Some(v) = value {
        argv.push(format!("--{name}={v}"));
    }
}

/// Refuses arguments the tool does not take (a misspelt one would be ignored otherwise).
fn only(args: &Map<String, Value>, tool: &str, schema: &Value) -> Result<()> {
    for key in args.keys() {
        if schema["properties"].get(key).is_none() {
            let known: Vec<&str> = schema["properties"]
                .as_object()
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            return Err(Error::usage(format!(
                "{tool} takes no \"{key}\"; it takes {}",
                if known.is_empty() {
                    "nothing".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    Ok(())
}

/// What a call of `tool` with `args` does, or why it cannot be made.
pub fn plan(tool: &str, args: &Map<String, Value>, d: &Defaults) -> Result<Plan> {
    let Some((_, schema)) = describe(tool) else {
        return Err(Error::new(
            crate::error::Kind::NotFound,
            format!("there is no tool {tool:?}; tools/list shows them"),
        ));
    };
    only(args, tool, &schema)?;
    let mut argv: Vec<String> = Vec::new();
    let plan = match tool {
        "create_mission_cell" => {
            argv.extend(["cell".into(), "create".into()]);
            flag(
                &mut argv,
                "name",
                Some(needed(text(args, "name")?, "name")?),
            );
            flag(&mut argv, "isolation", text(args, "isolation")?);
            flag(&mut argv, "max-agents", number(args, "max_agents", true)?);
            flag(&mut argv, "timeout", number(args, "timeout", true)?);
            flag(&mut argv, "id", text(args, "id")?);
            Plan::Cli(argv)
        }
        "add_agent_to_cell" => {
            let cell = cell_of(args, d)?;
            let agent = needed(text(args, "agent_id")?, "agent_id")?;
            check_id(IdKind::Agent, &agent)?;
            argv.extend(["agent".into(), "add".into(), cell, agent]);
            flag(&mut argv, "name", text(args, "name")?);
            flag(&mut argv, "role", text(args, "role")?);
            for cap in texts(args, "capabilities")? {
                flag(&mut argv, "cap", Some(cap));
            }
            Plan::Cli(argv)
        }
        "get_agent_health" => {
            let cell = cell_of(args, d)?;
            let agent = agent_of(args, "agent_id", d)?;
            Plan::Health(vec!["agent".into(), "show".into(), cell, agent])
        }
        "beat" => {
            let cell = cell_of(args, d)?;
            let agent = agent_of(args, "agent", d)?;
            argv.extend(["agent".into(), "beat".into(), cell, agent]);
            flag(&mut argv, "status", text(args, "status")?);
            flag(&mut argv, "progress", number(args, "progress", false)?);
            flag(&mut argv, "ctx-used", number(args, "ctx_used", true)?);
            flag(&mut argv, "ctx-limit", number(args, "ctx_limit", true)?);
            flag(&mut argv, "note", text(args, "note")?);
            flag(&mut argv, "cost-usd", number(args, "cost_usd", false)?);
            flag(&mut argv, "tokens", number(args, "tokens", true)?);
            match args.get("meta") {
                None | Some(Value::Null) => {}
                Some(Value::Object(meta)) => {
                    for (k, v) in meta {
                        let v = match v {
                            Value::String(s) => s.clone(),
                            Value::Number(_) | Value::Bool(_) => v.to_string(),
                            other => {
                                return Err(Error::usage(format!(
                                    "\"meta\" values must be strings, numbers or booleans; {k} is {other}"
                                )))
                            }
                        };
                        flag(&mut argv, "meta", Some(format!("{k}={v}")));
                    }
                }
                Some(other) => {
                    return Err(Error::usage(format!(
                        "\"meta\" must be an object, not {other}"
                    )))
                }
            }
            Plan::Cli(argv)
        }
        "claim_task" => {
            let cell = cell_of(args, d)?;
            let agent = agent_of(args, "agent", d)?;
            Plan::Claim(vec![
                "task".into(),
                "claim".into(),
                cell,
                format!("--agent={agent}"),
            ])
        }
        "complete_task" => {
            let cell = cell_of(args, d)?;
            argv.extend(["task".into(), "done".into(), cell, task_of(args)?]);
            for a in texts(args, "artifacts")? {
                flag(&mut argv, "artifact", Some(a));
            }
            Plan::Cli(argv)
        }
        "fail_task" => {
            let cell = cell_of(args, d)?;
            argv.extend(["task".into(), "fail".into(), cell, task_of(args)?]);
            flag(
                &mut argv,
                "reason",
                Some(needed(text(args, "reason")?, "reason")?),
            );
            Plan::Cli(argv)
        }
        "save_checkpoint" => {
            let bytes = |key: &str| {
                args.get(key)
                    .filter(|v| !v.is_null())
                    .map(|v| {
                        serde_json::to_vec_pretty(v)
                            .map_err(|e| Error::usage(format!("\"{key}\": {e}")))
                    })
                    .transpose()
            };
            Plan::Save {
                cell: cell_of(args, d)?,
                agent: agent_of(args, "agent", d)?,
                state: bytes("state")?,
                context: bytes("context")?,
                reason: text(args, "reason")?.unwrap_or_else(|| "manual".into()),
            }
        }
        "load_checkpoint" => {
            let cell = cell_of(args, d)?;
            let agent = agent_of(args, "agent", d)?;
            argv.extend(["checkpoint".into(), "show".into(), cell, agent]);
            flag(&mut argv, "generation", number(args, "generation", true)?);
            Plan::Cli(argv)
        }
        "report_context" => {
            let cell = cell_of(args, d)?;
            let agent = agent_of(args, "agent", d)?;
            argv.extend(["budget".into(), "track".into(), cell, agent]);
            flag(
                &mut argv,
                "used",
                Some(needed(number(args, "ctx_used", true)?, "ctx_used")?),
            );
            flag(&mut argv, "limit", number(args, "ctx_limit", true)?);
            flag(&mut argv, "cost-usd", number(args, "cost_usd", false)?);
            flag(&mut argv, "tokens", number(args, "tokens", true)?);
            Plan::Cli(argv)
        }
        "request_handoff" => {
            let cell = cell_of(args, d)?;
            argv.extend(["task".into(), "handoff".into(), cell, task_of(args)?]);
            if let Some(to) = text(args, "to")? {
                check_id(IdKind::Agent, &to)?;
                flag(&mut argv, "to", Some(to));
            }
            Plan::Cli(argv)
        }
        "list_tasks" => {
            argv.extend(["task".into(), "list".into(), cell_of(args, d)?]);
            flag(&mut argv, "status", text(args, "status")?);
            Plan::Cli(argv)
        }
        "cell_status" => Plan::Cli(vec!["status".into(), cell_of(args, d)?]),
        _ => unreachable_tool(tool)?,
    };
    Ok(plan)
}

/// A tool with a schema but no plan (a test checks there is none).
fn unreachable_tool(tool: &str) -> Result<Plan> {
    Err(Error::failure(format!(
        "the tool {tool} has no implementation"
    )))
}

/// The seed's word for an agent's health (its `AgentHealthStatus.status`): pas's healthy
/// (and never-beat, which the seed counts healthy on registration) is healthy; beating but
/// late or reporting DEGRADED is degraded; anything silent or given up on is unhealthy.
pub fn seed_status(health: &str) -> &'static str {
    match health {
        "healthy" | "unknown" => "healthy",
        "degraded" | "late" => "degraded",
        _ => "unhealthy",
    }
}

/// An agent (as `pas agent show --json` prints it) as the seed's health record, with
/// pas's own words beside the seed's.
pub fn health_view(agent: &Value) -> Value {
    let health = agent["health"].as_str().unwrap_or("unknown");
    json!({
        // `pas agent show` says agent_id, `pas agent list` id.
        "agent_id": agent.get("agent_id").unwrap_or(&agent["id"]),
        "status": seed_status(health),
        "health": health,
        "last_heartbeat": agent["last_heartbeat"],
        "heartbeat_age_seconds": agent["heartbeat_age_seconds"],
        "heartbeat_count": agent["heartbeat_count"],
        "consecutive_failures": agent.get("failures").cloned().unwrap_or(json!(0)),
        "error_message": agent["last_failure"]["reason"],
        "metadata": agent.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "progress": agent["progress"],
        "current_task": agent["current_task"],
        "agent_status": agent["status"],
    })
}

/// A command's JSON result as a tool's structured result (always an object).
pub fn structured(tool: &str, value: Value) -> Value {
    match value {
        Value::Object(_) => value,
        Value::Array(items) if tool == "list_tasks" => json!({ "tasks": items }),
        Value::Array(items) => json!({ "items": items }),
        Value::Null => json!({}),
        other => json!({ "result": other }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn cli(v: &[&str]) -> Plan {
        Plan::Cli(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn every_tool_has_a_schema_and_a_plan() {
        let d = Defaults {
            cell: Some("c1".into()),
            agent: Some("a1".into()),
        };
        for name in NAMES {
            let (text, schema) = describe(name).expect("described");
            assert!(!text.is_empty());
            assert_eq!(schema["type"], "object");
            // With its required arguments filled, every tool has a plan.
            let mut a = Map::new();
            for r in schema["required"].as_array().expect("required") {
                let key = r.as_str().expect("name");
                let value = match schema["properties"][key]["type"].as_str() {
                    Some("integer") => json!(1),
                    _ => json!("x1"),
                };
                a.insert(key.into(), value);
            }
            assert!(plan(name, &a, &d).is_ok(), "{name}");
        }
        assert!(describe("nope").is_none());
    }

    #[test]
    fn plans_calls() {
        let d = Defaults {
            cell: Some("c1".into()),
            agent: Some("a1".into()),
        };
        let none = Defaults::default();
        let cases: Vec<(&str, Value, &Defaults, std::result::Result<Plan, &str>)> = vec![
            (
                "beat",
                json!({}),
                &d,
                Ok(cli(&["agent", "beat", "c1", "a1"])),
            ),
            (
                "beat",
                json!({"progress": 0.5, "ctx_used": 10, "note": "-x", "meta": {"k": "v", "n": 2}}),
                &d,
                Ok(cli(&[
                    "agent",
                    "beat",
                    "c1",
                    "a1",
                    "--progress=0.5",
                    "--ctx-used=10",
                    "--note=-x",
                    "--meta=k=v",
                    "--meta=n=2",
                ])),
            ),
            (
                "beat",
                json!({"agent": "a2", "cell": "c2"}),
                &d,
                Ok(cli(&["agent", "beat", "c2", "a2"])),
            ),
            ("beat", json!({}), &none, Err("which cell?")),
            ("beat", json!({"cell": "c1"}), &none, Err("which agent?")),
            ("beat", json!({"cell": "-x"}), &d, Err("is not a cell id")),
            ("beat", json!({"agent": "../x"}), &d, Err("agent")),
            ("beat", json!({"ctx_used": -1}), &d, Err("whole number")),
            (
                "beat",
                json!({"progress": "half"}),
                &d,
                Err("must be a number"),
            ),
            ("beat", json!({"meta": [1]}), &d, Err("must be an object")),
            ("beat", json!({"meta": {"k": [1]}}), &d, Err("meta")),
            (
                "beat",
                json!({"stauts": "active"}),
                &d,
                Err("beat takes no \"stauts\""),
            ),
            (
                "claim_task",
                json!({}),
                &d,
                Ok(Plan::Claim(vec![
                    "task".into(),
                    "claim".into(),
                    "c1".into(),
                    "--agent=a1".into(),
                ])),
            ),
            (
                "complete_task",
                json!({"task_id": "t1", "artifacts": ["a.md"]}),
                &d,
                Ok(cli(&["task", "done", "c1", "t1", "--artifact=a.md"])),
            ),
            ("complete_task", json!({}), &d, Err("needs \"task_id\"")),
            ("complete_task", json!({"task_id": "-t"}), &d, Err("task")),
            (
                "fail_task",
                json!({"task_id": "t1"}),
                &d,
                Err("needs \"reason\""),
            ),
            (
                "fail_task",
                json!({"task_id": "t1", "reason": "no"}),
                &d,
                Ok(cli(&["task", "fail", "c1", "t1", "--reason=no"])),
            ),
            (
                "create_mission_cell",
                json!({"name": "m", "max_agents": 3}),
                &none,
                Ok(cli(&["cell", "create", "--name=m", "--max-agents=3"])),
            ),
            (
                "create_mission_cell",
                json!({"name": 5}),
                &none,
                Err("must be a string"),
            ),
            (
                "add_agent_to_cell",
                json!({"agent_id": "b", "capabilities": ["x", "y"]}),
                &d,
                Ok(cli(&["agent", "add", "c1", "b", "--cap=x", "--cap=y"])),
            ),
            (
                "add_agent_to_cell",
                json!({"agent_id": "b", "capabilities": [1]}),
                &d,
                Err("list of strings"),
            ),
            (
                "get_agent_health",
                json!({"agent_id": "b"}),
                &d,
                Ok(Plan::Health(vec![
                    "agent".into(),
                    "show".into(),
                    "c1".into(),
                    "b".into(),
                ])),
            ),
            (
                "load_checkpoint",
                json!({"generation": 2}),
                &d,
                Ok(cli(&["checkpoint", "show", "c1", "a1", "--generation=2"])),
            ),
            (
                "report_context",
                json!({"ctx_used": 5, "ctx_limit": 10}),
                &d,
                Ok(cli(&[
                    "budget",
                    "track",
                    "c1",
                    "a1",
                    "--used=5",
                    "--limit=10",
                ])),
            ),
            ("report_context", json!({}), &d, Err("needs \"ctx_used\"")),
            (
                "request_handoff",
                json!({"task_id": "t1", "to": "b"}),
                &d,
                Ok(cli(&["task", "handoff", "c1", "t1", "--to=b"])),
            ),
            (
                "list_tasks",
                json!({"status": "pending"}),
                &d,
                Ok(cli(&["task", "list", "c1", "--status=pending"])),
            ),
            ("cell_status", json!({}), &d, Ok(cli(&["status", "c1"]))),
            ("nope", json!({}), &d, Err("there is no tool")),
            (
                "save_checkpoint",
                json!({"state": {"step": 3}}),
                &d,
                Ok(Plan::Save {
                    cell: "c1".into(),
                    agent: "a1".into(),
                    state: Some(b"{\n  \"step\": 3\n}".to_vec()),
                    context: None,
                    reason: "manual".into(),
                }),
            ),
        ];
        for (tool, a, defaults, want) in cases {
            let got = plan(tool, &args(a.clone()), defaults);
            match (got, want) {
                (Ok(p), Ok(w)) => assert_eq!(p, w, "{tool} {a}"),
                (Err(e), Err(w)) => assert!(e.message.contains(w), "{tool} {a}: {}", e.message),
                (got, want) => panic!("{tool} {a}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn seed_words() {
        let cases = [
            ("healthy", "healthy"),
            ("unknown", "healthy"),
            ("degraded", "degraded"),
            ("late", "degraded"),
            ("unhealthy", "unhealthy"),
            ("down", "unhealthy"),
            ("dead", "unhealthy"),
            ("offline", "unhealthy"),
            ("failed", "unhealthy"),
        ];
        for (pas, seed) in cases {
            assert_eq!(seed_status(pas), seed, "{pas}");
        }
    }

    #[test]
    fn health_records() {
        let shown = json!({"agent_id": "a1", "health": "late", "failures": 2,
            "last_failure": {"at": "t", "reason": "tool timed out"}, "metadata": {"k": "v"}});
        let listed = json!({"id": "a2", "health": "dead"});
        let cases = [
            (
                shown,
                "a1",
                "degraded",
                json!(2),
                json!("tool timed out"),
                json!({"k": "v"}),
            ),
            (listed, "a2", "unhealthy", json!(0), Value::Null, json!({})),
        ];
        for (agent, id, status, failures, error, metadata) in cases {
            let r = health_view(&agent);
            assert_eq!(r["agent_id"], id);
            assert_eq!(r["status"], status);
            assert_eq!(r["consecutive_failures"], failures);
            assert_eq!(r["error_message"], error);
            assert_eq!(r["metadata"], metadata);
        }
    }

    #[test]
    fn results_are_objects() {
        assert_eq!(structured("list_tasks", json!([1])), json!({"tasks": [1]}));
        assert_eq!(structured("x", json!([1])), json!({"items": [1]}));
        assert_eq!(structured("x", Value::Null), json!({}));
        assert_eq!(structured("x", json!("s")), json!({"result": "s"}));
        assert_eq!(structured("x", json!({"a": 1})), json!({"a": 1}));
    }
}
