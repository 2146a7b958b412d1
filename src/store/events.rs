//! The events log: `logs/events.jsonl`, one JSON object per line, hash-chained.
//!
//! Each line carries `seq` (one more than the line before) and `prev`, the sha256 of the
//! line before it as written (the first line has 64 zeros), so an edited, removed or
//! reordered line breaks the chain at a place `pas events verify` can name. Appends hold the
//! cell's events lock; a torn last line left by a killed writer is skipped by readers and
//! cut off by the next writer. Every event is also written as a human line to
//! `logs/mission.log`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::clock;
use crate::error::Result;
use crate::model::EventKind;
use crate::store::{LogFile, Store};

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How loud an event is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Routine: created, recovered, claimed.
    Info,
    /// Needs a look: late, a failure, a warning threshold.
    Warn,
    /// Broken: down, dead, failed for good, a breach.
    Error,
}

impl Level {
    /// The spelling in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// An event as it is stored (one line of `events.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log, from 1.
    #[serde(default)]
    pub seq: u64,
    /// When it happened (RFC 3339 UTC).
    pub time: String,
    /// How loud.
    pub level: Level,
    /// What happened, dotted: `agent.late`, `cell.status`, ...
    pub kind: String,
    /// The agent concerned, if any.
    #[serde(default)]
    pub agent: Option<String>,
    /// The task concerned, if any.
    #[serde(default)]
    pub task: Option<String>,
    /// One human sentence.
    pub message: String,
    /// Anything else, for scripts.
    #[serde(default)]
    pub details: Value,
    /// sha256 of the previous line.
    #[serde(default)]
    pub prev: String,
}

/// An event about to be recorded.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// How loud.
    pub level: Level,
    /// What happened.
    pub kind: EventKind,
    /// The agent concerned.
    pub agent: Option<String>,
    /// The task concerned.
    pub task: Option<String>,
    /// One human sentence.
    pub message: String,
    /// Anything else.
    pub details: Value,
}

impl NewEvent {
    /// An event with no agent, task or details.
    pub fn new(level: Level, kind: EventKind, message: impl Into<String>) -> NewEvent {
        NewEvent {
            level,
            kind,
            agent: None,
            task: None,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// Names the agent concerned.
    pub fn agent(mut self, agent: &str) -> NewEvent {
        self.agent = Some(agent.to_string());
        self
    }

    /// Names the task concerned.
    pub fn task(mut self, task: &str) -> NewEvent {
        self.task = Some(task.to_string());
        self
    }

    /// Adds details for scripts.
    pub fn details(mut self, details: Value) -> NewEvent {
        self.details = details;
        self
    }
}

/// sha256 of a line, hex.
pub fn hash_line(line: &[u8]) -> String {
    let digest = Sha256::digest(line);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The head of a cell's chain as pas last left it: kept outside the log
/// (`.pas/events-head.json`) and rewritten after every append, so a log cut at its end,
/// emptied, or with its last events edited or replaced no longer matches it. Lines past the
/// head that continue the chain are an append whose head update was lost (a writer killed
/// between the two); the next writer takes them in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The last event's sequence number (0: no event yet).
    pub seq: u64,
    /// sha256 of the last event's line ([`GENESIS`] when none).
    pub hash: String,
    /// The log's length in bytes just after that line's newline.
    pub size: u64,
}

/// How far the cell's `on_event` hooks have got in its log (`.pas/hooks.json`): the last
/// event they looked at, and the byte just after its line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The `seq` of the last event looked at (0: none).
    pub seq: u64,
    /// The log's length just after that event's line.
    pub offset: u64,
}

/// What a writer may do with a log, judged against its [`Head`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Chain onto `last` (the last complete line), after cutting the log to `keep` bytes
    /// (dropping a torn line past the head: an append that never completed).
    Append {
        /// The last complete line, without its newline.
        last: Option<Vec<u8>>,
        /// The length the log must have before the append.
        keep: u64,
    },
    /// The log no longer ends where pas left it: why, in one sentence.
    Tampered(String),
}

