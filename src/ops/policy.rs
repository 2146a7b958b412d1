//! Effective policy: built-in defaults, overridden by the root's `pas.toml` `[policies]`,
//! then by `cell.json` `policies`, then by `config/policies.json`, then by the agent file's
//! own `policies` (highest wins).
//!
//! Every value remembers where it came from, so `pas policy show` can say why an agent is
//! treated the way it is.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::doc::Doc;
use crate::error::Result;
use crate::model::EventKind;
use crate::model::{Agent, AutoRevive, Cell, Policies, Record, RestartPolicy};
use crate::store::events::{Level, NewEvent};
use crate::store::{ConfigFile, FileKey, Store};

/// Where a policy value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// pas's built-in default.
    Default,
    /// The root's `pas.toml` `[policies]`.
    RootConfig,
    /// `cell.json` -> `policies`.
    CellJson,
    /// `config/policies.json`.
    PoliciesFile,
    /// The agent file's `policies`.
    Agent,
}

impl Source {
    /// How `pas policy show` names it.
    pub fn label(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::RootConfig => "pas.toml",
            Source::CellJson => "cell.json policies",
            Source::PoliciesFile => "config/policies.json",
            Source::Agent => "agent file policies",
        }
    }
}

/// The built-in defaults, in the order `pas policy show` lists them, with what each means.
pub fn defaults() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "heartbeat_interval",
            json!(30),
            "seconds between two beats an agent is expected to send",
        ),
        (
            "heartbeat_ttl",
            Value::Null,
            "seconds of silence before an agent is dead (null: misses_dead x heartbeat_interval)",
        ),
        (
            "misses_down",
            json!(2),
            "missed intervals before an agent is down",
        ),
        (
            "misses_dead",
            json!(3),
            "missed intervals before an agent is dead (when heartbeat_ttl is null)",
        ),
        (
            "failure_threshold",
            json!(3),
            "consecutive recorded failures that make an agent unhealthy",
        ),
        (
            "auto_revive",
            json!("yes"),
            "revive dead agents: yes, no, or ask (a request to approve)",
        ),
        (
            "revive_timeout",
            json!(300),
            "seconds a revived agent has to send its first beat",
        ),
        (
            "substitute_agents",
            json!([]),
            "agents that take over the tasks of an agent that finally failed",
        ),
        (
            "handoff_allowed",
            json!(true),
            "whether tasks may be handed from one agent to another",
        ),
        (
            "handoff_approval",
            json!("auto"),
            "auto, or manual (a handoff request to approve)",
        ),
        (
            "checkpoint_required",
            json!(true),
            "whether revival needs a checkpoint",
        ),
        (
            "checkpoint_interval",
            json!(300),
            "seconds between checkpoints an agent is expected to save",
        ),
        (
            "checkpoint_keep",
            json!(5),
            "checkpoint generations kept per agent (older ones are pruned)",
        ),
        (
            "log_max_bytes",
            json!(10_000_000),
            "bytes an agent's log grows to before it is rotated (0: never rotated)",
        ),
        (
            "log_keep",
            json!(5),
            "rotated files kept per agent log (older ones are removed)",
        ),
        (
            "max_retries",
            json!(3),
            "attempts of a task before it stays failed",
        ),
        ("target_ratio", json!(0.5), "context use (ctx_used / ctx_limit) from which an agent is in warning"),
        ("hard_max_ratio", json!(0.75), "context use from which the budget is breached: save state, clear, resume with a summary"),
        ("compact_min_interval", json!(300), "seconds at least between two context compactions of one agent"),
        ("compact_max_per_hour", json!(4), "context compactions of one agent per hour before it is flagged as thrashing"),
        ("breach_action", json!("compact"), "what a context breach does: compact (save state, clear, resume at once) or ask (pause the agent, file a request for pas budget approve or deny)"),
        ("cost_soft_usd", Value::Null, "money an agent may spend before a warning (null: no limit)"),
        ("cost_hard_usd", Value::Null, "money an agent may spend before it is told to stop (budget_reached)"),
        ("tokens_soft", Value::Null, "tokens an agent may use before a warning"),
        ("tokens_hard", Value::Null, "tokens an agent may use before it is told to stop (budget_reached)"),
        ("cell_cost_hard_usd", Value::Null, "money all agents of the cell together may spend before each is told to stop"),
        ("cell_tokens_hard", Value::Null, "tokens all agents of the cell together may use before each is told to stop"),
        ("restart_policy", json!("on-failure"), "always, on-failure (not after a clean exit 0) or never"),
        ("max_restarts", json!(0), "restarts in a row (without a stable run of restart_reset_after) before the agent is failed (0: no limit)"),
        ("restart_delay_seconds", json!(0.5), "wait before the first restart"),
        ("backoff_multiplier", json!(2.0), "each further restart waits this many times longer"),
        ("max_restart_delay_seconds", json!(60), "the longest wait between restarts"),
        ("restart_reset_after", json!(60), "seconds of health after a restart that reset the restart count (and so the backoff)"),
        ("storm_limit", json!(0), "deaths within storm_window that make the agent cool down (0: off; the backoff already slows a crash loop)"),
        ("storm_window", json!(300), "seconds over which deaths are counted for the storm limit"),
        ("storm_cooldown", json!(600), "seconds an agent rests after a restart storm before it is tried again"),
        ("startup_grace", json!(60), "seconds a restarted agent that beat before has for its first beat before heartbeats judge it"),
        ("heartbeat_required", json!(false), "judge an agent by heartbeats from its start; false: an agent that never beat is judged by its process"),
        ("watchdog", json!(true), "stop and restart an agent whose process runs but does not beat (once it has beaten, or with heartbeat_required)"),
        ("no_restart_exit_codes", json!([]), "exit codes that mean: do not restart"),
        ("always_restart_exit_codes", json!([]), "exit codes that mean: restart whatever restart_policy says"),
        ("stop_grace", json!(10), "seconds between SIGTERM and SIGKILL when pas stops an agent"),
        ("host_takeover_after", json!(30), "seconds a pas watch node on a shared store (etcd) waits after another host's node went before it takes over that host's dead agents (null: never)"),
        ("on_failure", Value::Null, "a shell command run when an agent finally fails (PAS_CELL, PAS_AGENT, PAS_CAUSE, PAS_EXIT_CODE, PAS_REASON set)"),
        ("on_event", Value::Null, "a shell command run for each event whose kind on_event_kinds matches, the event as JSON on stdin"),
        ("on_event_kinds", json!(["down", "dead", "failed", "breach", "reached", "cell_timeout"]), "the events on_event runs for: kinds, prefixes ending in '.', words such as down or breach, or *"),
    ]
}

