//! The rule of event hooks: whether the `on_event` hook runs for an event, from the event's
//! kind and the effective policy of its agent (or cell). Pure: no file, no clock, no process.

use crate::ops::policy::Policy;

/// The subject of the events hooks record about themselves: never matched, so a hook
/// cannot set itself off.
pub const OWN_SUBJECT: &str = "hook.";

/// Whether `kind` (dotted, `agent.down`) is one of `patterns`: `*` matches every kind; a
/// kind matches itself; a prefix ending in `.` (`budget.`) matches the kinds under it; a
/// word without a dot matches the part after the dot, whole (`down`: `agent.down`) or as
/// its last `_` part (`breach`: `budget.context_breach`; `warning`:
/// `budget.context_warning` and `budget.spend_warning`).
pub fn matches(patterns: &[String], kind: &str) -> bool {
    let name = kind.split_once('.').map_or(kind, |(_, name)| name);
    patterns.iter().map(|p| p.trim()).any(|p| {
        p == "*"
            || p == kind
            || (p.ends_with('.') && kind.starts_with(p))
            || (!p.is_empty()
                && !p.contains('.')
                && (name == p || name.strip_suffix(p).is_some_and(|rest| rest.ends_with('_'))))
    })
}

/// What to do about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No hook for it.
    Skip,
    /// Run this command (`sh -c`), the event as JSON on its stdin.
    Run {
        /// The `on_event` command.
        command: String,
    },
}

/// Whether the `on_event` hook of `policy` runs for an event of `kind`: a hook is set (not
/// empty), `on_event_kinds` matches the kind, and the kind is not a hook's own.
pub fn decide(kind: &str, policy: &Policy) -> Decision {
    let Some(command) = policy
        .get("on_event")
        .and_then(serde_json::Value::as_str)
        .map(str::trim)
        .filter(|c| !c.is_empty())
    else {
        return Decision::Skip;
    };
    if kind.starts_with(OWN_SUBJECT) || !matches(&policy.list("on_event_kinds"), kind) {
        return Decision::Skip;
    }
    Decision::Run {
        command: command.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn policy(layer: Value) -> Policy {
        Policy::of(layer.as_object().unwrap(), None, None, None)
    }

    #[test]
    #[rustfmt::skip]
    fn kinds_match_by_name_prefix_word_or_star() {
        let p = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (patterns, kind, matches)
        let rows: &[(&[&str], &str, bool)] = &[
            (&["agent.down"], "agent.down", true),
            (&["agent.down"], "agent.dead", false),
            (&["agent."], "agent.dead", true),
            (&["agent."], "budget.reached", false),
            (&["agent"], "agent.dead", false),
            (&["down"], "agent.down", true),
            (&["own"], "agent.down", false),
            (&["breach"], "budget.context_breach", true),
            (&["warning"], "budget.context_warning", true),
            (&["warning"], "budget.spend_warning", true),
            (&["failed"], "agent.failed", true),
            (&["failed"], "task.failed", true),
            (&["failed"], "agent.revive_failed", true),
            (&["reached"], "budget.reached", true),
            (&["cell_timeout"], "budget.cell_timeout", true),
            (&["timeout"], "budget.cell_timeout", true),
            (&["*"], "task.added", true),
            (&[" down "], "agent.down", true),
            (&[""], "agent.down", false),
            (&[], "agent.down", false),
            (&["dead", "down"], "agent.down", true),
        ];
        for (patterns, kind, want) in rows {
            assert_eq!(matches(&p(patterns), kind), *want, "{patterns:?} {kind}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn a_hook_runs_for_the_kinds_it_names_and_never_for_its_own() {
        let run = |c: &str| Decision::Run { command: c.into() };
        // (policy layer, event kind, decision)
        let rows: Vec<(Value, &str, Decision)> = vec![
            (json!({}), "agent.down", Decision::Skip),
            (json!({"on_event": null}), "agent.down", Decision::Skip),
            (json!({"on_event": "  "}), "agent.down", Decision::Skip),
            (json!({"on_event": "notify"}), "agent.down", run("notify")),
            (json!({"on_event": "notify"}), "agent.dead", run("notify")),
            (json!({"on_event": "notify"}), "agent.failed", run("notify")),
            (json!({"on_event": "notify"}), "budget.context_breach", run("notify")),
            (json!({"on_event": "notify"}), "budget.reached", run("notify")),
            (json!({"on_event": "notify"}), "budget.cell_timeout", run("notify")),
            (json!({"on_event": "notify"}), "agent.late", Decision::Skip),
            (json!({"on_event": "notify"}), "budget.context_warning", Decision::Skip),
            (json!({"on_event": "notify", "on_event_kinds": ["warning"]}), "budget.context_warning", run("notify")),
            (json!({"on_event": "notify", "on_event_kinds": ["*"]}), "task.added", run("notify")),
            (json!({"on_event": "notify", "on_event_kinds": ["*"]}), "hook.on_event", Decision::Skip),
            (json!({"on_event": "notify", "on_event_kinds": []}), "agent.down", Decision::Skip),
            (json!({"on_event": " notify "}), "agent.down", run("notify")),
        ];
        for (layer, kind, want) in rows {
            assert_eq!(decide(kind, &policy(layer.clone())), want, "{layer} {kind}");
        }
    }
}