/// Judges the end of a log against its head. `window` holds the log's bytes from offset
/// `start` to its end, and must begin at or before the start of the head's line.
pub fn judge_tail(window: &[u8], start: u64, head: &Head) -> Tail {
    let len = start + window.len() as u64;
    if len < head.size || start > head.size {
        return Tail::Tampered(format!(
            "the log is {len} bytes but pas left it at {} bytes, ending with seq {}: events were removed or the log was cut",
            head.size, head.seq
        ));
    }
    let split = (head.size - start) as usize;
    let (anchored, rest) = window.split_at(split);
    let mut last: Option<Vec<u8>> = None;
    let mut prev_hash = GENESIS.to_string();
    let mut prev_seq = 0;
    if head.size > 0 {
        let line =
            anchored
                .strip_suffix(b"\n")
                .map(|body| match body.iter().rposition(|b| *b == b'\n') {
                    Some(i) => &body[i + 1..],
                    None => body,
                });
        match line {
            Some(line) if hash_line(line) == head.hash => {
                last = Some(line.to_vec());
                prev_hash = head.hash.clone();
                prev_seq = head.seq;
            }
            _ => {
                return Tail::Tampered(format!(
                    "the line where pas left seq {} was changed or replaced",
                    head.seq
                ))
            }
        }
    }
    let (lines, torn) = split_lines(rest);
    for line in lines {
        let event: Option<Event> = serde_json::from_slice(line).ok();
        match event {
            Some(e) if e.seq == prev_seq + 1 && e.prev == prev_hash => {
                prev_hash = hash_line(line);
                prev_seq = e.seq;
                last = Some(line.to_vec());
            }
            _ => {
                return Tail::Tampered(format!(
                    "the lines after seq {prev_seq} do not continue the chain pas wrote: they were added by something else"
                ))
            }
        }
    }
    Tail::Append {
        last,
        keep: len - torn as u64,
    }
}

/// The head after `lines` were appended to a log of `size_before` bytes whose head was
/// `previous` (the lines carry their own seq).
pub fn head_after(lines: &[String], size_before: u64, previous: Head) -> Head {
    match lines.last() {
        None => previous,
        Some(last) => Head {
            seq: serde_json::from_str::<Value>(last)
                .ok()
                .and_then(|v| v.get("seq").and_then(Value::as_u64))
                .unwrap_or(previous.seq),
            hash: hash_line(last.as_bytes()),
            size: size_before + lines.iter().map(|l| l.len() as u64 + 1).sum::<u64>(),
        },
    }
}

/// The stored lines for `events`, chained onto `last` (the log's last complete line).
pub fn chain(events: &[NewEvent], last: Option<&[u8]>, now: DateTime<Utc>) -> Vec<String> {
    let mut prev_hash = last.map_or_else(|| GENESIS.to_string(), hash_line);
    let last_seq = last
        .and_then(|l| serde_json::from_slice::<Value>(l).ok())
        .and_then(|v| v.get("seq").and_then(Value::as_u64))
        .unwrap_or(0);
    let mut lines = Vec::with_capacity(events.len());
    for (e, seq) in events.iter().zip(last_seq + 1..) {
        let stored = Event {
            seq,
            time: clock::stamp(now),
            level: e.level,
            kind: e.kind.as_str().to_string(),
            agent: e.agent.clone(),
            task: e.task.clone(),
            message: e.message.clone(),
            details: e.details.clone(),
            prev: prev_hash.clone(),
        };
        // Serialising plain data cannot fail.
        let line = serde_json::to_string(&stored).unwrap_or_default();
        prev_hash = hash_line(line.as_bytes());
        lines.push(line);
    }
    lines
}

/// The human line of an event for `logs/mission.log`.
pub fn human_line(e: &Event) -> String {
    let mut subject = String::new();
    if let Some(agent) = &e.agent {
        subject.push_str(&format!(" agent={agent}"));
    }
    if let Some(task) = &e.task {
        subject.push_str(&format!(" task={task}"));
    }
    format!(
        "{} {:<5} {}{}: {}",
        e.time,
        e.level.as_str().to_uppercase(),
        e.kind,
        subject,
        e.message
    )
}

/// Records events in a cell's logs (no-op for an empty list).
pub fn record(
    store: &dyn Store,
    cell: &str,
    events: &[NewEvent],
    now: DateTime<Utc>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    store.transact(cell, now, &mut |txn| {
        for e in events {
            txn.event(e.clone());
        }
        Ok(())
    })
}

/// Records one event.
pub fn record_one(
    store: &dyn Store,
    cell: &str,
    event: NewEvent,
    now: DateTime<Utc>,
) -> Result<()> {
    record(store, cell, &[event], now)
}

