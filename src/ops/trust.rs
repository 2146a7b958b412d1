//! Trust: who may make pas run what, and as whom an agent runs.
//!
//! `pas watch` and `pas revive` usually run as root, and they run commands named in files
//! (an agent's `command`, the `on_failure` hook). So before running one, pas checks the
//! way sshd's StrictModes and cron do: the file the command comes from, every directory
//! from the missions root down to it, and the root's `pas.toml` must be owned by the user
//! pas runs as (or by root) and must not be writable by the group or by others. Otherwise
//! another local user could have planted or changed the command, and pas runs nothing.
//!
//! When pas runs as root, an agent runs as the user named in the cell's
//! `config/isolation.json` (`security_context.user`, and `group` or else the user's own
//! group), with supplementary groups dropped. Running agents as root needs an explicit
//! opt-in: `"user": "root"` in that file, or `--agents-as-root` for the whole run.
//!
//! On a store in the network (etcd) nothing records who wrote a document, so the owners
//! and modes say nothing: [`check_remote`] decides instead. A pas that is not root runs
//! commands from there as itself only (whoever may write the prefix may already run
//! commands as that user through it); a root pas only when it authenticates to the store
//! as a user the local, root-owned `pas.toml` names in `etcd_root_writers`: the operator
//! vouches that only trusted people may write the prefix as that user.
//!
//! The rules are pure: the facts (owners and modes, the accounts) are parameters.

use crate::accounts::User;
use crate::model::SecurityContext;
use crate::store::{Origin, Remote};

/// Why pas will not run a command: one sentence, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What is wrong.
    pub why: String,
    /// How to fix it.
    pub fix: String,
}

/// Checks that nobody but `runner` (the uid pas runs as) or root could have written any
/// of `origins`. `runs_as` is the uid the command will run as: it may also own the
/// document and its directory (an agent rewrites its own file with every beat), because
/// whatever it writes there runs as itself again; never the cell, the root or the files
/// that decide whom it runs as.
pub fn check_origins(origins: &[Origin], runner: u32, runs_as: Option<u32>) -> Result<(), Refusal> {
    for o in origins {
        let kind = if o.is_dir { "directory" } else { "file" };
        let own = o.near && runs_as == Some(o.owner);
        if o.owner != runner && o.owner != 0 && !own {
            return Err(Refusal {
                why: format!(
                    "{kind} {} is owned by uid {}, not by uid {runner} that pas runs as (or root), so pas will not run a command from it",
                    o.what, o.owner
                ),
                fix: format!(
                    "if its content is what you want run, `chown {runner} {}`",
                    o.what
                ),
            });
        }
        if o.mode & 0o022 != 0 {
            let who = if o.mode & 0o002 != 0 {
                "anyone"
            } else {
                "its group"
            };
            return Err(Refusal {
                why: format!(
                    "{kind} {} (mode {:o}) may be changed by {who}, so pas will not run a command from it",
                    o.what, o.mode
                ),
                fix: format!("`chmod go-w {}`", o.what),
            });
        }
    }
    Ok(())
}

/// Checks that pas, running as `runner`, may run a command read from the network store
/// `remote`: always when it is not root (the command runs as `runner`, see [`run_as`]);
/// as root only when it authenticates as a user listed in `root_writers`
/// (`etcd_root_writers` in the local `pas.toml`, itself checked by [`check_origins`]).
pub fn check_remote(remote: &Remote, runner: u32, root_writers: &[String]) -> Result<(), Refusal> {
    if runner != 0 {
        return Ok(());
    }
    let listed = "list it in the root's pas.toml, etcd_root_writers = [\"NAME\"], if only people you trust may write the prefix as NAME";
    match &remote.user {
        None => Err(Refusal {
            why: format!(
                "pas runs as root and the command comes from {}, which records no writer and which pas reaches without a user, so anyone who can reach it could have written it",
                remote.location
            ),
            fix: format!(
                "run pas as a non-root user, or connect as an etcd user (user=NAME in the store URL, an etcd with authentication on) and {listed}"
            ),
        }),
        Some(user) if root_writers.iter().any(|w| w == user) => Ok(()),
        Some(user) => Err(Refusal {
            why: format!(
                "pas runs as root and the command comes from {}, as etcd user {user}, which pas.toml's etcd_root_writers does not name",
                remote.location
            ),
            fix: listed.replace("NAME", user),
        }),
    }
}