/// One resolved value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setting {
    /// The key.
    pub key: String,
    /// The effective value.
    pub value: Value,
    /// Where it came from.
    pub source: Source,
}

/// The effective policy of a cell or an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    settings: Vec<Setting>,
}

impl Policy {
    /// Resolves typed layers: `cell.json`'s `policies`, `config/policies.json` and the
    /// agent file's `policies`, over the root-wide layer `root`; any may be missing.
    pub fn of(
        root: &Map<String, Value>,
        cell: Option<&Policies>,
        file: Option<&Policies>,
        agent: Option<&Policies>,
    ) -> Policy {
        let cell_layer = cell.map(layer_map);
        let file_layer = file.map(layer_map);
        let agent_layer = agent.map(layer_map);
        Policy::from_layers([
            (Some(root), Source::RootConfig),
            (cell_layer.as_ref(), Source::CellJson),
            (file_layer.as_ref(), Source::PoliciesFile),
            (agent_layer.as_ref(), Source::Agent),
        ])
    }

    /// The defaults overridden by each layer in turn, highest last.
    fn from_layers(layers: [(Option<&Map<String, Value>>, Source); 4]) -> Policy {
        let mut settings: Vec<Setting> = defaults()
            .into_iter()
            .map(|(key, value, _)| Setting {
                key: key.to_string(),
                value,
                source: Source::Default,
            })
            .collect();
        for (layer, source) in layers {
            let Some(layer) = layer else { continue };
            for (key, value) in layer {
                match settings.iter_mut().find(|s| &s.key == key) {
                    Some(s) => {
                        s.value = value.clone();
                        s.source = source;
                    }
                    None => settings.push(Setting {
                        key: key.clone(),
                        value: value.clone(),
                        source,
                    }),
                }
            }
        }
        Policy { settings }
    }

    /// Every setting, defaults first in their documented order, then other keys.
    pub fn settings(&self) -> &[Setting] {
        &self.settings
    }

    /// A setting's value for people: strings as they are, a list of strings joined with
    /// commas (as `pas policy set` takes it), a `null` `heartbeat_ttl` as the silence it
    /// stands for, anything else as JSON.
    pub fn shown(&self, setting: &Setting) -> String {
        match &setting.value {
            Value::String(v) => v.clone(),
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            Value::Null if setting.key == "heartbeat_ttl" => format!(
                "{} (misses_dead x heartbeat_interval)",
                self.heartbeat_ttl()
            ),
            other => other.to_string(),
        }
    }