/// The complete lines of a log chunk; a trailing piece without a newline (a torn or
/// still-being-written line) is left for later and its length returned.
pub fn split_lines(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            lines.push(&bytes[start..i]);
            start = i + 1;
        }
    }
    (lines, bytes.len() - start)
}

/// Parses the complete lines of a log; lines that do not parse are skipped.
pub fn parse_all(bytes: &[u8]) -> Vec<Event> {
    split_lines(bytes)
        .0
        .into_iter()
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

/// The complete events appended to a cell's log from byte `offset` on, and the offset to
/// read from next time (a torn or half-written last line is left for then).
pub fn read_new(store: &dyn Store, cell: &str, offset: u64) -> Result<(Vec<Event>, u64)> {
    let bytes = store.read_log(cell, LogFile::Events, offset)?;
    let (_, torn) = split_lines(&bytes);
    let events = parse_all(&bytes);
    Ok((events, offset + (bytes.len() - torn) as u64))
}

/// What `pas events` shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events at least this loud.
    pub level: Option<Level>,
    /// Only events about this agent.
    pub agent: Option<String>,
    /// Only events of this kind (or kind prefix ending in `.`, like `agent.`).
    pub kind: Option<String>,
}

impl Filter {
    /// Whether an event passes.
    pub fn matches(&self, e: &Event) -> bool {
        if let Some(since) = self.since {
            match clock::parse(&e.time) {
                Some(t) if t >= since => {}
                _ => return false,
            }
        }
        if self.level.is_some_and(|l| e.level < l) {
            return false;
        }
        if let Some(agent) = &self.agent {
            if e.agent.as_deref() != Some(agent.as_str()) {
                return false;
            }
        }
        if let Some(kind) = &self.kind {
            let prefix = kind.ends_with('.') && e.kind.starts_with(kind.as_str());
            if !prefix && &e.kind != kind {
                return false;
            }
        }
        true
    }
}

/// The first problem of a chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Break {
    /// The line number (from 1) where the chain breaks.
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

/// The result of checking a log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    /// Complete lines checked.
    pub lines: usize,
    /// The first broken or missing link, if any.
    pub first_break: Option<Break>,
    /// A torn last line (a writer killed mid-append); readers skip it, it is no break.
    pub torn_tail: bool,
    /// Complete lines past the recorded head that continue the chain: an append whose head
    /// update was lost, taken in by the next writer (or lines added by something else that
    /// recomputed the hashes; no chain without a secret can tell).
    pub past_head: usize,
}

/// Checks the hash chain of a log's bytes and, when pas recorded one, that the log still
/// ends where pas left it ([`Head`]): a cut, emptied or edited end is a break naming the
/// first sequence number that is missing or different.
pub fn verify_against(bytes: &[u8], head: Option<&Head>) -> Verification {
    let mut v = verify(bytes);
    let Some(head) = head else {
        return v;
    };
    if v.first_break.is_some() {
        return v;
    }
    let (lines, _) = split_lines(bytes);
    if head.size == 0 {
        v.past_head = lines.len();
        return v;
    }
    let mut end = 0u64;
    let mut at = None;
    for (i, line) in lines.iter().enumerate() {
        end += line.len() as u64 + 1;
        if end >= head.size {
            at = (end == head.size).then_some(i);
            break;
        }
    }
    if let Some(i) = at.filter(|i| hash_line(lines[*i]) == head.hash) {
        v.past_head = lines.len() - i - 1;
        return v;
    }
    let last_seq = lines
        .last()
        .and_then(|l| serde_json::from_slice::<Value>(l).ok())
        .and_then(|e| e.get("seq").and_then(Value::as_u64))
        .unwrap_or(0);
    let reason = if last_seq < head.seq {
        format!(
            "seq {} to {} are missing: the log ends at seq {last_seq}, but pas wrote up to seq {} (the end was cut or removed)",
            last_seq + 1,
            head.seq,
            head.seq
        )
    } else {
        format!(
            "seq {} is not the event pas wrote there: the end of the log was changed",
            head.seq
        )
    };
    v.first_break = Some(Break {
        line: lines
            .len()
            .min(usize::try_from(head.seq).unwrap_or(usize::MAX)),
        reason,
    });
    v
}

