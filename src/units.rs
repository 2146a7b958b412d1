//! Human quantities as the spec writes them: `"2 cores"`, `"4GB"`, `"512MiB"`, `1.5`.

use crate::error::{Error, Result};
use serde_json::Value;

/// What a quantity measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// CPU cores (`2 cores`, `1.5`, `500m` millicores).
    Cores,
    /// Bytes (`4GB` = 4×10⁹, `512MiB` = 512×2²⁰, a bare number is bytes).
    Bytes,
    /// A count (`2 gpus`, `1`).
    Count,
}

fn split_number(text: &str) -> Option<(f64, String)> {
    let t = text.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let number: f64 = t[..end].replace('_', "").parse().ok()?;
    Some((number, t[end..].trim().to_ascii_lowercase()))
}

/// Parses a quantity from a JSON value (a number, or a string with a unit); `field` names
/// it in the error.
pub fn parse(value: &Value, unit: Unit, field: &str) -> Result<f64> {
    let bad = |v: &str| {
        let example = match unit {
            Unit::Cores => "\"2 cores\", \"500m\" or 1.5",
            Unit::Bytes => "\"4GB\", \"512MiB\" or a number of bytes",
            Unit::Count => "\"2 gpus\" or 2",
        };
        Error::usage(format!("{field}: cannot read {v} as a quantity"))
            .hint(format!("write it like {example}"))
    };
    let n = match value {
        Value::Number(n) => n.as_f64().ok_or_else(|| bad(&value.to_string()))?,
        Value::String(s) => parse_str(s, unit).ok_or_else(|| bad(&format!("{s:?}")))?,
        other => return Err(bad(&other.to_string())),
    };
    if !n.is_finite() || n < 0.0 {
        return Err(bad(&value.to_string()));
    }
    Ok(n)
}

/// Parses a quantity typed on the command line.
pub fn parse_text(text: &str, unit: Unit, field: &str) -> Result<f64> {
    parse(&Value::from(text), unit, field)
}

fn parse_str(s: &str, unit: Unit) -> Option<f64> {
    let (n, suffix) = split_number(s)?;
    let factor = match unit {
        Unit::Cores => match suffix.as_str() {
            "" | "core" | "cores" | "cpu" | "cpus" => 1.0,
            "m" => 0.001,
            _ => return None,
        },
        Unit::Count => match suffix.as_str() {
            "" | "gpu" | "gpus" => 1.0,
            _ => return None,
        },
        Unit::Bytes => match suffix.as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "t" | "tb" => 1e12,
            "ki" | "kib" => 1024.0,
            "mi" | "mib" => 1024.0 * 1024.0,
            "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
            "ti" | "tib" => 1024.0f64.powi(4),
            _ => return None,
        },
    };
    Some(n * factor)
}

/// A quantity for people: `1.5 cores`, `4.0 GB`, `2`.
pub fn show(n: f64, unit: Unit) -> String {
    match unit {
        Unit::Cores if (n - 1.0).abs() < 1e-9 => "1 core".to_string(),
        Unit::Cores => format!("{} cores", trim(n)),
        Unit::Count => trim(n),
        Unit::Bytes => {
            for (factor, name) in [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")] {
                if n >= factor {
                    return format!("{} {name}", trim((n / factor * 10.0).round() / 10.0));
                }
            }
            format!("{} B", trim(n))
        }
    }
}

fn trim(n: f64) -> String {
    let s = format!("{n:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_specs_strings_and_numbers_parse() {
        assert_eq!(parse(&json!("2 cores"), Unit::Cores, "cpu").unwrap(), 2.0);
        assert_eq!(parse(&json!("500m"), Unit::Cores, "cpu").unwrap(), 0.5);
        assert_eq!(parse(&json!(1.5), Unit::Cores, "cpu").unwrap(), 1.5);
        assert_eq!(parse(&json!("4GB"), Unit::Bytes, "memory").unwrap(), 4e9);
        assert_eq!(
            parse(&json!("512MiB"), Unit::Bytes, "memory").unwrap(),
            512.0 * 1048576.0
        );
        assert_eq!(parse(&json!("10 GB"), Unit::Bytes, "disk").unwrap(), 1e10);
        assert_eq!(parse(&json!(1024), Unit::Bytes, "memory").unwrap(), 1024.0);
        assert_eq!(parse(&json!("2 gpus"), Unit::Count, "gpu").unwrap(), 2.0);
    }

    #[test]
    fn garbage_is_refused_with_the_field_named() {
        for v in [
            json!("lots"),
            json!("4 parsecs"),
            json!(-1),
            json!(true),
            json!(""),
        ] {
            let err = parse(&v, Unit::Bytes, "resource_limits.memory").unwrap_err();
            assert!(
                err.message
                    .starts_with("resource_limits.memory: cannot read"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn quantities_read_back_for_people() {
        assert_eq!(show(4e9, Unit::Bytes), "4 GB");
        assert_eq!(show(1.5, Unit::Cores), "1.5 cores");
    }
}
