//! The examples in `docs/cli.md` run as tests, so the docs cannot drift from the binary.
//!
//! Every fenced block marked `console` is a session in a fresh root (also the working
//! directory, and `$PAS_ROOT`): a line starting with `$ ` is a command for `sh -c`, the lines
//! after it are what it prints (stdout, then stderr). In expected lines `[..]` matches any
//! text within the line and a line `...` matches any number of lines. A last line
//! `[exit N]` expects that exit status; without one the command must succeed.

use std::path::Path;
use std::process::Command;

use crate::harness::{pas_bin, Root};

struct Step {
    line: usize,
    command: String,
    expected: Vec<String>,
    exit: i32,
}

/// The `console` blocks of a markdown file, each a list of steps.
fn sessions(markdown: &str) -> Vec<Vec<Step>> {
    let mut sessions = Vec::new();
    let mut current: Option<Vec<Step>> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut current, line.trim_end()) {
            (None, "```console") => current = Some(Vec::new()),
            (Some(_), "```") => sessions.extend(current.take()),
            (Some(steps), text) => {
                if let Some(command) = text.strip_prefix("$ ") {
                    steps.push(Step {
                        line: i + 1,
                        command: command.to_string(),
                        expected: Vec::new(),
                        exit: 0,
                    });
                } else if let Some(step) = steps.last_mut() {
                    let code = text
                        .strip_prefix("[exit ")
                        .and_then(|t| t.strip_suffix(']'))
                        .and_then(|n| n.parse().ok());
                    match code {
                        Some(code) => step.exit = code,
                        None => step.expected.push(text.to_string()),
                    }
                }
            }
            _ => {}
        }
    }
    sessions
}

/// Whether `line` matches `pattern`, where `[..]` stands for any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || line.len() < first.len() + last.len() || !line.ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Whether the output lines match the expected ones, `...` matching any number of lines.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((first, rest)) => {
            !actual.is_empty() && line_matches(first, actual[0]) && lines_match(rest, &actual[1..])
        }
    }
}

#[test]
fn the_examples_in_docs_cli_md_run_as_documented() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
    let markdown = std::fs::read_to_string(&docs).unwrap();
    let sessions = sessions(&markdown);
    assert!(sessions.len() >= 5, "docs/cli.md has console examples");
    let bin_dir = Path::new(pas_bin()).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let mut failures = Vec::new();
    for steps in sessions {
        let root = Root::new();
        for step in steps {
            let out = Command::new("sh")
                .args(["-c", &step.command])
                .current_dir(&root.path)
                .env("PATH", &path)
                .env("PAS_ROOT", &root.path)
                .env("NO_COLOR", "1")
                .env_remove("PAS_CELL")
                .env_remove("PAS_AGENT")
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let actual: Vec<&str> = text.lines().map(str::trim_end).collect();
            let code = out.status.code().unwrap_or(-1);
            if code != step.exit || !lines_match(&step.expected, &actual) {
                failures.push(format!(
                    "docs/cli.md:{}: $ {}\n  expected (exit {}):\n    {}\n  got (exit {code}):\n    {}",
                    step.line,
                    step.command,
                    step.exit,
                    step.expected.join("\n    "),
                    actual.join("\n    ")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_matcher_understands_wildcards() {
    assert!(line_matches("cell [..] created", "cell 3f2a created"));
    assert!(line_matches("[..]", "anything"));
    assert!(!line_matches("a[..]c", "ab"));
    assert!(line_matches("a[..]b[..]c", "a1b2c"));
    let expected: Vec<String> = ["x", "...", "z"].iter().map(|s| s.to_string()).collect();
    assert!(lines_match(&expected, &["x", "y", "y", "z"]));
    assert!(lines_match(&expected, &["x", "z"]));
    assert!(!lines_match(&expected, &["x", "y"]));
}
