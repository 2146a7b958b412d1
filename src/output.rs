//! All output goes through the [`Printer`]: data on stdout (a table for people, one JSON
//! document with `--json`), messages on stderr, colour only when wanted.
//!
//! A closed pipe (`pas agent list | head -1`) is not an error: output stops quietly and the
//! command still finishes its work and exits with its own status.

use std::cell::Cell as Flag;
use std::io::{self, IsTerminal, Write};

use serde_json::Value;

/// How a value should look, so states are coloured the same everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Nothing special.
    Plain,
    /// All good: healthy, ok, completed.
    Good,
    /// Needs a look: late, warning, pending approval.
    Warn,
    /// Broken: down, dead, failed, breach.
    Bad,
    /// Less important: unknown, idle, absent values.
    Dim,
}

/// One table cell: text and tone.
#[derive(Debug, Clone)]
pub struct Styled {
    /// The text shown.
    pub text: String,
    /// How it is coloured.
    pub tone: Tone,
}

impl Styled {
    /// Text with a tone.
    pub fn new(text: impl Into<String>, tone: Tone) -> Styled {
        Styled {
            text: text.into(),
            tone,
        }
    }
}

impl From<String> for Styled {
    fn from(text: String) -> Styled {
        Styled::new(text, Tone::Plain)
    }
}

impl From<&str> for Styled {
    fn from(text: &str) -> Styled {
        Styled::new(text, Tone::Plain)
    }
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set.
    Auto,
    /// Always (still never in `--json`).
    Always,
    /// Never.
    Never,
}

/// The one way commands print.
#[derive(Debug)]
pub struct Printer {
    json: bool,
    quiet: bool,
    color: bool,
    closed: Flag<bool>,
    /// Why stdout could not be written (other than a reader closing the pipe), and what was
    /// lost: the command must not exit 0 when its result did not reach the caller.
    failed: std::cell::RefCell<Option<(String, String)>>,
    /// What the command changed, in words, for the message when its output is lost.
    changed: std::cell::RefCell<Option<String>>,
    progress: Progress,
    /// When set, stdout text is kept here instead of written (see [`Printer::capture`]).
    captured: Option<std::cell::RefCell<String>>,
}

/// The state of the transient progress line on stderr.
#[derive(Debug, Default)]
struct Progress {
    /// Whether stderr is a terminal; asked on first use so short commands skip the ioctl.
    terminal: Flag<Option<bool>>,
    /// When the line was last drawn.
    drawn_at: Flag<Option<std::time::Instant>>,
    /// Whether a line is on screen now (and must be wiped before other output).
    shown: Flag<bool>,
}

impl Printer {
    /// A printer for the global flags.
    pub fn new(json: bool, quiet: bool, color: ColorChoice) -> Printer {
        let color = !json
            && match color {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => {
                    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                        && io::stdout().is_terminal()
                }
            };
        if color {
            // `pas top` colours through crossterm, which obeys NO_COLOR on its own; the
            // decision is ours (`--color always` wins over NO_COLOR), so tell it.
            ratatui::crossterm::style::force_color_output(true);
        }
        Printer {
            json,
            quiet,
            color,
            closed: Flag::new(false),
            failed: std::cell::RefCell::new(None),
            changed: std::cell::RefCell::new(None),
            progress: Progress::default(),
            captured: None,
        }
    }

    /// A printer (`--json` or not) that keeps what a command would print on stdout, for
    /// [`Printer::take_captured`], and drops messages meant for a person on stderr: `pas
    /// serve` runs commands in-process and answers with their JSON result.
    pub fn capture(json: bool) -> Printer {
        Printer {
            captured: Some(std::cell::RefCell::new(String::new())),
            ..Printer::new(json, false, ColorChoice::Never)
        }
    }

    /// What a capturing printer kept (empty for one that writes to stdout).
    pub fn take_captured(&self) -> String {
        self.captured
            .as_ref()
            .map(|c| std::mem::take(&mut *c.borrow_mut()))
            .unwrap_or_default()
    }

    /// Whether `--json` was asked for.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Whether `--quiet` was asked for.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Whether colour is on (for screens drawn without the printer, like `pas top`).
    pub fn colors(&self) -> bool {
        self.color
    }

