//! The optional root-wide configuration file, `$PAS_ROOT/pas.toml`.
//!
//! It holds defaults an operator wants for every cell of a root (a faster heartbeat on a
//! test machine, `auto_revive = "ask"` in production) without editing each cell. It sits
//! between pas's built-in defaults and the cell's own policies, so a cell still wins:
//!
//! ```toml
//! [policies]
//! heartbeat_interval = 10
//! auto_revive = "ask"
//! ```
//!
//! A `[capacity]` table sets what the machine offers to the reservations of all cells
//! together (see [`Capacity`]; what is not set is measured from the machine):
//!
//! ```toml
//! [capacity]
//! cpu = 8
//! mem_mb = 16000
//! gpu = 1
//! gpu_mem_mb = 8000
//! ports = "8000-8999"
//! ```
//!
//! Unknown tables and unknown policy names are refused, naming the line: a typo in a file
//! that changes every cell should not pass silently.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::store::Store;

/// The parsed configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RootConfig {
    /// `[policies]`: key to value, as JSON values so they layer like the JSON files.
    pub policies: Map<String, Value>,
    /// `store = "etcd://..."`: the store this root's commands use (see `store::select`).
    pub store: Option<String>,
    /// `blobs = "DIR"`: the etcd store's blob directory of checkpoints (relative to the
    /// root); the URL's `blobs=` wins.
    pub blobs: Option<String>,
    /// `[capacity]`: the machine's capacity as set by the operator.
    pub capacity: Capacity,
    /// `etcd_root_writers = ["NAME", ...]`: the etcd users a root pas runs commands from
    /// etcd for, when it connects as one of them (see `ops::trust::check_remote`).
    pub etcd_root_writers: Vec<String>,
}

/// The `[capacity]` table: what the machine offers to all cells' reservations. A value
/// left out is measured (see `crate::usage::machine`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Capacity {
    /// CPU cores.
    pub cpu: Option<f64>,
    /// Memory in MB (10⁶ bytes, as `pas reserve --mem 4GB` counts).
    pub mem_mb: Option<f64>,
    /// GPUs.
    pub gpu: Option<f64>,
    /// GPU memory in MB.
    pub gpu_mem_mb: Option<f64>,
    /// The ports reservations may hold, first and last.
    pub ports: Option<(u16, u16)>,
}

/// The keys of `[capacity]`.
pub const CAPACITY_KEYS: [&str; 5] = ["cpu", "mem_mb", "gpu", "gpu_mem_mb", "ports"];

/// Reads one `[capacity]` value; an error says what is wrong.
fn capacity_value(
    capacity: &mut Capacity,
    key: &str,
    value: &toml::Value,
) -> std::result::Result<(), String> {
    if key == "ports" {
        let range = value
            .as_str()
            .and_then(|t| t.split_once('-'))
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
            .filter(|(a, b)| *a >= 1 && a <= b);
        return match range {
            Some(r) => {
                capacity.ports = Some(r);
                Ok(())
            }
            None => Err(format!(
                "[capacity] ports must be a range like \"8000-8999\" (1 to 65535), not {value}"
            )),
        };
    }
    let n = match value {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        _ => f64::NAN,
    };
    if !(n.is_finite() && n >= 0.0) {
        return Err(format!(
            "[capacity] {key} must be a number of at least 0, not {value}"
        ));
    }
    let slot = match key {
        "cpu" => &mut capacity.cpu,
        "mem_mb" => &mut capacity.mem_mb,
        "gpu" => &mut capacity.gpu,
        _ => &mut capacity.gpu_mem_mb,
    };
    *slot = Some(n);
    Ok(())
}

/// Reads and checks the root's `pas.toml`; a missing file is an empty configuration.
pub fn load(store: &dyn Store) -> Result<RootConfig> {
    match store.read_root_config()? {
        None => Ok(RootConfig::default()),
        Some((bytes, path)) => parse(&bytes).map_err(|(line, what)| {
            let at = line.map(|l| format!(" line {l}")).unwrap_or_default();
            Error::data(format!("{path}{at}: {what}"))
                .hint("fix the file or remove it; the keys are listed by `pas policy show CELL`")
        }),
    }
}