/// Checks the hash chain of a log's bytes.
pub fn verify(bytes: &[u8]) -> Verification {
    let (lines, torn) = split_lines(bytes);
    let mut prev_hash = GENESIS.to_string();
    let mut prev_seq = 0u64;
    let mut first_break = None;
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let event: Event = match serde_json::from_slice(line) {
            Ok(e) => e,
            Err(e) => {
                first_break = Some(Break {
                    line: n,
                    reason: format!("line {n} is not an event: {e}"),
                });
                break;
            }
        };
        if event.prev != prev_hash {
            let reason = if event.seq > prev_seq + 1 {
                format!(
                    "line {n} (seq {}) follows seq {prev_seq}: {} line(s) missing before it",
                    event.seq,
                    event.seq - prev_seq - 1
                )
            } else {
                format!("line {n} (seq {}) does not carry the hash of the line before it: that line or this one was changed", event.seq)
            };
            first_break = Some(Break { line: n, reason });
            break;
        }
        if event.seq != prev_seq + 1 {
            first_break = Some(Break {
                line: n,
                reason: format!(
                    "line {n} has seq {} where {} was expected",
                    event.seq,
                    prev_seq + 1
                ),
            });
            break;
        }
        prev_hash = hash_line(line);
        prev_seq = event.seq;
    }
    Verification {
        lines: lines.len(),
        first_break,
        torn_tail: torn > 0,
        past_head: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: usize) -> String {
        let now = clock::parse("2026-11-23T10:00:00Z").unwrap();
        let mut text = String::new();
        let mut last: Option<String> = None;
        for i in 0..n {
            let e = NewEvent::new(Level::Info, EventKind::CellStatus, format!("event {i}"));
            let line = chain(&[e], last.as_deref().map(str::as_bytes), now).remove(0);
            text.push_str(&line);
            text.push('\n');
            last = Some(line);
        }
        text
    }

    /// The head pas records after writing the first `n` lines of `text`.
    fn head_of(text: &str, n: usize) -> Head {
        let lines: Vec<String> = text.lines().take(n).map(str::to_string).collect();
        let genesis = Head {
            seq: 0,
            hash: GENESIS.to_string(),
            size: 0,
        };
        head_after(&lines, 0, genesis)
    }

    #[test]
    fn a_writer_judges_the_end_of_the_log_against_its_head() {
        let full = log(3);
        let lines: Vec<&str> = full.lines().collect();
        let two = format!("{}\n{}\n", lines[0], lines[1]);
        let forged_copy = format!("{full}{}\n", lines[1]);
        let edited_last = full.replacen("event 2", "event Z", 1);
        let torn = format!("{full}{{\"seq\": 4, \"ti");
        // (why, log, head after how many lines, expected: Ok(last line, keep) or Err(needle))
        type Want = Result<(Option<usize>, usize), &'static str>;
        let cases: [(&str, &str, usize, Want); 8] = [
            ("at its head", &full, 3, Ok((Some(2), full.len()))),
            ("empty and new", "", 0, Ok((None, 0))),
            (
                "a torn append past the head is cut",
                &torn,
                3,
                Ok((Some(2), full.len())),
            ),
            (
                "a lost head update: the chained line is taken in",
                &full,
                2,
                Ok((Some(2), full.len())),
            ),
            (
                "the last line removed",
                &two,
                3,
                Err("events were removed or the log was cut"),
            ),
            (
                "emptied",
                "",
                3,
                Err("events were removed or the log was cut"),
            ),
            (
                "the last line edited",
                &edited_last,
                3,
                Err("was changed or replaced"),
            ),
            (
                "a copy of an earlier event appended",
                &forged_copy,
                3,
                Err("added by something else"),
            ),
        ];
        for (why, text, n, want) in cases {
            let head = head_of(&full, n);
            let got = judge_tail(text.as_bytes(), 0, &head);
            match (want, got) {
                (
                    Ok((last, keep)),
                    Tail::Append {
                        last: got_last,
                        keep: got_keep,
                    },
                ) => {
                    let want_last = last.map(|i| lines[i].as_bytes().to_vec());
                    assert_eq!(got_last, want_last, "{why}: last line");
                    assert_eq!(got_keep, keep as u64, "{why}: keep");
                }
                (Err(needle), Tail::Tampered(reason)) => {
                    assert!(reason.contains(needle), "{why}: {reason}");
                }
                (want, got) => panic!("{why}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn a_window_that_starts_mid_log_is_judged_the_same() {
        let full = log(5);
        let head = head_of(&full, 5);
        let start = full.lines().take(3).map(|l| l.len() + 1).sum::<usize>();
        let got = judge_tail(&full.as_bytes()[start..], start as u64, &head);
        assert_eq!(
            got,
            Tail::Append {
                last: full.lines().last().map(|l| l.as_bytes().to_vec()),
                keep: full.len() as u64
            }
        );
    }

    #[test]
    fn verify_names_the_first_missing_or_changed_seq_at_the_end() {
        let full = log(4);
        let head = head_of(&full, 4);
        let lines: Vec<&str> = full.lines().collect();
        let cut_two = format!("{}\n{}\n", lines[0], lines[1]);
        let cut_mid = &full[..full.len() - 10];
        let edited_last = full.replacen("event 3", "event Z", 1);
        // (why, log, Some(needle) for a break, or None and how many lines past the head)
        let cases: [(&str, &str, Option<&str>); 5] = [
            ("intact", &full, None),
            (
                "the last two removed",
                &cut_two,
                Some("seq 3 to 4 are missing"),
            ),
            (
                "truncated mid-line",
                cut_mid,
                Some("seq 4 to 4 are missing"),
            ),
            ("emptied", "", Some("seq 1 to 4 are missing")),
            (
                "the last line edited",
                &edited_last,
                Some("seq 4 is not the event pas wrote"),
            ),
        ];
        for (why, text, needle) in cases {
            let v = verify_against(text.as_bytes(), Some(&head));
            match needle {
                None => assert_eq!(v.first_break, None, "{why}"),
                Some(needle) => {
                    let b = v.first_break.unwrap_or_else(|| panic!("{why}: no break"));
                    assert!(b.reason.contains(needle), "{why}: {}", b.reason);
                }
            }
        }
        let past = verify_against(full.as_bytes(), Some(&head_of(&full, 2)));
        assert_eq!((past.first_break, past.past_head), (None, 2));
    }

    #[test]
    fn an_intact_chain_verifies() {
        let v = verify(log(5).as_bytes());
        assert_eq!(v.lines, 5);
        assert_eq!(v.first_break, None);
        assert!(!v.torn_tail);
    }

    #[test]
    fn an_edited_line_breaks_the_next_link() {
        let text = log(5).replacen("event 2", "event X", 1);
        let v = verify(text.as_bytes());
        assert_eq!(v.first_break.unwrap().line, 4);
    }

    #[test]
    fn a_removed_line_is_named_as_missing() {
        let text = log(5);
        let lines: Vec<&str> = text.lines().collect();
        let cut = [lines[0], lines[1], lines[3], lines[4]].join("\n") + "\n";
        let b = verify(cut.as_bytes()).first_break.unwrap();
        assert_eq!(b.line, 3);
        assert!(b.reason.contains("1 line(s) missing"), "{}", b.reason);
    }

    #[test]
    fn a_torn_tail_is_not_a_break() {
        let mut text = log(3);
        text.push_str("{\"seq\":4,\"ti");
        let v = verify(text.as_bytes());
        assert_eq!(v.lines, 3);
        assert!(v.first_break.is_none());
        assert!(v.torn_tail);
        assert_eq!(parse_all(text.as_bytes()).len(), 3);
    }

    #[test]
    fn filters_by_level_agent_and_kind_prefix() {
        let e = Event {
            seq: 1,
            time: "2026-11-23T10:00:00Z".into(),
            level: Level::Warn,
            kind: "agent.late".into(),
            agent: Some("a1".into()),
            task: None,
            message: "m".into(),
            details: Value::Null,
            prev: GENESIS.into(),
        };
        assert!(Filter {
            level: Some(Level::Warn),
            ..Default::default()
        }
        .matches(&e));
        assert!(!Filter {
            level: Some(Level::Error),
            ..Default::default()
        }
        .matches(&e));
        assert!(Filter {
            kind: Some("agent.".into()),
            ..Default::default()
        }
        .matches(&e));
        assert!(!Filter {
            kind: Some("agent".into()),
            ..Default::default()
        }
        .matches(&e));
        assert!(!Filter {
            agent: Some("a2".into()),
            ..Default::default()
        }
        .matches(&e));
        let since = clock::parse("2026-11-23T10:00:01Z");
        assert!(!Filter {
            since,
            ..Default::default()
        }
        .matches(&e));
    }
}