/// Whom an agent's process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// The user pas runs as.
    Myself,
    /// Another user (pas runs as root): the uid, the gid and the home directory.
    User {
        /// The user's name, for messages.
        name: String,
        /// User id.
        uid: u32,
        /// Group id (supplementary groups are dropped).
        gid: u32,
        /// Home directory, for `HOME`.
        home: String,
    },
}

/// Decides whom an agent of a cell with security context `ctx` runs as, when pas runs as
/// `runner`. `allow_root` is the run-wide opt-in; `user` and `group` look accounts up.
pub fn run_as(
    ctx: &SecurityContext,
    runner: u32,
    allow_root: bool,
    user: &dyn Fn(&str) -> Option<User>,
    group: &dyn Fn(&str) -> Option<u32>,
) -> Result<RunAs, Refusal> {
    let named = ctx.user.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let Some(name) = named else {
        if runner == 0 && !allow_root {
            return Err(Refusal {
                why: "the agent would run as root: config/isolation.json names no security_context.user".to_string(),
                fix: "set security_context.user to the user it should run as (\"root\" to allow root), or pass --agents-as-root".to_string(),
            });
        }
        return Ok(RunAs::Myself);
    };
    let Some(account) = user(name) else {
        return Err(Refusal {
            why: format!("user {name:?} in config/isolation.json does not exist on this machine"),
            fix: "create the user, or give a uid (\"user\": \"1001\")".to_string(),
        });
    };
    if account.uid == runner {
        return Ok(RunAs::Myself);
    }
    if runner != 0 {
        return Err(Refusal {
            why: format!(
                "pas runs as uid {runner} and cannot start an agent as {name} (uid {})",
                account.uid
            ),
            fix: "run the watch as root, or clear security_context.user in config/isolation.json"
                .to_string(),
        });
    }
    let gid = match ctx
        .group
        .as_deref()
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        None => account.gid,
        Some(g) => group(g).ok_or_else(|| Refusal {
            why: format!("group {g:?} in config/isolation.json does not exist on this machine"),
            fix: "create the group, or clear security_context.group to use the user's own"
                .to_string(),
        })?,
    };
    Ok(RunAs::User {
        name: account.name,
        uid: account.uid,
        gid,
        home: account.home,
    })
}

/// Whether a name (an option or a variable) says its value is a secret.
fn names_a_secret(name: &str) -> bool {
    let name = name.trim_start_matches('-').to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "apikey",
        "api-key",
        "api_key",
        "credential",
        "auth",
        "private-key",
        "private_key",
    ]
    .iter()
    .any(|word| name.contains(word))
        || name == "key"
        || name.ends_with("_key")
        || name.ends_with("-key")
}

