//! Agents' logs, journalctl style: each line stamped, a marker at each start and end of a
//! run, rotation by size, and reading them back merged, filtered and followed.
//!
//! The supervisor reads the agent's stdout and stderr (one pipe) and writes each line as
//! `<RFC 3339 time> | <text>`; its own markers are `<time> = run <n> started (pid <p>):
//! <command>`, `<time> = run <n> exited (pid <p>): <how>`, and notes such as lost output as
//! `<time> = <text>`. The agent cannot forge a marker: its text always follows `| `. Lines
//! in another form (a log from before pas stamped lines) are shown as they are, without a
//! time. When the file would grow past `log_max_bytes`, the store moves it aside
//! ([`Store::rotate_log`]) and the supervisor goes on in a fresh one.

use std::collections::VecDeque;
use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::clock;
use crate::error::{Error, Result};
use crate::ops::policy::Policy;
use crate::store::Store;

/// The longest line kept whole; a longer one is cut into pieces of this size, each stamped.
pub const LINE_MAX: usize = 16 * 1024;

/// How much of a log file is read at once.
const CHUNK: usize = 1 << 20;

/// What a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// The agent's output.
    Output,
    /// The marker of a run's start.
    Started,
    /// The marker of a run's end.
    Exited,
    /// Something the supervisor noted (output lost, a command that could not run).
    Note,
    /// The first line of a file the log was rotated into, naming the run it goes on
    /// with; read, never shown.
    Continued,
}

/// One line of an agent's log, read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    /// When it was written; `None` for a line in an older form.
    #[serde(serialize_with = "serialize_time")]
    pub time: Option<DateTime<Utc>>,
    /// The agent.
    pub agent: String,
    /// The run it belongs to (the number its start marker gave); `None` before the first
    /// start marker still in the log.
    pub run: Option<u64>,
    /// What it is.
    pub kind: LineKind,
    /// The text: the agent's output, or the marker without its time.
    pub text: String,
}

fn serialize_time<S: serde::Serializer>(
    time: &Option<DateTime<Utc>>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match time {
        Some(t) => s.serialize_str(&clock::stamp(*t)),
        None => s.serialize_none(),
    }
}

/// Parses one stored line (without its newline); `run` is the run of the lines before it.
fn parse_line(raw: &[u8], agent: &str, run: Option<u64>) -> LogLine {
    let text = String::from_utf8_lossy(raw);
    let text = text.strip_suffix('\r').unwrap_or(&text);
    let unstamped = || LogLine {
        time: None,
        agent: agent.to_string(),
        run,
        kind: LineKind::Output,
        text: text.to_string(),
    };
    let Some((stamp, rest)) = text.split_once(' ') else {
        return unstamped();
    };
    let Some(time) = clock::parse(stamp) else {
        return unstamped();
    };
    let line = |kind, run, text: &str| LogLine {
        time: Some(time),
        agent: agent.to_string(),
        run,
        kind,
        text: text.to_string(),
    };
    if rest == "|" {
        return line(LineKind::Output, run, "");
    }
    if let Some(output) = rest.strip_prefix("| ") {
        return line(LineKind::Output, run, output);
    }
    let Some(marker) = rest.strip_prefix("= ") else {
        return unstamped();
    };
    let numbered = marker.strip_prefix("run ").and_then(|r| {
        let (n, after) = r.split_once(' ')?;
        Some((n.parse::<u64>().ok()?, after))
    });
    match numbered {
        Some((n, after)) if after.starts_with("started") => {
            line(LineKind::Started, Some(n), marker)
        }
        Some((n, after)) if after.starts_with("exited") => line(LineKind::Exited, Some(n), marker),
        Some((n, after)) if after.starts_with("continues") => {
            line(LineKind::Continued, Some(n), marker)
        }
        _ => line(LineKind::Note, run, marker),
    }
}

/// Cuts a byte stream into lines: whole lines as they complete, a line longer than
/// [`LINE_MAX`] in pieces, and what is left at the end by [`LineSplitter::finish`].
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Takes the next bytes, handing each line completed by them (without its newline)
    /// to `emit`.
    pub fn feed(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(&[u8])) {
        while !bytes.is_empty() {
            let room = LINE_MAX - self.partial.len();
            let window = &bytes[..bytes.len().min(room)];
            match window.iter().position(|b| *b == b'\n') {
                Some(at) => {
                    if self.partial.is_empty() {
                        emit(&window[..at]);
                    } else {
                        self.partial.extend_from_slice(&window[..at]);
                        emit(&self.partial);
                        self.partial.clear();
                    }
                    bytes = &bytes[at + 1..];
                }
                None if window.len() == room => {
                    self.partial.extend_from_slice(window);
                    emit(&self.partial);
                    self.partial.clear();
                    bytes = &bytes[room..];
                }
                None => {
                    self.partial.extend_from_slice(window);
                    bytes = &[];
                }
            }
        }
    }

    /// Hands the unfinished last line, if any, to `emit`.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial.clear();
        }
    }
}

