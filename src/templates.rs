//! The starting content of every file pas creates, embedded from `templates/`.
//!
//! pas parses a template and then sets the keys it knows, so the field order on disk is
//! the template's (which follows the mission-cell spec).

use crate::doc::Doc;
use crate::error::Result;

/// `templates/cell.json`
pub const CELL: &str = include_str!("../templates/cell.json");
/// `templates/agent.json`
pub const AGENT: &str = include_str!("../templates/agent.json");
/// `templates/task.json`
pub const TASK: &str = include_str!("../templates/task.json");
/// `templates/isolation.json`
pub const ISOLATION: &str = include_str!("../templates/isolation.json");
/// `templates/policies.json`
pub const POLICIES: &str = include_str!("../templates/policies.json");
/// `templates/permissions.json`
pub const PERMISSIONS: &str = include_str!("../templates/permissions.json");
/// `templates/mission.json`: an example mission file, which the tests plan.
#[cfg(test)]
pub const MISSION: &str = include_str!("../templates/mission.json");

/// A template as a document.
pub fn doc(template: &'static str, name: &str) -> Result<Doc> {
    Doc::from_template(template, name)
}
