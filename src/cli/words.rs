//! The model's words as clap reads them on the command line: each enum's one spelling,
//! with the help text each value has in `--help` and the man pages.

use clap::builder::{PossibleValue, TypedValueParser};
use clap::ValueEnum;

use crate::model::{AgentStatus, ReportedStatus, ReservationStatus, Role};

impl ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        Role::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            Role::Lead => "Leads the mission",
            Role::Write => "Writes (code, documents)",
            Role::Read => "Reads only",
            Role::Audit => "Reviews",
        };
        Some(PossibleValue::new(self.as_str()).help(help))
    }
}

impl ValueEnum for ReportedStatus {
    fn value_variants<'a>() -> &'a [Self] {
        ReportedStatus::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            ReportedStatus::Active => "Working normally",
            ReportedStatus::Degraded => "Working, but impaired",
            ReportedStatus::Offline => "Deliberately not working; not judged by heartbeats",
        };
        Some(PossibleValue::new(self.as_str()).help(help))
    }
}

/// The statuses an operator may set on an agent (`failed` is pas's to set).
pub fn settable_status() -> impl TypedValueParser<Value = AgentStatus> {
    clap::builder::PossibleValuesParser::new(
        AgentStatus::ALL
            .iter()
            .filter(|s| **s != AgentStatus::Failed)
            .map(|s| s.as_str()),
    )
    .try_map(|word| word.parse::<AgentStatus>())
}

impl ValueEnum for ReservationStatus {
    fn value_variants<'a>() -> &'a [Self] {
        ReservationStatus::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.as_str()))
    }
}

/// A number of seconds on the command line: a plain number (any sign, so a range check
/// can name it), or a duration like `90s`, `1h30m`, `2d` ([`crate::clock::parse_duration`]).
pub fn seconds(text: &str) -> Result<f64, String> {
    if let Ok(n) = text.trim().parse::<f64>() {
        return Ok(n);
    }
    crate::clock::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration (write 30, 90s, 10m, 1h30m or 2d)"))
}