    /// The effective value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.settings
            .iter()
            .find(|s| s.key == key)
            .map(|s| &s.value)
    }

    fn default_f64(key: &str) -> f64 {
        defaults()
            .into_iter()
            .find(|(k, _, _)| *k == key)
            .and_then(|(_, v, _)| v.as_f64())
            .unwrap_or(0.0)
    }

    /// A positive number, or the built-in default when the value is missing or not one.
    pub fn positive(&self, key: &str) -> f64 {
        match self.get(key).and_then(Value::as_f64) {
            Some(v) if v > 0.0 && v.is_finite() => v,
            _ => Self::default_f64(key),
        }
    }

    /// A number that may be zero, or the built-in default when missing or negative.
    pub fn non_negative(&self, key: &str) -> f64 {
        match self.get(key).and_then(Value::as_f64) {
            Some(v) if v >= 0.0 && v.is_finite() => v,
            _ => Self::default_f64(key),
        }
    }

    /// The integers of a list setting (exit codes).
    pub fn codes(&self, key: &str) -> Vec<i64> {
        self.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default()
    }

    /// The strings of a list setting (agent ids).
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A string setting, or `fallback`.
    pub fn text<'a>(&'a self, key: &str, fallback: &'a str) -> &'a str {
        self.get(key).and_then(Value::as_str).unwrap_or(fallback)
    }

    /// `auto_revive`, read as the mission-cell spec writes it too (`true`/`false` mean yes
    /// and no); a word pas does not know is the default (`pas validate` reports it).
    pub fn auto_revive(&self) -> AutoRevive {
        match self.get("auto_revive") {
            Some(Value::Bool(true)) => AutoRevive::Yes,
            Some(Value::Bool(false)) => AutoRevive::No,
            Some(Value::String(word)) => AutoRevive::parse(word).unwrap_or_default(),
            _ => AutoRevive::default(),
        }
    }

    /// `restart_policy`; a word pas does not know is the default, `on-failure` (`pas
    /// validate` reports it).
    pub fn restart_policy(&self) -> RestartPolicy {
        self.get("restart_policy")
            .and_then(Value::as_str)
            .and_then(RestartPolicy::parse)
            .unwrap_or_default()
    }

    /// A boolean setting, or `fallback`.
    pub fn flag(&self, key: &str, fallback: bool) -> bool {
        self.get(key).and_then(Value::as_bool).unwrap_or(fallback)
    }

    /// The seconds between expected beats.
    pub fn heartbeat_interval(&self) -> f64 {
        self.positive("heartbeat_interval")
    }

    /// The seconds of silence after which an agent is dead.
    pub fn heartbeat_ttl(&self) -> f64 {
        match self.get("heartbeat_ttl").and_then(Value::as_f64) {
            Some(v) if v > 0.0 && v.is_finite() => v,
            _ => self.positive("misses_dead") * self.heartbeat_interval(),
        }
    }

    /// How long a `pas watch` node waits, after another host's node key went, before it
    /// takes over that host's dead agents (`host_takeover_after`); `None`: never.
    pub fn takeover_after(&self) -> Option<chrono::Duration> {
        let seconds = match self.get("host_takeover_after") {
            Some(Value::Null) => return None,
            _ => self.non_negative("host_takeover_after"),
        };
        Some(chrono::Duration::milliseconds((seconds * 1000.0) as i64))
    }

    /// How long pas waits between SIGTERM and SIGKILL when it stops an agent.
    pub fn stop_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.non_negative("stop_grace"))
    }

    /// The seconds of silence after which an agent is down.
    pub fn down_after(&self) -> f64 {
        self.positive("misses_down") * self.heartbeat_interval()
    }

    /// How long a started agent has for its first beat before heartbeats judge it.
    pub fn startup_grace(&self) -> f64 {
        self.positive("startup_grace")
    }

    /// Failures in a row that make a beating agent unhealthy. A fraction such as 0.5
    /// truncates to 0, which would make every agent unhealthy: one failure is the least
    /// that counts.
    pub fn failure_threshold(&self) -> u64 {
        (self.positive("failure_threshold") as u64).max(1)
    }

    /// Checkpoint generations kept per agent (at least the one just saved).
    pub fn checkpoint_keep(&self) -> usize {
        self.positive("checkpoint_keep").max(1.0) as usize
    }

    /// Bytes an agent's log grows to before its supervisor rotates it; 0: never.
    pub fn log_max_bytes(&self) -> u64 {
        self.whole("log_max_bytes")
    }

    /// Rotated files kept per agent log.
    pub fn log_keep(&self) -> usize {
        usize::try_from(self.whole("log_keep")).unwrap_or(usize::MAX)
    }

    /// Restarts in a row before an agent is failed (0: no limit); a value that is not a
    /// whole number is the default.
    pub fn max_restarts(&self) -> u64 {
        self.whole("max_restarts")
    }

    /// How many times longer each further restart waits; a value below 1 (which would
    /// shorten the waits) or not a number is the default.
    pub fn backoff_multiplier(&self) -> f64 {
        self.get("backoff_multiplier")
            .and_then(Value::as_f64)
            .filter(|m| *m >= 1.0)
            .unwrap_or_else(|| Self::default_f64("backoff_multiplier"))
    }

    /// Deaths within `storm_window` that make an agent cool down (0: no limit); a value
    /// that is not a whole number is the default.
    pub fn storm_limit(&self) -> u64 {
        self.whole("storm_limit")
    }

    /// Attempts of a task before it stays failed: at least 1; a value that is not a whole
    /// number is the default.
    pub fn max_retries(&self) -> u64 {
        self.whole("max_retries").max(1)
    }

    /// The shell command run when an agent finally fails; `None` when unset or blank.
    pub fn on_failure(&self) -> Option<&str> {
        self.get("on_failure")
            .and_then(Value::as_str)
            .filter(|h| !h.trim().is_empty())
    }

    /// Context use from which an agent is warned; a value that is not a number is the
    /// default.
    pub fn target_ratio(&self) -> f64 {
        self.number("target_ratio")
    }

    /// Context use from which the context budget is breached.
    pub fn hard_max_ratio(&self) -> f64 {
        self.number("hard_max_ratio")
    }

    /// Seconds at least between two compactions of one agent.
    pub fn compact_min_interval(&self) -> f64 {
        self.non_negative("compact_min_interval")
    }

    /// What a context breach does; a word pas does not know is the default, `compact`
    /// (`pas validate` reports it).
    pub fn breach_action(&self) -> crate::model::BreachPolicy {
        self.get("breach_action")
            .and_then(Value::as_str)
            .and_then(crate::model::BreachPolicy::parse)
            .unwrap_or_default()
    }

    /// Compactions in an hour after which the next breach is thrashing.
    pub fn compact_max_per_hour(&self) -> u64 {
        self.whole("compact_max_per_hour")
    }

    /// Dollars an agent may spend before a warning; `None`: no limit.
    pub fn cost_soft_usd(&self) -> Option<f64> {
        self.limit("cost_soft_usd")
    }

    /// Dollars an agent may spend before it is told to stop.
    pub fn cost_hard_usd(&self) -> Option<f64> {
        self.limit("cost_hard_usd")
    }

    /// Tokens an agent may use before a warning.
    pub fn tokens_soft(&self) -> Option<f64> {
        self.limit("tokens_soft")
    }

    /// Tokens an agent may use before it is told to stop.
    pub fn tokens_hard(&self) -> Option<f64> {
        self.limit("tokens_hard")
    }

    /// Dollars all agents of the cell may spend together.
    pub fn cell_cost_hard_usd(&self) -> Option<f64> {
        self.limit("cell_cost_hard_usd")
    }

    /// Tokens all agents of the cell may use together.
    pub fn cell_tokens_hard(&self) -> Option<f64> {
        self.limit("cell_tokens_hard")
    }

    /// Any number, or the built-in default when the value is not one.
    fn number(&self, key: &str) -> f64 {
        self.get(key)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| Self::default_f64(key))
    }

    /// A whole number of 0 or more, or the built-in default when the value is not one.
    fn whole(&self, key: &str) -> u64 {
        self.get(key)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| Self::default_f64(key) as u64)
    }

    /// A limit: `None` when it is unset, `null`, not a number or negative.
    fn limit(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64).filter(|v| *v >= 0.0)
    }
}

