//! Ids to paths: the one place that knows the on-disk shape of a cell.
//!
//! Invariant: no path is ever built from an id that [`check_id`] has not accepted, so an id
//! can never climb out of its directory (`../x`), name a subdirectory (`a/b`) or hide as a
//! dotfile next to pas's own temporary and lock files.

use crate::error::{Error, Result};

/// The longest id accepted for a cell, agent, task or job.
pub const MAX_ID_LEN: usize = 128;

/// `agents/`: one `<id>.json` document per agent.
pub const AGENTS_DIR: &str = "agents";
/// `tasks/`: one `<id>.json` document per task.
pub const TASKS_DIR: &str = "tasks";
/// `logs/`: the cell's append-only logs ([`LogFile`]).
pub const LOGS_DIR: &str = "logs";
/// `config/`: the cell's [`ConfigFile`]s.
pub const CONFIG_DIR: &str = "config";
/// The cell's own document, directly in the cell directory.
pub const CELL_FILE: &str = "cell.json";
/// The cell's resource reservations, directly in the cell directory.
pub const RESERVATIONS_FILE: &str = "reservations.json";
/// The events log's file name under [`LOGS_DIR`].
pub const EVENTS_LOG: &str = "events.jsonl";
/// How the file name of a per-id document ends: `<id>.json`.
pub const DOC_SUFFIX: &str = ".json";

/// The subdirectories every cell has (the mission-cell spec's layout).
pub const CELL_SUBDIRS: [&str; 6] = [
    AGENTS_DIR,
    TASKS_DIR,
    "checkpoints",
    LOGS_DIR,
    "artifacts",
    CONFIG_DIR,
];

/// Where pas keeps its lock files inside a cell (and inside the root).
pub const PAS_DIR: &str = ".pas";
/// The optional root-wide configuration file, directly under the root.
pub const ROOT_CONFIG: &str = "pas.toml";
/// Lock files live here, below [`PAS_DIR`].
pub const LOCKS_DIR: &str = "locks";

/// A document that belongs to the whole root rather than to a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RootDoc {
    /// The machine ledger: every active reservation of every cell, against the machine's
    /// capacity (`<root>/.pas/machine.json`).
    Machine,
}

impl RootDoc {
    /// Its file name below the root's [`PAS_DIR`].
    pub fn file_name(self) -> &'static str {
        match self {
            RootDoc::Machine => "machine.json",
        }
    }

    /// The root-wide lock that guards it (see [`super::Store::lock_root`]).
    pub fn lock_name(self) -> &'static str {
        match self {
            RootDoc::Machine => "machine",
        }
    }
}

/// The mode of a document's file: an agent file that holds environment values (`--env`,
/// often tokens) is readable by its owner only; every other document is 0644. Decided from
/// the bytes, so intent replays get the same mode, and without parsing them (this is on
/// every beat): any `"env"` key followed by a non-empty object makes it private, so a
/// nested one errs on the private side. `"env": {}` or none stays 0644.
pub fn doc_mode(key: FileKey<'_>, bytes: &[u8]) -> u32 {
    if matches!(key, FileKey::Agent(_)) && has_nonempty_env(bytes) {
        0o600
    } else {
        super::atomic::FILE_MODE
    }
}

fn has_nonempty_env(bytes: &[u8]) -> bool {
    const KEY: &[u8] = b"\"env\"";
    let skip_ws = |mut i: usize| {
        while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        i
    };
    let mut from = 0;
    while let Some(at) = bytes[from..].windows(KEY.len()).position(|w| w == KEY) {
        let mut i = skip_ws(from + at + KEY.len());
        from += at + KEY.len();
        if bytes.get(i) != Some(&b':') {
            continue;
        }
        i = skip_ws(i + 1);
        if bytes.get(i) != Some(&b'{') {
            continue;
        }
        if bytes.get(skip_ws(i + 1)) != Some(&b'}') {
            return true;
        }
    }
    false
}

/// The largest cell, agent, task or config document pas reads: far above any real one
/// (an agent file is a few KiB), far below what would hurt a fleet view.
pub const DOC_LIMIT: u64 = 4 << 20;
/// The largest `reservations.json`: it keeps every reservation ever made.
pub const RESERVATIONS_LIMIT: u64 = 64 << 20;
/// The largest `pas.toml`.
pub const ROOT_CONFIG_LIMIT: u64 = 1 << 20;
/// The largest intent record (it carries the documents of one commit).
pub const INTENT_LIMIT: u64 = 256 << 20;
/// The largest checkpoint file (state, context, manifest, one artifact).
pub const CHECKPOINT_FILE_LIMIT: u64 = 1 << 30;