    /// The size of the terminal stdout is, as (columns, rows): tables are fitted to it. `None`
    /// when stdout is not a terminal (a pipe gets every column) or its size is unknown.
    pub fn terminal_size(&self) -> Option<(usize, usize)> {
        if !io::stdout().is_terminal() {
            return None;
        }
        match ratatui::crossterm::terminal::size() {
            Ok((cols, rows)) if cols > 0 && rows > 0 => Some((cols.into(), rows.into())),
            _ => None,
        }
    }

    /// Whether stdout was closed by the reader (stop producing output).
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// A transient status line for long operations ("validating 120/1000 cells"): drawn on
    /// stderr only when it is a terminal, never with `--quiet` or `--json`, at most ten
    /// times a second, and wiped before any other output, so pipes and logs never see it.
    pub fn progress(&self, text: &str) {
        if self.quiet || self.json {
            return;
        }
        let terminal = match self.progress.terminal.get() {
            Some(t) => t,
            None => {
                let t = io::stderr().is_terminal();
                self.progress.terminal.set(Some(t));
                t
            }
        };
        if !terminal {
            return;
        }
        let now = std::time::Instant::now();
        if let Some(at) = self.progress.drawn_at.get() {
            if now.duration_since(at) < std::time::Duration::from_millis(100) {
                return;
            }
        }
        self.progress.drawn_at.set(Some(now));
        self.progress.shown.set(true);
        let mut err = io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{text}").and_then(|()| err.flush());
    }