/// Parses the file's text; an error is `(line, what is wrong)`.
pub fn parse(bytes: &[u8]) -> std::result::Result<RootConfig, (Option<usize>, String)> {
    let text = std::str::from_utf8(bytes).map_err(|_| (None, "is not UTF-8 text".to_string()))?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        (
            e.span().map(|s| line_of(s.start)),
            e.message().trim().to_string(),
        )
    })?;
    // The line where `needle` (a key or `[table`) is written as a whole word.
    let find_line = |needle: &str| {
        text.lines()
            .position(|l| {
                l.trim_start().strip_prefix(needle).is_some_and(|rest| {
                    rest.starts_with(|c: char| c.is_whitespace() || "=].".contains(c))
                })
            })
            .map(|i| i + 1)
    };
    let mut config = RootConfig::default();
    for (name, value) in table {
        if name == "store" {
            let toml::Value::String(url) = value else {
                return Err((
                    find_line(&name),
                    "`store` must be a string such as \"etcd://h1:2379,h2:2379,h3:2379/pas\""
                        .to_string(),
                ));
            };
            config.store = Some(url);
            continue;
        }
        if name == "blobs" {
            let toml::Value::String(dir) = value else {
                return Err((
                    find_line(&name),
                    "`blobs` must be a string: the directory of checkpoint blobs, such as \"/srv/pas-blobs\""
                        .to_string(),
                ));
            };
            config.blobs = Some(dir);
            continue;
        }
        if name == "etcd_root_writers" {
            let names = match &value {
                toml::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string).filter(|n| !n.is_empty()))
                    .collect::<Option<Vec<String>>>(),
                _ => None,
            };
            let Some(names) = names else {
                return Err((
                    find_line(&name),
                    "`etcd_root_writers` must be a list of etcd user names such as [\"pas\"]"
                        .to_string(),
                ));
            };
            config.etcd_root_writers = names;
            continue;
        }
        if name == "capacity" {
            let toml::Value::Table(table) = value else {
                return Err((find_line(&name), "`capacity` must be a table".to_string()));
            };
            for (key, value) in table {
                if !CAPACITY_KEYS.contains(&key.as_str()) {
                    return Err((
                        find_line(&key),
                        format!(
                            "unknown key `{key}` in [capacity]; it has {}",
                            CAPACITY_KEYS.join(", ")
                        ),
                    ));
                }
                capacity_value(&mut config.capacity, &key, &value)
                    .map_err(|what| (find_line(&key), what))?;
            }
            continue;
        }
        if name != "policies" {
            return Err((
                find_line(&format!("[{name}")).or_else(|| find_line(&name)),
                format!(
                    "unknown setting `{name}`; the file has `store = \"URL\"`, `blobs = \"DIR\"`, `etcd_root_writers = [...]` and two tables, [policies] and [capacity]"
                ),
            ));
        }
        let toml::Value::Table(policies) = value else {
            return Err((find_line(&name), "`policies` must be a table".to_string()));
        };
        let known: Vec<&str> = crate::ops::policy::defaults()
            .iter()
            .map(|(key, _, _)| *key)
            .collect();
        for (key, value) in policies {
            if !known.contains(&key.as_str()) {
                return Err((
                    find_line(&key),
                    format!("unknown policy `{key}` in [policies]"),
                ));
            }
            let value = serde_json::to_value(&value)
                .map_err(|e| (find_line(&key), format!("policy `{key}`: {e}")))?;
            config.policies.insert(key, value);
        }
    }
    // Each value must be of its policy's type: read as a policies layer, a wrong type
    // would only fall back to the default unseen, in every cell of the root.
    use crate::model::field::Record;
    let at = crate::model::field::At::file("pas.toml [policies]");
    match crate::model::Policies::read_map(&config.policies, &at) {
        Err(e) => return Err((None, e.message)),
        Ok(layer) => {
            if let Some(bad) = layer.unusable.first() {
                return Err((find_line(&bad.key), bad.reason.clone()));
            }
        }
    }
    Ok(config)
}

