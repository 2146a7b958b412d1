//! Validation of documents against the JSON Schemas in `schemas/` (embedded).
//!
//! Every file pas writes must pass here (tests check it); `pas validate` reports the
//! problems of hand-written files as JSON path + reason.

use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

/// The kinds of document with a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    /// `cell.json`
    Cell,
    /// `agents/<id>.json`
    Agent,
    /// `tasks/<id>.json`
    Task,
    /// `config/isolation.json`
    Isolation,
    /// `config/policies.json`
    Policies,
    /// `config/permissions.json`
    Permissions,
    /// `reservations.json`
    Reservations,
}

impl SchemaKind {
    /// Every schema kind.
    pub const ALL: [SchemaKind; 7] = [
        SchemaKind::Cell,
        SchemaKind::Agent,
        SchemaKind::Task,
        SchemaKind::Isolation,
        SchemaKind::Policies,
        SchemaKind::Permissions,
        SchemaKind::Reservations,
    ];

    /// The schema's text, as shipped in `schemas/`.
    pub fn source(self) -> &'static str {
        match self {
            SchemaKind::Cell => include_str!("../../schemas/cell.schema.json"),
            SchemaKind::Agent => include_str!("../../schemas/agent.schema.json"),
            SchemaKind::Task => include_str!("../../schemas/task.schema.json"),
            SchemaKind::Isolation => include_str!("../../schemas/isolation.schema.json"),
            SchemaKind::Policies => include_str!("../../schemas/policies.schema.json"),
            SchemaKind::Permissions => include_str!("../../schemas/permissions.schema.json"),
            SchemaKind::Reservations => include_str!("../../schemas/reservations.schema.json"),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One way a document breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the document (`""` for the whole document).
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

type Compiled = Result<Validator, String>;

fn compiled(kind: SchemaKind) -> &'static Compiled {
    static CACHE: [OnceLock<Compiled>; 7] = [const { OnceLock::new() }; 7];
    CACHE[kind.index()].get_or_init(|| {
        let schema: Value = serde_json::from_str(kind.source()).map_err(|e| e.to_string())?;
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| e.to_string())
    })
}

/// Checks `value` against the schema of `kind`; an empty list means it conforms.
pub fn validate(kind: SchemaKind, value: &Value) -> Vec<Violation> {
    match compiled(kind) {
        Ok(validator) => validator
            .iter_errors(value)
            .map(|e| Violation {
                path: e.instance_path().to_string(),
                reason: e.to_string(),
            })
            .collect(),
        Err(e) => vec![Violation {
            path: String::new(),
            reason: format!("the embedded {kind:?} schema does not compile: {e}"),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates;

    #[test]
    fn every_schema_compiles_as_draft_2020_12() {
        for kind in SchemaKind::ALL {
            let schema: Value = serde_json::from_str(kind.source()).unwrap();
            assert_eq!(
                schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{kind:?}"
            );
            assert!(
                compiled(kind).is_ok(),
                "{kind:?}: {:?}",
                compiled(kind).as_ref().err()
            );
        }
    }

    #[test]
    fn every_template_validates_against_its_schema() {
        let pairs = [
            (SchemaKind::Cell, templates::CELL),
            (SchemaKind::Agent, templates::AGENT),
            (SchemaKind::Task, templates::TASK),
            (SchemaKind::Isolation, templates::ISOLATION),
            (SchemaKind::Policies, templates::POLICIES),
            (SchemaKind::Permissions, templates::PERMISSIONS),
        ];
        for (kind, text) in pairs {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(validate(kind, &value), vec![], "{kind:?}");
        }
    }

    #[test]
    fn violations_name_the_json_path() {
        let bad = serde_json::json!({"agent_id": "a", "role": "boss", "heartbeat_count": -1});
        let problems = validate(SchemaKind::Agent, &bad);
        assert!(problems.iter().any(|p| p.path == "/role"), "{problems:?}");
        assert!(
            problems.iter().any(|p| p.path == "/heartbeat_count"),
            "{problems:?}"
        );
        let bad_cell = serde_json::json!({"cell_id": "../x", "mission_name": "m", "created_at": "yesterday", "status": "active"});
        let problems = validate(SchemaKind::Cell, &bad_cell);
        assert!(
            problems.iter().any(|p| p.path == "/cell_id"),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.path == "/created_at"),
            "{problems:?}"
        );
    }
}