/// The three files under `config/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigFile {
    /// `config/isolation.json`
    Isolation,
    /// `config/policies.json`
    Policies,
    /// `config/permissions.json`
    Permissions,
}

impl ConfigFile {
    /// All config files, in the order they are listed in the spec.
    pub const ALL: [ConfigFile; 3] = [
        ConfigFile::Isolation,
        ConfigFile::Policies,
        ConfigFile::Permissions,
    ];

    /// The file name under `config/`.
    pub fn file_name(self) -> &'static str {
        match self {
            ConfigFile::Isolation => "isolation.json",
            ConfigFile::Policies => "policies.json",
            ConfigFile::Permissions => "permissions.json",
        }
    }
}

/// One JSON document of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKey<'a> {
    /// `cell.json`
    Cell,
    /// `agents/<id>.json`
    Agent(&'a str),
    /// `tasks/<id>.json`
    Task(&'a str),
    /// `config/<name>.json`
    Config(ConfigFile),
    /// `reservations.json`: resource reservations (leases) of the cell's jobs.
    Reservations,
}

impl FileKey<'_> {
    /// The directory (relative to the cell) and the file name.
    pub fn dir_and_name(&self) -> (Option<&'static str>, String) {
        match self {
            FileKey::Cell => (None, CELL_FILE.to_string()),
            FileKey::Reservations => (None, RESERVATIONS_FILE.to_string()),
            FileKey::Agent(id) => (Some(AGENTS_DIR), format!("{id}{DOC_SUFFIX}")),
            FileKey::Task(id) => (Some(TASKS_DIR), format!("{id}{DOC_SUFFIX}")),
            FileKey::Config(c) => (Some(CONFIG_DIR), c.file_name().to_string()),
        }
    }

    /// The largest file of this kind pas reads.
    pub fn size_limit(&self) -> u64 {
        match self {
            FileKey::Reservations => RESERVATIONS_LIMIT,
            _ => DOC_LIMIT,
        }
    }

    /// The path relative to the cell directory, for messages and listings.
    pub fn relative(&self) -> String {
        match self.dir_and_name() {
            (Some(dir), name) => format!("{dir}/{name}"),
            (None, name) => name,
        }
    }

    /// Which schema the document must follow.
    pub fn schema(&self) -> crate::store::schema::SchemaKind {
        use crate::store::schema::SchemaKind;
        match self {
            FileKey::Cell => SchemaKind::Cell,
            FileKey::Agent(_) => SchemaKind::Agent,
            FileKey::Task(_) => SchemaKind::Task,
            FileKey::Config(ConfigFile::Isolation) => SchemaKind::Isolation,
            FileKey::Config(ConfigFile::Policies) => SchemaKind::Policies,
            FileKey::Config(ConfigFile::Permissions) => SchemaKind::Permissions,
            FileKey::Reservations => SchemaKind::Reservations,
        }
    }
}

/// A collection of per-id documents in a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// `agents/*.json`
    Agents,
    /// `tasks/*.json`
    Tasks,
}

impl Collection {
    /// The directory name.
    pub fn dir(self) -> &'static str {
        match self {
            Collection::Agents => AGENTS_DIR,
            Collection::Tasks => TASKS_DIR,
        }
    }
}

/// An append-only log of a cell, under `logs/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFile<'a> {
    /// `logs/events.jsonl`: one JSON event per line, hash-chained.
    Events,
    /// `logs/mission.log`: the same events as human lines.
    Mission,
    /// `logs/<agent>.log`: an agent's stdout and stderr, each line stamped by its
    /// supervisor.
    Agent(&'a str),
    /// `logs/<agent>.log.<n>`: an older part of an agent's log, moved aside when the
    /// current file reached `log_max_bytes`; a higher `n` is newer.
    AgentRotated(&'a str, u64),
}

impl LogFile<'_> {
    /// The agent whose log this is, if it is one.
    pub fn agent(&self) -> Option<&str> {
        match self {
            LogFile::Agent(id) | LogFile::AgentRotated(id, _) => Some(id),
            LogFile::Events | LogFile::Mission => None,
        }
    }

    /// The file name under `logs/`.
    pub fn file_name(&self) -> String {
        match self {
            LogFile::Events => EVENTS_LOG.to_string(),
            LogFile::Mission => "mission.log".to_string(),
            LogFile::Agent(id) => format!("{id}.log"),
            LogFile::AgentRotated(id, n) => format!("{id}.log.{n}"),
        }
    }
}