/// Where a supervisor writes its agent's log: stamps lines, rotates the file by size, and
/// never stops the agent: a line that cannot be written is counted as lost, and the loss
/// is noted in the log once writing works again.
pub struct LogSink<'a> {
    store: &'a (dyn Store + Sync),
    cell: String,
    agent: String,
    file: std::fs::File,
    len: u64,
    max: u64,
    keep: usize,
    lost: u64,
    lost_why: String,
    run: Option<(u64, i32)>,
}

impl<'a> LogSink<'a> {
    /// A sink writing to `file`, the agent's current log, `len` bytes long, rotated by
    /// `policy`'s `log_max_bytes` and `log_keep`.
    pub fn new(
        store: &'a (dyn Store + Sync),
        cell: &str,
        agent: &str,
        file: std::fs::File,
        len: u64,
        policy: &Policy,
    ) -> LogSink<'a> {
        LogSink {
            store,
            cell: cell.to_string(),
            agent: agent.to_string(),
            file,
            len,
            max: policy.log_max_bytes(),
            keep: policy.log_keep(),
            lost: 0,
            lost_why: String::new(),
            run: None,
        }
    }

    /// Marks the start of run `run` of the agent, process `pid`, running `command`: every
    /// file the log is rotated into from now on starts by naming the run, so its lines
    /// keep their run when the start marker itself is long gone.
    pub fn start_run(&mut self, run: u64, pid: i32, command: &str, now: DateTime<Utc>) {
        self.run = Some((run, pid));
        self.marker(&format!("run {run} started (pid {pid}): {command}"), now);
    }

    /// Writes a line of the agent's output, stamped `now`.
    pub fn output(&mut self, line: &[u8], now: DateTime<Utc>) {
        let mut bytes = Vec::with_capacity(line.len() + 32);
        bytes.extend_from_slice(clock::stamp(now).as_bytes());
        bytes.extend_from_slice(b" | ");
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
        self.write(bytes, now);
    }

    /// Writes a marker of the supervisor's own, stamped `now`.
    pub fn marker(&mut self, text: &str, now: DateTime<Utc>) {
        let line = format!("{} = {}\n", clock::stamp(now), text.replace('\n', " "));
        self.write(line.into_bytes(), now);
    }

    fn write(&mut self, bytes: Vec<u8>, now: DateTime<Utc>) {
        if self.lost > 0 {
            let note = format!(
                "{} = {} bytes of output lost: cannot write the log: {}\n",
                clock::stamp(now),
                self.lost,
                self.lost_why
            );
            if self.append(note.as_bytes(), now).is_ok() {
                self.lost = 0;
            }
        }
        if self.lost > 0 || self.append(&bytes, now).is_err() {
            self.lost += bytes.len() as u64;
        }
    }

    fn append(&mut self, bytes: &[u8], now: DateTime<Utc>) -> std::io::Result<()> {
        if self.max > 0 && self.len > 0 && self.len + bytes.len() as u64 > self.max {
            match self.store.rotate_log(&self.cell, &self.agent, self.keep) {
                Ok(file) => {
                    self.file = file;
                    if let Some((run, pid)) = self.run {
                        let head =
                            format!("{} = run {run} continues (pid {pid})\n", clock::stamp(now));
                        if self.file.write_all(head.as_bytes()).is_ok() {
                            self.len += head.len() as u64;
                        }
                    }
                }
                // Keep writing where it is; try again after another `max` bytes.
                Err(e) => {
                    let _ = self.file.write_all(
                        format!(
                            "{} = cannot rotate the log: {}\n",
                            clock::stamp(now),
                            e.message
                        )
                        .as_bytes(),
                    );
                }
            }
            self.len = 0;
        }
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.lost_why = e.to_string();
                Err(e)
            }
        }
    }
}