/// A command line as events record it: the values of options and `NAME=value` words whose
/// name says secret (`--token X`, `--password=X`, `API_KEY=X`) are replaced by `***`, so
/// a log anyone may read does not carry them.
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut hide_next = false;
    for word in argv {
        if hide_next {
            out.push("***".to_string());
            hide_next = false;
            continue;
        }
        match word.split_once('=') {
            Some((name, _)) if names_a_secret(name) && !name.is_empty() => {
                out.push(format!("{name}=***"));
            }
            None if word.starts_with('-') && names_a_secret(word) => {
                out.push(word.clone());
                hide_next = true;
            }
            _ => out.push(word.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_command_lines_are_hidden() {
        let cases: [(&[&str], &[&str]); 8] = [
            (
                &["./agent.sh", "--model", "big"],
                &["./agent.sh", "--model", "big"],
            ),
            (
                &["run", "--token", "abc", "x"],
                &["run", "--token", "***", "x"],
            ),
            (&["run", "--api-key=abc"], &["run", "--api-key=***"]),
            (
                &[
                    "env",
                    "OPENAI_API_KEY=sk-1",
                    "GITHUB_TOKEN=g",
                    "MODE=fast",
                    "agent",
                ],
                &[
                    "env",
                    "OPENAI_API_KEY=***",
                    "GITHUB_TOKEN=***",
                    "MODE=fast",
                    "agent",
                ],
            ),
            (
                &["db", "--password", "hunter2"],
                &["db", "--password", "***"],
            ),
            (&["ssh", "-i", "key"], &["ssh", "-i", "key"]),
            (&["run", "--secret"], &["run", "--secret"]),
            (
                &["x", "a=b=c", "--keyboard", "us"],
                &["x", "a=b=c", "--keyboard", "us"],
            ),
        ];
        for (argv, want) in cases {
            let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
            assert_eq!(redact_argv(&argv), want, "{argv:?}");
        }
    }

    fn origin(what: &str, owner: u32, mode: u32, is_dir: bool) -> Origin {
        Origin {
            what: what.to_string(),
            owner,
            mode,
            is_dir,
            near: what.contains("/agents"),
        }
    }

    #[test]
    fn only_the_runner_or_root_may_have_written_the_way_to_a_command() {
        let fine_dir = origin("/m", 0, 0o755, true);
        let cases: [(&str, Vec<Origin>, u32, Option<&str>); 11] = [
            (
                "the agent's own file, run as that agent",
                vec![
                    fine_dir.clone(),
                    origin("/m/c/agents", 65534, 0o755, true),
                    origin("/m/c/agents/a.json", 65534, 0o644, false),
                ],
                0,
                None,
            ),
            (
                "the agent's user owns the cell",
                vec![origin("/m/c", 65534, 0o755, true)],
                0,
                Some("directory /m/c is owned by uid 65534"),
            ),
            (
                "all root's, pas as root",
                vec![
                    fine_dir.clone(),
                    origin("/m/c/agents/a.json", 0, 0o644, false),
                ],
                0,
                None,
            ),
            (
                "alice's own, pas as alice",
                vec![fine_dir.clone(), origin("/m/c", 1000, 0o700, true)],
                1000,
                None,
            ),
            (
                "root's files, pas as alice",
                vec![origin("/m/c/agents/a.json", 0, 0o600, false)],
                1000,
                None,
            ),
            (
                "another user's file",
                vec![
                    fine_dir.clone(),
                    origin("/m/c/agents/a.json", 1001, 0o644, false),
                ],
                0,
                Some("file /m/c/agents/a.json is owned by uid 1001"),
            ),
            (
                "another user's cell",
                vec![origin("/m/c", 1001, 0o755, true)],
                0,
                Some("directory /m/c is owned by uid 1001"),
            ),
            (
                "a world-writable file",
                vec![origin("/m/c/agents/a.json", 0, 0o666, false)],
                0,
                Some("may be changed by anyone"),
            ),
            (
                "a group-writable file",
                vec![origin("/m/c/config/policies.json", 0, 0o664, false)],
                0,
                Some("may be changed by its group"),
            ),
            (
                "a world-writable agents/",
                vec![origin("/m/c/agents", 0, 0o777, true)],
                0,
                Some("directory /m/c/agents (mode 777)"),
            ),
            (
                "a sticky world-writable root",
                vec![origin("/m", 0, 0o1777, true)],
                0,
                Some("may be changed by anyone"),
            ),
        ];
        for (why, origins, runner, want) in cases {
            let got = check_origins(&origins, runner, Some(65534));
            match want {
                None => assert_eq!(got, Ok(()), "{why}"),
                Some(needle) => {
                    let refusal = got.expect_err(why);
                    assert!(refusal.why.contains(needle), "{why}: {}", refusal.why);
                    assert!(!refusal.fix.is_empty(), "{why}: a fix");
                }
            }
        }
    }

    #[test]
    fn commands_from_the_network_run_as_root_only_for_listed_authenticated_users() {
        let remote = |user: Option<&str>| Remote {
            location: "etcd at etcd://h:2379/p".to_string(),
            user: user.map(str::to_string),
        };
        let listed = ["pas".to_string(), "ops".to_string()];
        // (why, user, runner, root_writers, None or the refusal's needle)
        type Case<'a> = (&'a str, Option<&'a str>, u32, &'a [String], Option<&'a str>);
        let cases: [Case; 7] = [
            ("alice, no user", None, 1000, &[], None),
            ("alice, a user nobody listed", Some("x"), 1000, &[], None),
            ("root, no user", None, 0, &listed, Some("without a user")),
            (
                "root, a user, empty list",
                Some("pas"),
                0,
                &[],
                Some("etcd user pas"),
            ),
            (
                "root, an unlisted user",
                Some("eve"),
                0,
                &listed,
                Some("etcd user eve"),
            ),
            ("root, a listed user", Some("pas"), 0, &listed, None),
            ("root, another listed user", Some("ops"), 0, &listed, None),
        ];
        for (why, user, runner, writers, want) in cases {
            let got = check_remote(&remote(user), runner, writers);
            match want {
                None => assert_eq!(got, Ok(()), "{why}"),
                Some(needle) => {
                    let refusal = got.expect_err(why);
                    assert!(refusal.why.contains(needle), "{why}: {}", refusal.why);
                    assert!(
                        refusal.fix.contains("etcd_root_writers"),
                        "{why}: {}",
                        refusal.fix
                    );
                }
            }
        }
    }

    fn accounts(name: &str) -> Option<User> {
        let (uid, gid, home) = match name {
            "root" | "0" => (0, 0, "/root"),
            "alice" | "1000" => (1000, 100, "/home/alice"),
            "nobody" | "65534" => (65534, 65534, "/nonexistent"),
            _ => return None,
        };
        let name = match uid {
            0 => "root",
            1000 => "alice",
            _ => "nobody",
        };
        Some(User {
            name: name.to_string(),
            uid,
            gid,
            home: home.to_string(),
        })
    }

    fn groups(name: &str) -> Option<u32> {
        match name {
            "users" => Some(100),
            "nogroup" => Some(65534),
            _ => None,
        }
    }

    #[test]
    fn whom_an_agent_runs_as() {
        let alice = RunAs::User {
            name: "alice".into(),
            uid: 1000,
            gid: 100,
            home: "/home/alice".into(),
        };
        let nobody_in_users = RunAs::User {
            name: "nobody".into(),
            uid: 65534,
            gid: 100,
            home: "/nonexistent".into(),
        };
        // (why, user, group, runner, allow_root, expected or the refusal's needle)
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            u32,
            bool,
            Result<RunAs, &'a str>,
        );
        let cases: [Case; 13] = [
            (
                "root, nobody named, no opt-in",
                None,
                None,
                0,
                false,
                Err("would run as root"),
            ),
            (
                "root, empty user, no opt-in",
                Some(" "),
                Some("agents"),
                0,
                false,
                Err("would run as root"),
            ),
            (
                "root, nobody named, opted in",
                None,
                None,
                0,
                true,
                Ok(RunAs::Myself),
            ),
            (
                "root, \"root\" named",
                Some("root"),
                None,
                0,
                false,
                Ok(RunAs::Myself),
            ),
            (
                "root, uid 0 named",
                Some("0"),
                None,
                0,
                false,
                Ok(RunAs::Myself),
            ),
            (
                "root, alice named",
                Some("alice"),
                None,
                0,
                false,
                Ok(alice.clone()),
            ),
            (
                "root, alice by uid",
                Some("1000"),
                Some(""),
                0,
                false,
                Ok(alice),
            ),
            (
                "root, nobody in users",
                Some("nobody"),
                Some("users"),
                0,
                false,
                Ok(nobody_in_users),
            ),
            (
                "root, an unknown user",
                Some("mallory"),
                None,
                0,
                false,
                Err("user \"mallory\""),
            ),
            (
                "root, an unknown group",
                Some("alice"),
                Some("agents"),
                0,
                false,
                Err("group \"agents\""),
            ),
            (
                "alice, nobody named",
                None,
                Some("agents"),
                1000,
                false,
                Ok(RunAs::Myself),
            ),
            (
                "alice, alice named",
                Some("alice"),
                None,
                1000,
                false,
                Ok(RunAs::Myself),
            ),
            (
                "alice, nobody named",
                Some("nobody"),
                None,
                1000,
                true,
                Err("cannot start an agent as nobody"),
            ),
        ];
        for (why, user, group, runner, allow_root, want) in cases {
            let ctx = SecurityContext {
                user: user.map(str::to_string),
                group: group.map(str::to_string),
                ..SecurityContext::default()
            };
            let got = run_as(&ctx, runner, allow_root, &accounts, &groups);
            match (want, got) {
                (Ok(want), Ok(got)) => assert_eq!(got, want, "{why}"),
                (Err(needle), Err(refusal)) => {
                    assert!(refusal.why.contains(needle), "{why}: {}", refusal.why)
                }
                (want, got) => panic!("{why}: wanted {want:?}, got {got:?}"),
            }
        }
    }
}