/// An operation that runs alone in its cell, for longer than a transaction: documents are
/// changed by transactions (under the cell lock, inside the store); these name work that
/// must not run twice at once.
///
/// Order: `Revive`, then `Checkpoint`, then (inside the store) the cell lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKey<'a> {
    /// Revival decisions of a cell: held for a whole revive pass over the cell, so two
    /// revivers never restart one agent twice.
    Revive,
    /// Saving one agent's checkpoints (one generation number at a time).
    Checkpoint(&'a str),
}

impl LockKey<'_> {
    /// The lock file's name under `.pas/locks/`.
    pub fn file_name(&self) -> String {
        match self {
            LockKey::Revive => "revive.lock".to_string(),
            LockKey::Checkpoint(id) => format!("checkpoint.{id}.lock"),
        }
    }
}

/// What kind of thing an id names, for error messages.
#[derive(Debug, Clone, Copy)]
pub enum IdKind {
    /// A cell id (its directory name).
    Cell,
    /// An agent id.
    Agent,
    /// A task id.
    Task,
    /// A job (reservation) id.
    Job,
}

impl IdKind {
    fn noun(self) -> &'static str {
        match self {
            IdKind::Cell => "cell",
            IdKind::Agent => "agent",
            IdKind::Task => "task",
            IdKind::Job => "job",
        }
    }
}

/// Whether `id` is acceptable as a file or directory name, without building an error.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with(['-', '.'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The id of the per-id document named `name` (`<id>.json`), when `name` is one: temporary
/// files (`.<id>.json.<pid>.<n>.tmp`) and stray names are not.
pub fn doc_id(name: &str) -> Option<&str> {
    name.strip_suffix(DOC_SUFFIX).filter(|id| is_valid_id(id))
}

/// Refuses any id that could not safely become a path component.
pub fn check_id(kind: IdKind, id: &str) -> Result<()> {
    if is_valid_id(id) {
        return Ok(());
    }
    let noun = kind.noun();
    let why = if id.is_empty() {
        "it is empty".to_string()
    } else if id.len() > MAX_ID_LEN {
        format!("it is {} characters long (at most {MAX_ID_LEN})", id.len())
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "it has characters other than letters, digits, '.', '_' and '-'".to_string()
    } else {
        "it starts with '-' or '.'".to_string()
    };
    Err(Error::usage(format!("invalid {noun} id {id:?}: {why}"))
        .hint("ids are 1-128 characters of [A-Za-z0-9._-], not starting with '-' or '.'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_files_with_environment_values_are_private() {
        let cases: [(&str, &[u8], u32); 7] = [
            ("no env", br#"{"agent_id": "a1"}"#, 0o644),
            ("an empty env", br#"{"agent_id": "a1", "env": {}}"#, 0o644),
            ("an empty env, spaced", b"{\"env\" :\n {\n }}", 0o644),
            ("a value", br#"{"env": {"TOKEN": "x"}}"#, 0o600),
            (
                "a value after an empty nested env",
                br#"{"m": {"env": {}}, "env": {"A": "b"}}"#,
                0o600,
            ),
            (
                "env as a string value",
                br#"{"note": "env", "x": 1}"#,
                0o644,
            ),
            (
                "a nested non-empty env errs private",
                br#"{"metadata": {"env": {"a": 1}}}"#,
                0o600,
            ),
        ];
        for (why, bytes, want) in cases {
            assert_eq!(doc_mode(FileKey::Agent("a1"), bytes), want, "{why}");
        }
        assert_eq!(
            doc_mode(FileKey::Task("t1"), br#"{"env": {"A": "b"}}"#),
            0o644
        );
    }

    #[test]
    fn accepts_plain_ids() {
        for id in ["agent_001", "a", "A.b-c_d", "0", &"x".repeat(128)] {
            assert!(is_valid_id(id), "{id}");
        }
    }

    #[test]
    fn refuses_path_like_and_odd_ids() {
        for id in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "-flag",
            "a b",
            "é",
            "a\0b",
            &"x".repeat(129),
            "..",
        ] {
            assert!(!is_valid_id(id), "{id:?}");
            assert!(check_id(IdKind::Agent, id).is_err());
        }
    }

    #[test]
    fn doc_ids_come_from_document_names_only() {
        assert_eq!(doc_id("agent_1.json"), Some("agent_1"));
        assert_eq!(doc_id("a.b.json"), Some("a.b"));
        for name in [
            ".agent_1.json.12.0.tmp",
            "agent_1.json.tmp",
            "notes.txt",
            ".json",
            "-x.json",
        ] {
            assert_eq!(doc_id(name), None, "{name}");
        }
    }
}