/// A reader's place in one agent's log: which file and how far, so reading goes on from
/// there after the supervisor rotated the file.
#[derive(Debug, Clone)]
pub struct Cursor {
    agent: String,
    at: Option<((u64, u64), u64)>,
    partial: Vec<u8>,
    run: Option<u64>,
}

impl Cursor {
    /// A cursor at the start of the oldest file of `agent`'s log.
    pub fn new(agent: &str) -> Cursor {
        Cursor {
            agent: agent.to_string(),
            at: None,
            partial: Vec::new(),
            run: None,
        }
    }

    /// The agent whose log this is.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// Reads the next piece of the log: the complete lines in it, and whether more is
    /// there to read already. A line still being written stays for the next read.
    pub fn read(&mut self, store: &dyn Store, cell: &str) -> Result<(Vec<LogLine>, bool)> {
        let segments = store.log_segments(cell, &self.agent)?;
        if segments.is_empty() {
            return Ok((Vec::new(), false));
        }
        let (i, offset) = match self.at {
            None => (0, 0),
            // Gone: pruned by rotations that outran the reader; all that is left is newer.
            Some((id, offset)) => match segments.iter().position(|s| s.id == id) {
                Some(i) => (i, offset),
                None => (0, 0),
            },
        };
        let segment = &segments[i];
        // A file cut shorter than where the reader was (by hand) is read again from its start.
        let offset = if offset > segment.len { 0 } else { offset };
        if offset >= segment.len && i + 1 < segments.len() {
            // This file is finished: a line cut at its end is a line.
            let mut lines = Vec::new();
            if !self.partial.is_empty() {
                let raw = std::mem::take(&mut self.partial);
                lines.extend(self.parse(&raw));
            }
            self.at = Some((segments[i + 1].id, 0));
            return Ok((lines, true));
        }
        let Some(chunk) = store.read_log_chunk(cell, segment.log(&self.agent), offset, CHUNK)?
        else {
            return Ok((Vec::new(), false));
        };
        if chunk.id != segment.id {
            // Rotated between the listing and the read: the next read sees the new files.
            return Ok((Vec::new(), true));
        }
        let end = offset + chunk.bytes.len() as u64;
        self.at = Some((segment.id, end));
        let mut lines = Vec::new();
        let mut rest: &[u8] = &chunk.bytes;
        while let Some(at) = rest.iter().position(|b| *b == b'\n') {
            if self.partial.is_empty() {
                lines.extend(self.parse(&rest[..at]));
            } else {
                let mut raw = std::mem::take(&mut self.partial);
                raw.extend_from_slice(&rest[..at]);
                lines.extend(self.parse(&raw));
            }
            rest = &rest[at + 1..];
        }
        self.partial.extend_from_slice(rest);
        let more = (end < segment.len && !chunk.bytes.is_empty()) || i + 1 < segments.len();
        Ok((lines, more))
    }

    /// The unfinished last line, as a line (at the end of a read that does not follow).
    pub fn finish(&mut self) -> Option<LogLine> {
        if self.partial.is_empty() {
            return None;
        }
        let raw = std::mem::take(&mut self.partial);
        self.parse(&raw)
    }

    /// A stored line read back; `None` for a line that only says which run goes on.
    fn parse(&mut self, raw: &[u8]) -> Option<LogLine> {
        let line = parse_line(raw, &self.agent, self.run);
        match line.kind {
            LineKind::Started => self.run = line.run,
            LineKind::Continued => {
                self.run = line.run;
                return None;
            }
            LineKind::Output | LineKind::Exited | LineKind::Note => {}
        }
        Some(line)
    }
}

/// Which lines of the logs to show.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only lines written at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only lines of this run.
    pub run: Option<u64>,
    /// Only the last this many lines.
    pub tail: Option<usize>,
}

impl Query {
    /// Whether `line` is shown.
    pub fn matches(&self, line: &LogLine) -> bool {
        self.since
            .is_none_or(|since| line.time.is_some_and(|t| t >= since))
            && self.run.is_none_or(|run| line.run == Some(run))
    }
}

/// The run `--run N` names: N ≥ 1 is that run (as its start marker numbers it); 0 is the
/// latest of the `runs` the agent had, -1 the one before, and so on.
pub fn run_number(wanted: i64, runs: u64) -> Result<u64> {
    let number = if wanted >= 1 {
        wanted.unsigned_abs()
    } else {
        let back = wanted.unsigned_abs();
        if runs == 0 || back >= runs {
            return Err(Error::not_found(format!(
                "there is no run {wanted}: the agent has run {runs} time(s)"
            ))
            .hint("--run 0 is the latest run, -1 the one before; a positive N is run N"));
        }
        runs - back
    };
    Ok(number)
}

