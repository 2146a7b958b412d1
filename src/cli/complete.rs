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

/// The bash script: clap's, but the word being completed reaches pas as plain text (a
/// leading quote or backslashes the user typed removed), and the answers are escaped for
/// the shell (`Docs\ sprint`) unless the user opened a quote, which readline then closes.
const BASH_SCRIPT: &str = r#"
_clap_complete_pas() {
    local IFS=$'\013'
    local _CLAP_COMPLETE_INDEX=${COMP_CWORD}
    local _CLAP_COMPLETE_COMP_TYPE=${COMP_TYPE}
    if compopt +o nospace 2> /dev/null; then
        local _CLAP_COMPLETE_SPACE=false
    else
        local _CLAP_COMPLETE_SPACE=true
    fi
    local words=("${COMP_WORDS[@]}")
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        words[COMP_CWORD]="$2"
    fi
    # pas matches plain text: "Docs sprint", 'Docs sprint' and Docs\ sprint are all
    # Docs sprint (bash passes the word being completed without its opening quote).
    local _pas_i _pas_w _pas_quoted=
    case "${COMP_WORDS[COMP_CWORD]}" in
        \"*|\'*) _pas_quoted=1 ;;
    esac
    for _pas_i in "${!words[@]}"; do
        _pas_w="${words[_pas_i]}"
        case "$_pas_w" in
            \"*\"|\'*\') words[_pas_i]="${_pas_w:1:${#_pas_w}-2}" ;;
            \"*|\'*) words[_pas_i]="${_pas_w:1}" ;;
            *) words[_pas_i]="${_pas_w//\\/}" ;;
        esac
    done
    COMPREPLY=( $( \
        _CLAP_IFS="$IFS" \
        _CLAP_COMPLETE_INDEX="$_CLAP_COMPLETE_INDEX" \
        _CLAP_COMPLETE_COMP_TYPE="$_CLAP_COMPLETE_COMP_TYPE" \
        _CLAP_COMPLETE_SPACE="$_CLAP_COMPLETE_SPACE" \
        PAS_COMPLETE="bash" \
        "pas" -- "${words[@]}" \
    ) )
    if [[ $? != 0 ]]; then
        unset COMPREPLY
        return
    fi
    if [[ -z $_pas_quoted ]]; then
        for _pas_i in "${!COMPREPLY[@]}"; do
            printf -v 'COMPREPLY[_pas_i]' '%q' "${COMPREPLY[_pas_i]}"
        done
    fi
    if [[ $_CLAP_COMPLETE_SPACE == false ]] && [[ "${COMPREPLY-}" =~ [=/:]$ ]]; then
        compopt -o nospace
    fi
}
if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -o nospace -o bashdefault -o nosort -F _clap_complete_pas pas
else
    complete -o nospace -o bashdefault -F _clap_complete_pas pas
fi
"#;

/// Prints the script that registers pas's completions with `shell`.
pub fn run(ctx: &Ctx, args: CompletionsArgs) -> Result<()> {
    if args.shell == Shell::Bash {
        ctx.out.raw(BASH_SCRIPT);
        return Ok(());
    }
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
