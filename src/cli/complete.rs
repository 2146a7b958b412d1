//! `pas completions SHELL`, and the answers to the shell's completion requests.
//!
//! The script a shell sources is small: on every Tab it runs `PAS_COMPLETE=<shell> pas --
//! <words>`, and pas answers from the real command tree plus the cells, agents and tasks
//! on disk. So completions never go stale when pas is upgraded or a cell is created.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Command, CommandFactory, ValueEnum};
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use clap_complete::env::{CompleteEnv, Shells};

use super::{Cli, Ctx, DEFAULT_ROOT};
use crate::error::{Error, Result};
use crate::model::Cell;
use crate::store::{Collection, FileKey, FsStore, Store};

/// The environment variable that turns a `pas` run into a completion request.
pub const COMPLETE_VAR: &str = "PAS_COMPLETE";

/// Shells pas writes completion scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash 4 or later: `source <(pas completions bash)` in ~/.bashrc.
    Bash,
    /// zsh: `source <(pas completions zsh)` in ~/.zshrc.
    Zsh,
    /// fish: `pas completions fish | source` in config.fish.
    Fish,
    /// elvish: `eval (pas completions elvish | slurp)` in rc.elv.
    Elvish,
    /// PowerShell: `pas completions powershell | Out-String | Invoke-Expression`.
    Powershell,
}

// Arguments of `pas completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Answers a completion request and exits, when the shell's script asked for one.
///
/// Checked before anything else so a completion never parses the words as a command.
pub fn answer_if_asked() {
    if std::env::var_os(COMPLETE_VAR).is_none() {
        return;
    }
    CompleteEnv::with_factory(completion_command)
        .var(COMPLETE_VAR)
        .bin("pas")
        .completer("pas")
        .complete();
}

/// Prints the script that registers pas's completions with `shell`.
pub fn run(ctx: &Ctx, args: CompletionsArgs) -> Result<()> {
    let name = match args.shell {
        Shell::Bash => "bash",
        Shell::Zsh => "zsh",
        Shell::Fish => "fish",
        Shell::Elvish => "elvish",
        Shell::Powershell => "powershell",
    };
    let shells = Shells::builtins();
    let completer = shells
        .completer(name)
        .ok_or_else(|| Error::failure(format!("no completion support for {name}")))?;
    let mut script = Vec::new();
    completer
        .write_registration(COMPLETE_VAR, "pas", "pas", "pas", &mut script)
        .map_err(|e| Error::failure(format!("cannot write the {name} script: {e}")))?;
    ctx.out.raw(&String::from_utf8_lossy(&script));
    Ok(())
}

/// The command tree, with the cell, agent and task arguments completed from disk.
fn completion_command() -> Command {
    // Subcommands are deferred (built only when parsed); build them all to reach every arg.
    let mut cmd = Cli::command();
    cmd.build();
    with_candidates(cmd)
}

fn with_candidates(cmd: Command) -> Command {
    cmd.mut_args(|arg| {
        let candidates = match arg.get_id().as_str() {
            "cell" => ArgValueCandidates::new(cell_candidates),
            "agent" => ArgValueCandidates::new(agent_candidates),
            "task" => ArgValueCandidates::new(task_candidates),
            _ => return arg,
        };
        arg.add(candidates)
    })
    .mut_subcommands(with_candidates)
}

/// The words being completed (after the `--` the script passes).
fn words() -> Vec<OsString> {
    std::env::args_os()
        .skip_while(|a| a != "--")
        .skip(1)
        .collect()
}

/// The root the command line being completed would use.
fn root_of(words: &[OsString]) -> PathBuf {
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        let text = word.to_string_lossy();
        if text == "--root" {
            if let Some(dir) = iter.next() {
                return PathBuf::from(dir);
            }
        } else if let Some(dir) = text.strip_prefix("--root=") {
            return PathBuf::from(dir);
        }
    }
    std::env::var_os("PAS_ROOT")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from)
}

fn cell_candidates() -> Vec<CompletionCandidate> {
    let store = FsStore::new(root_of(&words()));
    let mut out = Vec::new();
    for id in store.cell_ids().unwrap_or_default() {
        let name = store
            .read(&id, FileKey::Cell)
            .ok()
            .flatten()
            .and_then(|doc| Cell::from_doc(&doc).ok())
            .map(|c| c.mission_name);
        match name {
            Some(name) => {
                out.push(CompletionCandidate::new(&id).help(Some(name.clone().into())));
                out.push(CompletionCandidate::new(name).help(Some(id.into())));
            }
            None => out.push(CompletionCandidate::new(id)),
        }
    }
    out
}

/// The cell named on the command line being completed, else `$PAS_CELL`.
fn cell_in_words(store: &FsStore, words: &[OsString]) -> Option<String> {
    words
        .iter()
        .skip(1)
        .map(|w| w.to_string_lossy().into_owned())
        .filter(|w| !w.is_empty() && !w.starts_with('-'))
        .find_map(|w| crate::ops::cell::resolve(store, &w).ok())
        .or_else(|| {
            std::env::var("PAS_CELL")
                .ok()
                .and_then(|c| crate::ops::cell::resolve(store, &c).ok())
        })
}

fn members(what: Collection) -> Vec<CompletionCandidate> {
    let words = words();
    let store = FsStore::new(root_of(&words));
    let cells = match cell_in_words(&store, &words) {
        Some(cell) => vec![cell],
        None => store.cell_ids().unwrap_or_default(),
    };
    let mut ids: Vec<String> = cells
        .iter()
        .flat_map(|cell| store.list(cell, what).unwrap_or_default())
        .collect();
    ids.sort();
    ids.dedup();
    ids.into_iter().map(CompletionCandidate::new).collect()
}

fn agent_candidates() -> Vec<CompletionCandidate> {
    members(Collection::Agents)
}

fn task_candidates() -> Vec<CompletionCandidate> {
    members(Collection::Tasks)
}
