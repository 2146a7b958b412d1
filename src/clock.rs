//! Time, passed in rather than read deep inside the rules, so tests control it.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

/// The current time, as every command reads it (once, at the start of the work).
pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// RFC 3339 UTC with microseconds and a `Z`: the form of every timestamp pas writes.
pub fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses any RFC 3339 timestamp (hand-written files may use offsets or whole seconds).
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A timestamp in any form people and the seed prototypes write: RFC 3339 (what pas
/// writes), a naive ISO date-time (Python's `datetime.utcnow().isoformat()`, read as UTC),
/// or epoch seconds (`time.time()`, integer or float). `None` for anything else.
pub fn from_value(value: &serde_json::Value) -> Option<DateTime<Utc>> {
    match value {
        serde_json::Value::String(s) => parse_time_text(s),
        serde_json::Value::Number(n) => n.as_f64().and_then(from_epoch),
        _ => None,
    }
}

/// Seconds since 1970 of 10000-01-01: a later "epoch" is milliseconds or garbage.
const YEAR_10000: f64 = 253_402_300_800.0;

fn parse_time_text(text: &str) -> Option<DateTime<Utc>> {
    if let Some(t) = parse(text) {
        return Some(t);
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc())
}

fn from_epoch(seconds: f64) -> Option<DateTime<Utc>> {
    if !(0.0..YEAR_10000).contains(&seconds) {
        return None;
    }
    let whole = seconds.floor();
    // Rounded to microseconds, the precision pas writes, so a float epoch reads the same
    // on every platform.
    let micros = ((seconds - whole) * 1e6).round() as i64;
    DateTime::from_timestamp(whole as i64, 0).map(|t| t + chrono::Duration::microseconds(micros))
}

/// A short human duration: `42s`, `3m12s`, `2h05m`, `3d04h`.
pub fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".to_string();
    }
    let s = seconds.floor() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Like [`human_duration`], but keeps tenths under ten seconds: a restart backoff of
/// 0.5 s, 1 s, 2 s would otherwise read `0s, 1s, 2s`.
pub fn precise_duration(seconds: f64) -> String {
    if seconds.is_finite() && (0.0..10.0).contains(&seconds) && seconds.fract() != 0.0 {
        let tenths = format!("{seconds:.1}");
        return format!("{}s", tenths.trim_end_matches('0').trim_end_matches('.'));
    }
    human_duration(seconds)
}

/// Parses a duration as people write one: a number of seconds (`90`, `1.5`), or numbers
/// with units, largest first and optionally spaced: `500ms`, `90s`, `10m`, `2h`, `1d`,
/// `1w`, `1h30m`, `2d 4h`. Returns seconds; `None` for anything else (an empty text, a
/// unit pas does not know, units out of order or repeated, a negative amount).
pub fn parse_duration(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then_some(seconds);
    }
    const UNITS: [(&str, f64); 6] = [
        ("w", 604_800.0),
        ("d", 86_400.0),
        ("h", 3600.0),
        ("m", 60.0),
        ("s", 1.0),
        ("ms", 0.001),
    ];
    let mut rest = text;
    let mut total = 0.0;
    // Units must come largest first, each at most once: `1h30m`, not `30m1h`.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let amount: f64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..letters];
        let at = UNITS.iter().position(|(name, _)| *name == unit)?;
        if at < next_unit {
            return None;
        }
        next_unit = at + 1;
        total += amount * UNITS[at].1;
        rest = rest[letters..].trim_start();
    }
    (total.is_finite() && !text.is_empty()).then_some(total)
}

/// How long ago `then` was, humanly: `42s ago`; `-` when unknown.
pub fn ago(then: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match then {
        Some(t) => {
            let secs = (now - t).num_milliseconds() as f64 / 1000.0;
            format!("{} ago", human_duration(secs.max(0.0)))
        }
        None => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_in_utc() {
        let t = parse("2026-11-23T10:00:00+02:00").unwrap();
        assert_eq!(stamp(t), "2026-11-23T08:00:00.000000Z");
        assert_eq!(parse(&stamp(t)), Some(t));
        assert!(parse("yesterday").is_none());
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(human_duration(0.4), "0s");
        assert_eq!(human_duration(42.0), "42s");
        assert_eq!(human_duration(192.0), "3m12s");
        assert_eq!(human_duration(7500.0), "2h05m");
        assert_eq!(human_duration(3.0 * 86_400.0 + 4.0 * 3600.0), "3d04h");
    }

    #[test]
    fn durations_parse_as_people_write_them() {
        let cases: [(&str, Option<f64>); 22] = [
            ("90", Some(90.0)),
            ("1.5", Some(1.5)),
            ("0", Some(0.0)),
            ("90s", Some(90.0)),
            ("500ms", Some(0.5)),
            ("10m", Some(600.0)),
            ("2h", Some(7200.0)),
            ("1d", Some(86_400.0)),
            ("1w", Some(604_800.0)),
            ("1h30m", Some(5400.0)),
            ("1h 30m", Some(5400.0)),
            ("2d4h", Some(187_200.0)),
            ("1m30s", Some(90.0)),
            ("1.5h", Some(5400.0)),
            ("1s500ms", Some(1.5)),
            ("", None),
            ("-5", None),
            ("30m1h", None),
            ("1h1h", None),
            ("5 parsecs", None),
            ("h", None),
            ("yesterday", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), want, "{text:?}");
        }
    }

    #[test]
    fn short_waits_keep_their_tenths() {
        assert_eq!(precise_duration(0.5), "0.5s");
        assert_eq!(precise_duration(1.0), "1s");
        assert_eq!(precise_duration(2.25), "2.2s");
        assert_eq!(precise_duration(0.04), "0s");
        assert_eq!(precise_duration(12.5), "12s");
        assert_eq!(precise_duration(90.0), "1m30s");
    }
}