/// A policy layer as the resolver reads it: the usable values as pas writes them, then
/// the unusable ones as written (they override lower layers, and the getters fall back to
/// the built-in default for them).
fn layer_map(layer: &Policies) -> Map<String, Value> {
    let mut map = layer.to_map();
    for u in &layer.unusable {
        map.insert(u.key.clone(), u.value.clone());
    }
    map
}

/// `config/policies.json` of a cell, typed; `None` when the cell has none.
pub fn read_file_layer(store: &dyn Store, cell: &str) -> Result<Option<Policies>> {
    store
        .read(cell, FileKey::Config(ConfigFile::Policies))?
        .map(|doc| Policies::from_doc(&doc))
        .transpose()
}

/// The effective policy of a cell (and of `agent`, when given): its layers read typed.
pub fn load(store: &dyn Store, cell: &str, agent: Option<&Agent>) -> Result<Policy> {
    let cell_doc = store
        .read(cell, FileKey::Cell)?
        .map(|doc| Cell::from_doc(&doc))
        .transpose()?;
    let file = read_file_layer(store, cell)?;
    Ok(Policy::of(
        store.root_policies(),
        cell_doc.as_ref().map(|c| &c.policies),
        file.as_ref(),
        agent.map(|a| &a.policies),
    ))
}