/// The file store at `root` with its `pas.toml` policy layer (for threads that open their
/// own store, like `pas top`'s loader).
pub fn open(root: std::path::PathBuf) -> Result<crate::store::FsStore> {
    let store = crate::store::FsStore::new(root);
    let config = load(&store)?;
    Ok(store.with_root_policies(config.policies))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policies_become_json_values() {
        let config = parse(
            b"# test machine\n[policies]\nheartbeat_interval = 10\nauto_revive = \"ask\"\nbackoff_multiplier = 1.5\nsubstitute_agents = [\"b\"]\n",
        )
        .unwrap();
        assert_eq!(config.policies["heartbeat_interval"], json!(10));
        assert_eq!(config.policies["auto_revive"], json!("ask"));
        assert_eq!(config.policies["backoff_multiplier"], json!(1.5));
        assert_eq!(config.policies["substitute_agents"], json!(["b"]));
    }

    #[test]
    fn values_of_the_wrong_type_are_refused_naming_their_line() {
        let cases: [(&[u8], usize, &str); 3] = [
            (
                b"[policies]\nheartbeat_interval = \"soon\"\n",
                2,
                "heartbeat_interval",
            ),
            (
                b"[policies]\nmax_restarts = 3\nauto_revive = \"maybe\"\n",
                3,
                "auto_revive",
            ),
            (
                b"[policies]\nsubstitute_agents = 5\n",
                2,
                "substitute_agents",
            ),
        ];
        for (text, line, key) in cases {
            let (at, what) = parse(text).unwrap_err();
            assert!(what.contains(key), "{what}");
            if key != "auto_revive" {
                assert_eq!(at, Some(line), "{what}");
            }
        }
    }

    #[test]
    fn mistakes_name_their_line() {
        let typo = parse(b"[policies]\n\nheartbeat_intervl = 10\n").unwrap_err();
        assert_eq!(typo.0, Some(3));
        let prefix = parse(b"[policies]\nheartbeat_interval = 5\nheartbeat = 1\n").unwrap_err();
        assert_eq!(
            prefix.0,
            Some(3),
            "a key that is a prefix of another is found on its own line"
        );
        assert!(typo.1.contains("heartbeat_intervl"), "{}", typo.1);
        let table = parse(b"[policies]\n[server]\nport = 1\n").unwrap_err();
        assert_eq!(table.0, Some(2));
        let syntax = parse(b"[policies]\nheartbeat_interval = \n").unwrap_err();
        assert_eq!(syntax.0, Some(2));
        assert!(parse(b"").unwrap().policies.is_empty());
    }

    #[test]
    fn blobs_is_a_directory_string() {
        // (text, Ok(blobs) or Err(line, part of the message))
        type Want = std::result::Result<Option<&'static str>, (usize, &'static str)>;
        let cases: [(&[u8], Want); 3] = [
            (b"", Ok(None)),
            (b"blobs = \"/srv/blobs\"\n", Ok(Some("/srv/blobs"))),
            (b"\nblobs = [1]\n", Err((2, "`blobs` must be a string"))),
        ];
        for (text, want) in cases {
            match (parse(text), want) {
                (Ok(c), Ok(blobs)) => assert_eq!(c.blobs.as_deref(), blobs),
                (Err((line, what)), Err((want_line, part))) => {
                    assert_eq!(line, Some(want_line), "{what}");
                    assert!(what.contains(part), "{what}");
                }
                (got, want) => panic!("{got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn etcd_root_writers_are_a_list_of_names() {
        // (text, Ok(names) or Err(line))
        type Want = std::result::Result<&'static [&'static str], usize>;
        let cases: [(&[u8], Want); 5] = [
            (b"", Ok(&[])),
            (
                b"etcd_root_writers = [\"pas\", \"ops\"]\n",
                Ok(&["pas", "ops"]),
            ),
            (
                b"store = \"etcd://h:1/p\"\netcd_root_writers = \"pas\"\n",
                Err(2),
            ),
            (b"etcd_root_writers = [\"\"]\n", Err(1)),
            (b"etcd_root_writers = [1]\n", Err(1)),
        ];
        for (text, want) in cases {
            let got = parse(text);
            match want {
                Ok(names) => assert_eq!(got.unwrap().etcd_root_writers, names),
                Err(line) => {
                    let (at, what) = got.unwrap_err();
                    assert_eq!(at, Some(line), "{what}");
                    assert!(what.contains("etcd_root_writers"), "{what}");
                }
            }
        }
    }

    #[test]
    fn the_store_is_a_url_string() {
        // (text, Ok(store) or Err(line, part of the message))
        type Want = std::result::Result<Option<&'static str>, (usize, &'static str)>;
        let cases: [(&[u8], Want); 4] = [
            (b"", Ok(None)),
            (
                b"store = \"etcd://h1:2379/pas\"\n[policies]\nheartbeat_interval = 5\n",
                Ok(Some("etcd://h1:2379/pas")),
            ),
            (b"\nstore = 5\n", Err((2, "must be a string"))),
            (b"stor = \"x\"\n", Err((1, "unknown setting `stor`"))),
        ];
        for (text, want) in cases {
            let got = parse(text);
            match (got, want) {
                (Ok(c), Ok(store)) => assert_eq!(c.store.as_deref(), store),
                (Err((line, what)), Err((want_line, part))) => {
                    assert_eq!(line, Some(want_line), "{what}");
                    assert!(what.contains(part), "{what}");
                }
                (got, want) => panic!("{got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn capacity_values_are_read_or_refused_naming_their_line() {
        let ok = parse(
            b"[capacity]\ncpu = 8\nmem_mb = 1500.5\ngpu = 1\ngpu_mem_mb = 8000\nports = \"8000-8099\"\n",
        )
        .unwrap();
        assert_eq!(
            ok.capacity,
            Capacity {
                cpu: Some(8.0),
                mem_mb: Some(1500.5),
                gpu: Some(1.0),
                gpu_mem_mb: Some(8000.0),
                ports: Some((8000, 8099)),
            }
        );
        assert_eq!(parse(b"").unwrap().capacity, Capacity::default());
        let cases: [(&[u8], usize, &str); 6] = [
            (b"[capacity]\ngpus = 1\n", 2, "unknown key `gpus`"),
            (b"[capacity]\ncpu = -1\n", 2, "at least 0"),
            (
                b"[capacity]\n\nmem_mb = \"lots\"\n",
                3,
                "mem_mb must be a number",
            ),
            (
                b"[capacity]\nports = \"9000-8000\"\n",
                2,
                "ports must be a range",
            ),
            (
                b"[capacity]\nports = \"0-10\"\n",
                2,
                "ports must be a range",
            ),
            (b"[capacity]\nports = 80\n", 2, "ports must be a range"),
        ];
        for (text, line, what) in cases {
            let (at, msg) = parse(text).unwrap_err();
            assert_eq!(at, Some(line), "{msg}");
            assert!(msg.contains(what), "{msg}");
        }
    }
}