    /// Wipes the progress line, if one is shown (call when the long operation ends).
    pub fn progress_done(&self) {
        if self.progress.shown.replace(false) {
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r\x1b[K").and_then(|()| err.flush());
        }
    }

    fn write_stdout(&self, text: &str) {
        if let Some(captured) = &self.captured {
            captured.borrow_mut().push_str(text);
            return;
        }
        self.progress_done();
        if self.closed.get() {
            return;
        }
        let mut out = io::stdout().lock();
        let result = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        if let Err(e) = result {
            // Nothing more can be shown. A reader that closed the pipe wanted no more; any
            // other failure (a full disk) means the caller lost the result.
            self.closed.set(true);
            if e.kind() != io::ErrorKind::BrokenPipe {
                *self.failed.borrow_mut() = Some((e.to_string(), text.trim_end().to_string()));
            }
        }
    }

    /// Says what the command changed ("task t1 was claimed by a1"), so that a caller who
    /// loses the output still learns it from the error.
    pub fn changed(&self, what: impl Into<String>) {
        *self.changed.borrow_mut() = Some(what.into());
    }

    /// The error to exit with when stdout could not be written: the command itself
    /// completed, so the message says so and shows what was lost (a claimed task's id).
    pub fn output_error(&self) -> Option<crate::error::Error> {
        let (why, lost) = self.failed.borrow().clone()?;
        // One line on stderr: a JSON result loses its indentation, not its content.
        let lost = lost.split_whitespace().collect::<Vec<_>>().join(" ");
        let lost: String = lost.chars().take(300).collect();
        let changed = self
            .changed
            .borrow()
            .clone()
            .unwrap_or_else(|| "the command completed".to_string());
        Some(crate::error::Error::failure(format!(
            "cannot write to standard output ({why}); {changed}: the change was made; it would have printed: {lost}"
        )))
    }

    /// Text on stdout exactly as given (an exposition format, an export).
    pub fn raw(&self, text: &str) {
        self.write_stdout(text);
    }

    /// A line of data on stdout (an id, a path); printed even with `--quiet`.
    pub fn line(&self, text: &str) {
        self.write_stdout(&format!("{text}\n"));
    }

    /// Human information on stdout, left out with `--quiet` and `--json`.
    pub fn info(&self, text: &str) {
        if !self.quiet && !self.json {
            self.write_stdout(&format!("{text}\n"));
        }
    }

    /// Human text on stdout exactly as given (a piece of a long table), left out with
    /// `--quiet` and `--json`.
    pub fn info_text(&self, text: &str) {
        if !self.quiet && !self.json {
            self.write_stdout(text);
        }
    }

    /// A message for the person on stderr (progress, warnings), left out with `--quiet`.
    pub fn note(&self, text: &str) {
        if !self.quiet && self.captured.is_none() {
            self.progress_done();
            eprintln!("{text}");
        }
    }

    /// One JSON document on stdout.
    pub fn json(&self, value: &Value) {
        // Serialising a JSON value cannot fail.
        let text = serde_json::to_string_pretty(value).unwrap_or_default();
        self.write_stdout(&format!("{text}\n"));
    }

    /// A table for people: upper-case headers, columns separated by spaces.
    /// With `--quiet` only the first column is printed (the ids), like `docker ps -q`. An
    /// empty table prints nothing on stdout, so `| wc -l` counts rows, and `(none)` on stderr.
    pub fn table(&self, headers: &[&str], rows: Vec<Vec<Styled>>) {
        self.table_keyed(headers, rows, Some(0));
    }

    /// [`Printer::table`] whose ids, the one thing `--quiet` prints, are in column `key`;
    /// `None` for a table without ids (a history), of which `--quiet` prints nothing.
    pub fn table_keyed(&self, headers: &[&str], rows: Vec<Vec<Styled>>, key: Option<usize>) {
        if rows.is_empty() {
            self.note("(none)");
            return;
        }
        if self.quiet {
            let mut ids = String::new();
            for row in rows {
                if let Some(id) = key.and_then(|k| row.into_iter().nth(k)) {
                    ids.push_str(id.text.trim());
                    ids.push('\n');
                }
            }
            self.write_stdout(&ids);
            return;
        }
        self.write_stdout(&self.render_table(headers, rows));
    }

    /// The table as text (for `--watch` style redraws and tests).
    pub fn render_table(&self, headers: &[&str], rows: Vec<Vec<Styled>>) -> String {
        let mut text = String::new();
        self.render_table_into(&mut text, headers, &rows);
        text
    }

    /// Appends the table to `out`: each column as wide as its widest line (at least 1),
    /// followed by two spaces, each line's trailing blanks removed. A cell with several
    /// lines makes its row as tall; the colours are those of the 8 standard ones. This is
    /// the layout comfy-table's `NOTHING` preset gave, kept byte for byte, without its
    /// per-cell allocations (a status table of 100,000 agents spent 40% of its time in it).
    pub fn render_table_into(&self, out: &mut String, headers: &[&str], rows: &[Vec<Styled>]) {
        let columns = rows.iter().map(Vec::len).chain([headers.len()]).max();
        let mut widths = vec![1usize; columns.unwrap_or(0)];
        let mut measure = |c: usize, text: &str| {
            for line in text.split('\n') {
                widths[c] = widths[c].max(text_width(line));
            }
        };
        for (c, h) in headers.iter().enumerate() {
            measure(c, h);
        }
        for row in rows {
            for (c, s) in row.iter().enumerate() {
                measure(c, &s.text);
            }
        }
        // The lines joined by newlines, then split again and trimmed, as the table's text
        // was: a trailing empty line is dropped that way.
        let mut joined = String::new();
        let bold = self.color.then_some(("\x1b[1m", "\x1b[0m"));
        let header: Vec<(&str, Option<(&str, &str)>)> =
            headers.iter().map(|h| (*h, bold)).collect();
        self.table_row(&mut joined, &widths, &header);
        let mut cells: Vec<(&str, Option<(&str, &str)>)> = Vec::with_capacity(widths.len());
        for row in rows {
            cells.clear();
            cells.extend(row.iter().map(|s| (s.text.as_str(), self.codes(s.tone))));
            joined.push('\n');
            self.table_row(&mut joined, &widths, &cells);
        }
        for line in joined.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }

    /// One row of a table, its lines separated by newlines (none after the last).
    fn table_row(
        &self,
        out: &mut String,
        widths: &[usize],
        cells: &[(&str, Option<(&str, &str)>)],
    ) {
        let height = cells
            .iter()
            .map(|(text, _)| text.split('\n').count())
            .max()
            .unwrap_or(1);
        for k in 0..height {
            if k > 0 {
                out.push('\n');
            }
            for (c, width) in widths.iter().enumerate() {
                let cell = cells.get(c);
                match cell.and_then(|(text, _)| text.split('\n').nth(k)) {
                    Some(line) => {
                        let codes = cell.and_then(|(_, codes)| *codes);
                        if let Some((on, _)) = codes {
                            out.push_str(on);
                        }
                        out.push_str(line);
                        pad(out, width - text_width(line) + 2);
                        if let Some((_, off)) = codes {
                            out.push_str(off);
                        }
                    }
                    None => pad(out, width + 2),
                }
            }
        }
    }

    /// The escape codes around a cell of `tone`, when colour is on.
    fn codes(&self, tone: Tone) -> Option<(&'static str, &'static str)> {
        if !self.color {
            return None;
        }
        match tone {
            Tone::Plain => None,
            Tone::Good => Some(("\x1b[38;5;2m", "\x1b[39m")),
            Tone::Warn => Some(("\x1b[38;5;3m", "\x1b[39m")),
            Tone::Bad => Some(("\x1b[38;5;1m", "\x1b[39m")),
            Tone::Dim => Some(("\x1b[2m", "\x1b[0m")),
        }
    }

    /// `key: value` lines for one object, aligned.
    pub fn fields(&self, pairs: Vec<(&str, Styled)>) {
        if self.quiet {
            return;
        }
        let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut text = String::new();
        for (key, value) in pairs {
            let shown = self.paint(&value);
            text.push_str(&format!("{key:<width$}  {shown}\n"));
        }
        self.write_stdout(&text);
    }

    /// Text with its tone's colour when colour is on.
    pub fn paint(&self, styled: &Styled) -> String {
        if !self.color {
            return styled.text.clone();
        }
        let code = match styled.tone {
            Tone::Plain => return styled.text.clone(),
            Tone::Good => "32",
            Tone::Warn => "33",
            Tone::Bad => "31",
            Tone::Dim => "2",
        };
        format!("\x1b[{code}m{}\x1b[0m", styled.text)
    }
}

/// `line` cut to `width` visible characters, its last one an ellipsis when it was cut;
/// colour codes are kept and not counted (a colour cut off is reset).
pub fn clip(line: &str, width: usize) -> String {
    let mut visible = 0;
    let mut escaped = false;
    let mut chars = line.chars().peekable();
    let mut out = String::with_capacity(line.len().min(width * 4));
    let total = visible_width(line);
    if total <= width {
        return line.to_string();
    }
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            escaped = true;
            out.push(c);
            // CSI: ESC [ parameters, ended by a letter.
            if chars.peek() == Some(&'[') {
                for e in chars.by_ref() {
                    out.push(e);
                    if e.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if visible + 1 >= width {
            break;
        }
        out.push(c);
        visible += 1;
    }
    if width > 0 {
        out.push('…');
    }
    if escaped {
        out.push_str("\x1b[0m");
    }
    out
}

/// The columns `text` takes on a terminal (East Asian wide characters take two).
fn text_width(text: &str) -> usize {
    if text.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        text.len()
    } else {
        unicode_width::UnicodeWidthStr::width(text)
    }
}

/// Appends `n` spaces.
fn pad(out: &mut String, n: usize) {
    const SPACES: &str = "                                                                ";
    let mut left = n;
    while left > 0 {
        let k = left.min(SPACES.len());
        out.push_str(&SPACES[..k]);
        left -= k;
    }
}

/// The characters of `line` a terminal shows (colour codes left out).
pub fn visible_width(line: &str) -> usize {
    let mut n = 0;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                for e in chars.by_ref() {
                    if e.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_clipped_to_the_visible_width_keeping_colours() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("exactly10!", 10), "exactly10!");
        assert_eq!(clip("a line that is too long", 10), "a line th…");
        let red = "\x1b[31mdead\x1b[0m and more text";
        assert_eq!(visible_width(red), 18);
        assert_eq!(clip(red, 6), "\x1b[31mdead\x1b[0m …\x1b[0m");
        assert_eq!(clip("abc", 0), "");
    }
}