/// The policy of a cell whose `config/policies.json` is `json` and that has no other
/// layer: the rules' tables state their policies this way.
#[cfg(test)]
pub(crate) fn of_file(json: &str) -> Policy {
    let file = crate::doc::Doc::parse(
        json.as_bytes(),
        std::path::Path::new("config/policies.json"),
    )
    .and_then(|doc| Policies::from_doc(&doc))
    .unwrap();
    Policy::of(&Map::new(), None, Some(&file), None)
}

/// Where `pas policy set` and `pas policy unset` write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The cell: `config/policies.json` (unset also clears `cell.json`'s `policies`).
    Cell,
    /// One agent: its file's `policies`.
    Agent(&'a str),
}

/// One value `pas policy set` or `unset` changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Changed {
    /// The key.
    pub key: String,
    /// The file it was changed in (`config/policies.json`, `cell.json`, `agents/a1.json`).
    pub file: String,
    /// What the layer said before (`None`: it did not set the key).
    pub was: Option<Value>,
    /// What it says now (`None`: the key was removed).
    pub now: Option<Value>,
}

/// Whether `key` is a policy pas knows.
fn known(key: &str) -> bool {
    defaults().iter().any(|(k, _, _)| *k == key)
}

fn unknown_key(key: &str) -> crate::error::Error {
    crate::error::Error::usage(format!("unknown policy `{key}`"))
        .hint("`pas policy show CELL` lists every key with its value")
}

/// Parses one `KEY=VALUE` of `pas policy set`. The value is read as JSON when it is JSON
/// (`10`, `0.5`, `true`, `null`, `["a1"]`, `"text"`), else as text (`ask`, `on-failure`,
/// `echo failed`); a list policy also takes text separated by commas (`a1,a2`, `1,2`).
pub fn parse_assignment(text: &str) -> Result<(String, Value)> {
    let Some((key, raw)) = text.split_once('=') else {
        return Err(
            crate::error::Error::usage(format!("{text:?} is not KEY=VALUE"))
                .hint("for example `pas policy set CELL heartbeat_interval=10`"),
        );
    };
    let key = key.trim();
    if !known(key) {
        return Err(unknown_key(key));
    }
    let list = defaults().iter().any(|(k, v, _)| *k == key && v.is_array());
    let value = match serde_json::from_str::<Value>(raw.trim()) {
        Ok(v) => v,
        // A period may be written as people write durations: `90s`, `1h30m`, `500ms`.
        Err(_) if DURATIONS.contains(&key) => match crate::clock::parse_duration(raw) {
            Some(seconds) if seconds.fract() == 0.0 && seconds <= u32::MAX as f64 => {
                Value::from(seconds as u64)
            }
            Some(seconds) => Value::from(seconds),
            None => {
                return Err(
                    crate::error::Error::usage(format!("{key}={raw}: not a duration"))
                        .hint("write seconds (`90`) or a duration (`90s`, `1h30m`, `500ms`)"),
                )
            }
        },
        Err(_) if list => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(|part| serde_json::from_str(part).unwrap_or_else(|_| Value::from(part)))
                .collect(),
        ),
        Err(_) => Value::from(raw),
    };
    check_value(key, &value).map_err(|why| {
        crate::error::Error::usage(format!("{key}={raw}: {why}"))
            .hint(format!("`pas policy show CELL` shows what {key} holds now"))
    })?;
    Ok((key.to_string(), value))
}