/// One agent's log being read, with the lines read ahead of the merge.
struct Stream {
    cursor: Cursor,
    ahead: VecDeque<LogLine>,
    done: bool,
}

impl Stream {
    /// The next line of this log, reading on when none is read ahead.
    fn peek(&mut self, store: &dyn Store, cell: &str) -> Result<Option<&LogLine>> {
        while self.ahead.is_empty() && !self.done {
            let (lines, more) = self.cursor.read(store, cell)?;
            self.ahead.extend(lines);
            if !more {
                self.ahead.extend(self.cursor.finish());
                self.done = true;
            }
        }
        Ok(self.ahead.front())
    }
}

/// Reads the logs of `agents` from their oldest kept line, merged by time, and hands the
/// lines `query` selects to `emit` (with `tail`, only the last that many, at the end).
/// Returns a cursor per agent at the end of its log, for following it.
pub fn read(
    store: &dyn Store,
    cell: &str,
    agents: &[String],
    query: &Query,
    emit: &mut dyn FnMut(&LogLine),
) -> Result<Vec<Cursor>> {
    let mut streams: Vec<Stream> = agents
        .iter()
        .map(|a| Stream {
            cursor: Cursor::new(a),
            ahead: VecDeque::new(),
            done: false,
        })
        .collect();
    let mut tail: VecDeque<LogLine> = VecDeque::new();
    loop {
        // The stream whose next line is the oldest (one without a time goes first: it is
        // from before pas stamped lines).
        let mut oldest: Option<(usize, Option<DateTime<Utc>>)> = None;
        for (i, stream) in streams.iter_mut().enumerate() {
            if let Some(line) = stream.peek(store, cell)? {
                if oldest.is_none_or(|(_, t)| line.time < t) {
                    oldest = Some((i, line.time));
                }
            }
        }
        let Some((i, _)) = oldest else { break };
        let Some(line) = streams[i].ahead.pop_front() else {
            break;
        };
        if !query.matches(&line) {
            continue;
        }
        match query.tail {
            Some(n) => {
                if n > 0 {
                    if tail.len() == n {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
            None => emit(&line),
        }
    }
    for line in &tail {
        emit(line);
    }
    Ok(streams.into_iter().map(|s| s.cursor).collect())
}

/// One round of following: the lines appended to each cursor's log since, in time order.
pub fn follow(
    store: &dyn Store,
    cell: &str,
    cursors: &mut [Cursor],
    query: &Query,
) -> Result<Vec<LogLine>> {
    let mut lines = Vec::new();
    for cursor in cursors.iter_mut() {
        // Bounded, so one chatty agent cannot keep the others waiting.
        for _ in 0..64 {
            let (more_lines, more) = cursor.read(store, cell)?;
            lines.extend(more_lines.into_iter().filter(|l| query.matches(l)));
            if !more {
                break;
            }
        }
    }
    lines.sort_by_key(|l| l.time);
    Ok(lines)
}

/// An agent whose log is on another host: its process runs there, and its supervisor
/// writes the log into that host's root (logs stay on their host, also on etcd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Elsewhere {
    /// The agent.
    pub agent: String,
    /// The host its process runs on (its document's `host`).
    pub host: String,
    /// Its log's path, as under this root (the same path there when that host's root is).
    pub log: String,
}

/// The host an agent's log is on when it is not `here`: its recorded host, unless it
/// records none (the agent never started, or started before pas recorded hosts) or it is
/// this one.
pub fn log_host<'a>(recorded: Option<&'a str>, here: &str) -> Option<&'a str> {
    recorded.filter(|h| !h.is_empty() && *h != here)
}

/// What `pas logs` makes of the logs it found on other hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote<'a> {
    /// Say where each of them is, after the lines shown (none: nothing to say).
    Notes(&'a [Elsewhere]),
    /// The one agent asked for has no line here at all: the command fails, saying where
    /// its log is (a "not found" here, exit 3).
    Missing(&'a Elsewhere),
}

/// Whether logs on other hosts are a note or the command's failure: `named` when one agent
/// was asked for, `shown` the lines printed from here.
pub fn remote(named: bool, shown: usize, elsewhere: &[Elsewhere]) -> Remote<'_> {
    match elsewhere.first() {
        Some(e) if named && shown == 0 => Remote::Missing(e),
        _ => Remote::Notes(elsewhere),
    }
}

