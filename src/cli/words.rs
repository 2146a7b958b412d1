//! The model's words as clap reads them on the command line: each enum's one spelling,
//! with the help text each value has in `--help` and the man pages.

use clap::builder::{PossibleValue, TypedValueParser};
use clap::ValueEnum;

use crate::model::{AgentStatus, Health, ReportedStatus, ReservationStatus, Role};

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

impl ValueEnum for Health {
    fn value_variants<'a>() -> &'a [Self] {
        Health::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            Health::Healthy => "Beating on time",
            Health::Degraded => "Beating, but reported DEGRADED",
            Health::Unhealthy => "Beating, but failing again and again",
            Health::Late => "One interval missed",
            Health::Down => "`misses_down` intervals missed",
            Health::Dead => "Silent past `heartbeat_ttl`",
            Health::Unknown => "Never beat",
            Health::Offline => "Said it is offline",
            Health::Failed => "pas gave up on it",
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

/// A whole number of seconds 0 or more on the command line: `3600`, or a duration like
/// `1h30m` ([`seconds`]) that comes to whole seconds.
pub fn whole_seconds(text: &str) -> Result<u64, String> {
    let n = seconds(text)?;
    if n < 0.0 || n.fract() != 0.0 || n > 1e15 {
        return Err(format!(
            "{text:?} is not a whole number of seconds 0 or more"
        ));
    }
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_read_numbers_and_durations() {
        assert_eq!(seconds("90"), Ok(90.0));
        assert_eq!(
            seconds("-1"),
            Ok(-1.0),
            "a sign is left for the range check"
        );
        assert_eq!(seconds("1m30s"), Ok(90.0));
        assert!(seconds("soon").is_err());
        assert_eq!(whole_seconds("2h"), Ok(7200));
        assert_eq!(whole_seconds("0"), Ok(0));
        for bad in ["1.5", "-1", "500ms", "soon"] {
            assert!(whole_seconds(bad).is_err(), "{bad}");
        }
    }
}