/// The keys that are periods in seconds: `policy set` also takes them as durations.
const DURATIONS: &[&str] = &[
    "heartbeat_interval",
    "heartbeat_ttl",
    "revive_timeout",
    "checkpoint_interval",
    "compact_min_interval",
    "restart_delay_seconds",
    "max_restart_delay_seconds",
    "restart_reset_after",
    "storm_window",
    "storm_cooldown",
    "startup_grace",
    "stop_grace",
    "host_takeover_after",
];

/// The keys whose value must be above zero (a count or a period), and those that may be 0.
const POSITIVE: &[&str] = &[
    "heartbeat_interval",
    "misses_down",
    "misses_dead",
    "failure_threshold",
    "startup_grace",
    "checkpoint_keep",
    "backoff_multiplier",
];

/// Checks a value for `key` as every policy layer reads it: of the key's type, and for a
/// number, finite and not below zero (above zero for counts and periods, at least 1 for
/// `backoff_multiplier`). `Err` says why not.
pub fn check_value(key: &str, value: &Value) -> std::result::Result<(), String> {
    use crate::model::field::Record;
    let mut one = Map::new();
    one.insert(key.to_string(), value.clone());
    let layer = crate::model::Policies::read_map(&one, &crate::model::field::At::file("policy"))
        .map_err(|e| e.message)?;
    if let Some(bad) = layer.unusable.first() {
        return Err(bad.reason.clone());
    }
    if let Some(n) = value.as_f64() {
        let least = match key {
            "backoff_multiplier" => Some((1.0, "at least 1")),
            _ if POSITIVE.contains(&key) => None,
            _ => Some((0.0, "0 or more")),
        };
        let fine = match least {
            Some((min, _)) => n >= min,
            None => n > 0.0,
        };
        if !n.is_finite() || !fine {
            return Err(format!(
                "{n} is out of range; it must be {}",
                least.map_or("above 0", |(_, words)| words)
            ));
        }
    }
    Ok(())
}