/// The agents among `agents` whose logs are on another host than `here`, with where.
pub fn elsewhere(
    store: &dyn Store,
    cell: &str,
    agents: &[String],
    here: &str,
) -> Result<Vec<Elsewhere>> {
    let mut found = Vec::new();
    for agent in agents {
        let Some(doc) = store.read(cell, crate::store::FileKey::Agent(agent))? else {
            continue;
        };
        let recorded = crate::model::Agent::from_doc(&doc)?.host;
        if let Some(host) = log_host(recorded.as_deref(), here) {
            found.push(Elsewhere {
                agent: agent.clone(),
                host: host.to_string(),
                log: store.describe_log(cell, crate::store::LogFile::Agent(agent)),
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_is_elsewhere_only_when_the_agent_records_another_host() {
        let cases = [
            (Some("b"), "a", Some("b")),
            (Some("a"), "a", None),
            (None, "a", None),
            (Some(""), "a", None),
        ];
        for (recorded, here, want) in cases {
            assert_eq!(log_host(recorded, here), want, "{recorded:?} here={here}");
        }
    }

    #[test]
    fn a_log_elsewhere_fails_the_command_only_for_the_one_agent_asked_with_nothing_here() {
        let far = |agent: &str| Elsewhere {
            agent: agent.to_string(),
            host: "far".to_string(),
            log: format!("/m/c/logs/{agent}.log"),
        };
        let one = [far("a1")];
        let two = [far("a1"), far("a2")];
        let none: [Elsewhere; 0] = [];
        // (what, named, lines shown here, elsewhere, verdict)
        let cases: [(&str, bool, usize, &[Elsewhere], Remote<'_>); 6] = [
            (
                "named, nothing here",
                true,
                0,
                &one,
                Remote::Missing(&one[0]),
            ),
            (
                "named, earlier lines here",
                true,
                3,
                &one,
                Remote::Notes(&one),
            ),
            (
                "named, its log is here",
                true,
                0,
                &none,
                Remote::Notes(&none),
            ),
            (
                "the whole cell, nothing here",
                false,
                0,
                &two,
                Remote::Notes(&two),
            ),
            (
                "the whole cell, lines here",
                false,
                5,
                &one,
                Remote::Notes(&one),
            ),
            (
                "the whole cell, all here",
                false,
                5,
                &none,
                Remote::Notes(&none),
            ),
        ];
        for (what, named, shown, elsewhere, want) in cases {
            assert_eq!(remote(named, shown, elsewhere), want, "{what}");
        }
    }

    fn t(text: &str) -> DateTime<Utc> {
        clock::parse(text).unwrap()
    }

    #[test]
    fn stored_lines_read_back_with_their_kind_time_and_run() {
        type Case<'a> = (&'a str, Option<&'a str>, LineKind, Option<u64>, &'a str);
        let cases: [Case; 9] = [
            (
                "2026-01-01T10:00:00Z = run 4 continues (pid 42)",
                Some("2026-01-01T10:00:00Z"),
                LineKind::Continued,
                Some(4),
                "run 4 continues (pid 42)",
            ),
            (
                "2026-01-01T10:00:00.000001Z | hello world",
                Some("2026-01-01T10:00:00.000001Z"),
                LineKind::Output,
                Some(2),
                "hello world",
            ),
            (
                "2026-01-01T10:00:00Z |",
                Some("2026-01-01T10:00:00Z"),
                LineKind::Output,
                Some(2),
                "",
            ),
            (
                "2026-01-01T10:00:00Z = run 3 started (pid 42): ./a.sh",
                Some("2026-01-01T10:00:00Z"),
                LineKind::Started,
                Some(3),
                "run 3 started (pid 42): ./a.sh",
            ),
            (
                "2026-01-01T10:00:00Z = run 3 exited (pid 42): exit code 1",
                Some("2026-01-01T10:00:00Z"),
                LineKind::Exited,
                Some(3),
                "run 3 exited (pid 42): exit code 1",
            ),
            (
                "2026-01-01T10:00:00Z = 12 bytes of output lost",
                Some("2026-01-01T10:00:00Z"),
                LineKind::Note,
                Some(2),
                "12 bytes of output lost",
            ),
            (
                "plain old line",
                None,
                LineKind::Output,
                Some(2),
                "plain old line",
            ),
            (
                "2026-01-01T10:00:00Z no separator",
                None,
                LineKind::Output,
                Some(2),
                "2026-01-01T10:00:00Z no separator",
            ),
            // The agent printing a marker of its own stays output.
            (
                "2026-01-01T10:00:00Z | = run 9 started (pid 1): fake",
                Some("2026-01-01T10:00:00Z"),
                LineKind::Output,
                Some(2),
                "= run 9 started (pid 1): fake",
            ),
        ];
        for (raw, time, kind, run, text) in cases {
            let line = parse_line(raw.as_bytes(), "a1", Some(2));
            assert_eq!(line.time, time.map(t), "{raw}");
            assert_eq!(
                (line.kind, line.run, line.text.as_str()),
                (kind, run, text),
                "{raw}"
            );
        }
    }

    #[test]
    fn the_splitter_cuts_lines_and_keeps_long_ones_bounded() {
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let mut s = LineSplitter::default();
        s.feed(b"one\ntw", &mut |l| lines.push(l.to_vec()));
        s.feed(b"o\n\nthr", &mut |l| lines.push(l.to_vec()));
        assert_eq!(lines, [b"one".to_vec(), b"two".to_vec(), b"".to_vec()]);
        s.finish(&mut |l| lines.push(l.to_vec()));
        assert_eq!(lines.last().unwrap(), b"thr");
        lines.clear();
        let long = vec![b'x'; LINE_MAX * 2 + 5];
        s.feed(&long, &mut |l| lines.push(l.to_vec()));
        s.feed(b"\n", &mut |l| lines.push(l.to_vec()));
        let sizes: Vec<usize> = lines.iter().map(Vec::len).collect();
        assert_eq!(sizes, [LINE_MAX, LINE_MAX, 5]);
    }

    #[test]
    fn a_sink_that_cannot_write_counts_what_it_lost_and_says_so_later() {
        let root = std::env::temp_dir().join(format!("pas-sink-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(root.join("c1/logs")).unwrap();
        let current = root.join("c1/logs/a1.log");
        std::fs::write(&current, "").unwrap();
        let store = crate::store::FsStore::new(&root);
        let mut layer = serde_json::Map::new();
        layer.insert("log_max_bytes".into(), serde_json::json!(300));
        layer.insert("log_keep".into(), serde_json::json!(1));
        let policy = Policy::of(&layer, None, None, None);
        // Opened for reading only: every write fails, as on a full disk.
        let broken = std::fs::File::open(&current).unwrap();
        let mut sink = LogSink::new(&store, "c1", "a1", broken, 0, &policy);
        let now = t("2026-01-01T10:00:00Z");
        sink.output(b"first", now);
        sink.output(b"second", now);
        let lost = sink.lost;
        assert_eq!(
            lost,
            2 * "2026-01-01T10:00:00.000000Z | first\n".len() as u64 + 1
        );
        // The next write rotates (the file counts as full) into a file that works.
        sink.len = 1000;
        sink.output(b"third", now);
        let text = std::fs::read_to_string(&current).unwrap();
        assert_eq!(
            text,
            format!(
                "2026-01-01T10:00:00.000000Z = {lost} bytes of output lost: cannot write the log: Bad file descriptor (os error 9)\n\
                 2026-01-01T10:00:00.000000Z | third\n"
            )
        );
        assert!(root.join("c1/logs/a1.log.1").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn runs_are_counted_back_from_the_latest() {
        assert_eq!(run_number(3, 5).unwrap(), 3);
        assert_eq!(run_number(0, 5).unwrap(), 5);
        assert_eq!(run_number(-1, 5).unwrap(), 4);
        assert_eq!(run_number(-4, 5).unwrap(), 1);
        assert!(run_number(-5, 5).is_err());
        assert!(run_number(0, 0).is_err());
    }

    #[test]
    fn a_query_selects_by_time_and_run() {
        let line = parse_line(b"2026-01-01T10:00:00Z | x", "a1", Some(2));
        let old = parse_line(b"x", "a1", Some(2));
        let since = Query {
            since: Some(t("2026-01-01T09:00:00Z")),
            ..Query::default()
        };
        assert!(since.matches(&line) && !since.matches(&old));
        let later = Query {
            since: Some(t("2026-01-01T11:00:00Z")),
            ..Query::default()
        };
        assert!(!later.matches(&line));
        let run = Query {
            run: Some(2),
            ..Query::default()
        };
        assert!(run.matches(&line));
        assert!(!Query {
            run: Some(1),
            ..Query::default()
        }
        .matches(&line));
    }
}