/// A layer's `policies` object of a document (`cell.json`, an agent file).
fn nested(doc: &Doc) -> Map<String, Value> {
    doc.get("policies")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Sets policy values in one layer of a cell (see [`Target`]), atomically, with a
/// `policy.set` event; values already set to the same thing change nothing. Values come
/// from [`parse_assignment`]; a key given twice is refused.
pub fn set(
    store: &dyn Store,
    cell: &str,
    target: Target<'_>,
    values: &[(String, Value)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Changed>> {
    for (i, (key, value)) in values.iter().enumerate() {
        if values[..i].iter().any(|(k, _)| k == key) {
            return Err(crate::error::Error::usage(format!(
                "policy `{key}` is given twice"
            )));
        }
        if !known(key) {
            return Err(unknown_key(key));
        }
        check_value(key, value)
            .map_err(|why| crate::error::Error::usage(format!("{key}={value}: {why}")))?;
    }
    if let Target::Agent(agent) = target {
        crate::ops::agent::read(store, cell, agent)?;
    }
    crate::store::transact(store, cell, now, |txn| {
        let (key, file, mut layer, doc) = match target {
            Target::Cell => {
                let key = FileKey::Config(ConfigFile::Policies);
                let doc = txn.read(key)?;
                let layer = doc.as_ref().map(|d| d.map().clone()).unwrap_or_default();
                (key, key.relative(), layer, doc)
            }
            Target::Agent(agent) => {
                let key = FileKey::Agent(agent);
                let doc = txn.read_required(key)?;
                (key, key.relative(), nested(&doc), Some(doc))
            }
        };
        let mut changed = Vec::new();
        for (k, v) in values {
            let was = layer.get(k).cloned();
            if was.as_ref() == Some(v) {
                continue;
            }
            layer.insert(k.clone(), v.clone());
            changed.push(Changed {
                key: k.clone(),
                file: file.clone(),
                was,
                now: Some(v.clone()),
            });
        }
        if changed.is_empty() {
            return Ok(changed);
        }
        let written = match (target, doc) {
            (Target::Cell, _) => Doc::from_map(layer),
            (Target::Agent(_), Some(mut d)) => {
                d.set("policies", Value::Object(layer));
                d
            }
            (Target::Agent(_), None) => return Ok(Vec::new()),
        };
        txn.put(key, written);
        txn.event(policy_event(target, &changed, true));
        Ok(changed)
    })
}

/// A document of a policy layer, as `unset` changes it: its key, its name, the document,
/// its policy map, and whether that map is the document's `policies` (else the document).
type LayerDoc<'a> = (FileKey<'a>, String, Doc, Map<String, Value>, bool);

/// Removes policy keys from one layer of a cell (for [`Target::Cell`]: from
/// `config/policies.json` and from `cell.json`'s `policies`), atomically, with a
/// `policy.unset` event, so the lower layers (`pas.toml`, the defaults) apply again. A key
/// the layer does not set changes nothing; one pas does not know and the layer does not set
/// either is refused as a typo.
pub fn unset(
    store: &dyn Store,
    cell: &str,
    target: Target<'_>,
    keys: &[String],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Changed>> {
    if let Target::Agent(agent) = target {
        crate::ops::agent::read(store, cell, agent)?;
    }
    crate::store::transact(store, cell, now, |txn| {
        // The documents of the layer, each with its policy map.
        let mut docs: Vec<LayerDoc<'_>> = Vec::new();
        match target {
            Target::Cell => {
                let cell_doc = txn.read_required(FileKey::Cell)?;
                let cell_layer = nested(&cell_doc);
                docs.push((
                    FileKey::Cell,
                    FileKey::Cell.relative(),
                    cell_doc,
                    cell_layer,
                    true,
                ));
                if let Some(file) = txn.read(FileKey::Config(ConfigFile::Policies))? {
                    let layer = file.map().clone();
                    docs.push((
                        FileKey::Config(ConfigFile::Policies),
                        "config/policies.json".into(),
                        file,
                        layer,
                        false,
                    ));
                }
            }
            Target::Agent(agent) => {
                let doc = txn.read_required(FileKey::Agent(agent))?;
                let layer = nested(&doc);
                docs.push((
                    FileKey::Agent(agent),
                    format!("agents/{agent}.json"),
                    doc,
                    layer,
                    true,
                ));
            }
        }
        for key in keys {
            if !known(key)
                && !docs
                    .iter()
                    .any(|(_, _, _, layer, _)| layer.contains_key(key))
            {
                return Err(unknown_key(key));
            }
        }
        let mut changed = Vec::new();
        for (file_key, file, mut doc, mut layer, in_policies) in docs {
            let mut touched = false;
            for key in keys {
                if let Some(was) = layer.shift_remove(key) {
                    touched = true;
                    changed.push(Changed {
                        key: key.clone(),
                        file: file.clone(),
                        was: Some(was),
                        now: None,
                    });
                }
            }
            if !touched {
                continue;
            }
            if in_policies {
                doc.set("policies", Value::Object(layer));
            } else {
                doc = Doc::from_map(layer);
            }
            txn.put(file_key, doc);
        }
        if !changed.is_empty() {
            txn.event(policy_event(target, &changed, false));
        }
        Ok(changed)
    })
}

/// The `policy.set` or `policy.unset` event of a change.
fn policy_event(target: Target<'_>, changed: &[Changed], set: bool) -> NewEvent {
    let whose = match target {
        Target::Cell => "the cell".to_string(),
        Target::Agent(a) => format!("agent {a}"),
    };
    let words: Vec<String> = changed
        .iter()
        .map(|c| match &c.now {
            Some(v) => format!("{}={v}", c.key),
            None => c.key.clone(),
        })
        .collect();
    let (kind, verb) = if set {
        (EventKind::PolicySet, "set")
    } else {
        (EventKind::PolicyUnset, "unset")
    };
    let event = NewEvent::new(
        Level::Info,
        kind,
        format!("policy {verb} for {whose}: {}", words.join(", ")),
    )
    .details(serde_json::json!({ "changes": changed }));
    match target {
        Target::Cell => event,
        Target::Agent(a) => event.agent(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::Doc;
    use serde_json::json;
    use std::path::Path;

    fn doc(text: &str) -> Doc {
        Doc::parse(text.as_bytes(), Path::new("t")).unwrap()
    }

    #[test]
    fn assignments_read_values_and_periods_as_people_write_them() {
        type Want = Result<(&'static str, Value), &'static str>;
        let cases: [(&str, Want); 9] = [
            (
                "heartbeat_interval=10",
                Ok(("heartbeat_interval", json!(10))),
            ),
            (
                "heartbeat_interval=1h30m",
                Ok(("heartbeat_interval", json!(5400))),
            ),
            (
                "restart_delay_seconds=500ms",
                Ok(("restart_delay_seconds", json!(0.5))),
            ),
            ("stop_grace = 2m", Ok(("stop_grace", json!(120)))),
            ("auto_revive=ask", Ok(("auto_revive", json!("ask")))),
            (
                "substitute_agents=a,b",
                Ok(("substitute_agents", json!(["a", "b"]))),
            ),
            ("heartbeat_interval=soon", Err("not a duration")),
            ("max_restarts=1h", Err("max_restarts=1h")),
            ("heartbeat_intervl=10", Err("heartbeat_intervl")),
        ];
        for (text, want) in cases {
            let got = parse_assignment(text);
            match (want, got) {
                (Ok((k, v)), Ok((gk, gv))) => assert_eq!((gk.as_str(), gv), (k, v), "{text}"),
                (Err(needle), Err(e)) => {
                    assert!(e.message.contains(needle), "{text}: {}", e.message)
                }
                (want, got) => panic!("{text}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn layers_override_in_order_and_remember_their_source() {
        let layer = |json: &str| Policies::from_doc(&doc(json)).unwrap();
        let cell = layer(r#"{"auto_revive": "ask", "heartbeat_interval": 10}"#);
        let file = layer(r#"{"heartbeat_interval": 5, "custom": 1}"#);
        let agent = layer(r#"{"heartbeat_ttl": 600}"#);
        let p = Policy::of(
            &serde_json::Map::new(),
            Some(&cell),
            Some(&file),
            Some(&agent),
        );
        let find = |k: &str| p.settings().iter().find(|s| s.key == k).unwrap().clone();
        assert_eq!(find("auto_revive").source, Source::CellJson);
        assert_eq!(find("heartbeat_interval").value, json!(5));
        assert_eq!(find("heartbeat_interval").source, Source::PoliciesFile);
        assert_eq!(find("heartbeat_ttl").source, Source::Agent);
        assert_eq!(find("custom").source, Source::PoliciesFile);
        assert_eq!(find("max_retries").source, Source::Default);
        assert_eq!(p.heartbeat_ttl(), 600.0);
        assert_eq!(p.down_after(), 10.0);
    }

    #[test]
    fn defaults_follow_the_seeds_numbers() {
        let p = Policy::of(&serde_json::Map::new(), None, None, None);
        assert_eq!(p.heartbeat_interval(), 30.0);
        assert_eq!(p.down_after(), 60.0);
        assert_eq!(p.heartbeat_ttl(), 90.0);
    }

    #[test]
    fn typed_layers_resolve_as_the_documents_do() {
        let cell = doc(
            r#"{"cell_id": "c", "mission_name": "m", "created_at": "2026-01-01T00:00:00Z",
                "status": "active",
                "policies": {"auto_revive": "ask", "heartbeat_interval": 10, "x_team": "ops"}}"#,
        );
        let file = doc(
            r#"{"heartbeat_interval": "soon", "misses_down": -1, "custom": 1,
                "cost_hard_usd": null, "failure_threshold": 2.9, "on_failure": "echo"}"#,
        );
        let agent = doc(r#"{"agent_id": "a", "policies": {"heartbeat_ttl": 600}}"#);
        let mut root = serde_json::Map::new();
        root.insert("stop_grace".into(), json!(3));
        // The layers as the documents hold them, resolved as they are.
        let policies = |d: &Doc| d.map()["policies"].as_object().cloned();
        let raw = Policy::from_layers([
            (Some(&root), Source::RootConfig),
            (policies(&cell).as_ref(), Source::CellJson),
            (Some(file.map()), Source::PoliciesFile),
            (policies(&agent).as_ref(), Source::Agent),
        ]);
        let typed = Policy::of(
            &root,
            Some(&Cell::from_doc(&cell).unwrap().policies),
            Some(&Policies::from_doc(&file).unwrap()),
            Some(&Agent::from_doc(&agent).unwrap().policies),
        );
        assert_eq!(typed, raw);
        // Nonsense overrides the lower layers, shown as written, and reads as the default.
        let find = |k: &str| {
            typed
                .settings()
                .iter()
                .find(|s| s.key == k)
                .unwrap()
                .clone()
        };
        assert_eq!(find("heartbeat_interval").value, json!("soon"));
        assert_eq!(find("heartbeat_interval").source, Source::PoliciesFile);
        assert_eq!(typed.heartbeat_interval(), 30.0);
        assert_eq!(typed.failure_threshold(), 2);
        assert_eq!(typed.cost_hard_usd(), None);
        assert_eq!(find("x_team").source, Source::CellJson);
        assert_eq!(typed.stop_grace(), std::time::Duration::from_secs(3));
    }

    #[test]
    fn nonsense_values_fall_back_to_defaults() {
        let p = of_file(r#"{"heartbeat_interval": "soon", "misses_down": -1}"#);
        assert_eq!(p.heartbeat_interval(), 30.0);
        assert_eq!(p.down_after(), 60.0);
    }
}
