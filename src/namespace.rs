//! Isolation level_2's mount namespace: `pas __isolate` makes one for the agent and then
//! becomes the agent's command (`exec`, same pid), so nothing of pas stays in between.
//!
//! In the new namespace every mount is read-only except the directories it is given (the
//! cell's directory and the agent's `TMPDIR`), which are bind-mounted over themselves and
//! left writable. The flags a mount had (`nosuid`, `nodev`, `noexec`, atime) are kept.
//! Writes to devices (`/dev/null`, a terminal) still work: a read-only mount forbids
//! changing files, not writing to a device. Nothing changes outside the namespace, and it
//! ends with its last process. It takes `CAP_SYS_ADMIN` (root); the caller refuses
//! level_2 before it gets here when pas is not root.

use std::convert::Infallible;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use rustix::mount::{mount_bind, mount_change, mount_remount, MountFlags, MountPropagationFlags};

/// The hidden command word of the trampoline.
pub const WORD: &str = "__isolate";

/// The arguments the supervisor gives the trampoline: `__isolate UID GID N DIR... --
/// PROGRAM ARGS...` (`-` for an id left as it is).
pub fn args(
    uid: Option<u32>,
    gid: Option<u32>,
    writable: &[&Path],
    program: &str,
    rest: &[String],
) -> Vec<OsString> {
    let id = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
    let mut out: Vec<OsString> = vec![WORD.into(), id(uid).into(), id(gid).into()];
    out.push(writable.len().to_string().into());
    out.extend(writable.iter().map(|p| p.as_os_str().to_owned()));
    out.push("--".into());
    out.push(program.into());
    out.extend(rest.iter().map(OsString::from));
    out
}

/// The trampoline, when this process was started as one (`pas __isolate ...`): sets up the
/// namespace and replaces itself with the agent's command. Returns only on failure, with
/// the message for stderr; `None` when the arguments are not the trampoline's.
pub fn run_if_asked() -> Option<String> {
    if_asked(WORD, "cannot isolate the agent (level_2)", trampoline)
}

/// Runs `trampoline` with the rest of the arguments when the first is `word`; it returns
/// only on failure, as the message for stderr, `failed` in front.
pub(crate) fn if_asked(
    word: &str,
    failed: &str,
    trampoline: fn(&[OsString]) -> io::Result<Infallible>,
) -> Option<String> {
    let mut argv = std::env::args_os().skip(1);
    if argv.next()? != word {
        return None;
    }
    let rest: Vec<OsString> = argv.collect();
    Some(match trampoline(&rest) {
        Ok(never) => match never {},
        Err(e) => format!("{failed}: {e}"),
    })
}

fn trampoline(args: &[OsString]) -> io::Result<Infallible> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, "bad __isolate arguments");
    let id = |a: Option<&OsString>| -> io::Result<Option<u32>> {
        match a.and_then(|a| a.to_str()).ok_or_else(bad)? {
            "-" => Ok(None),
            n => n.parse().map(Some).map_err(|_| bad()),
        }
    };
    let uid = id(args.first())?;
    let gid = id(args.get(1))?;
    let n: usize = args
        .get(2)
        .and_then(|a| a.to_str())
        .and_then(|a| a.parse().ok())
        .ok_or_else(bad)?;
    let writable: Vec<PathBuf> = args
        .get(3..3 + n)
        .ok_or_else(bad)?
        .iter()
        .map(PathBuf::from)
        .collect();
    let command = args.get(3 + n..).ok_or_else(bad)?;
    let (Some(sep), Some(program)) = (command.first(), command.get(1)) else {
        return Err(bad());
    };
    if sep != "--" {
        return Err(bad());
    }
    let cwd = std::env::current_dir()?;
    enter(&writable)?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(&command[2..]).current_dir(&cwd);
    if let Some(gid) = gid {
        cmd.gid(gid);
    }
    if let Some(uid) = uid {
        cmd.uid(uid);
    }
    Err(cmd.exec())
}

/// One line of `/proc/self/mountinfo`: the mount point and its per-mount options.
fn mounts() -> io::Result<Vec<(PathBuf, Vec<String>)>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = unescape(f.get(4)?);
            let opts = f.get(5)?.split(',').map(str::to_string).collect();
            Some((PathBuf::from(point), opts))
        })
        .collect())
}

/// A mountinfo path: spaces, tabs, newlines and backslashes are written in octal.
pub(crate) fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Makes a mount namespace for this process: private propagation (nothing leaks back
/// out), `writable` bound over themselves, then every mount remounted read-only but those.
pub(crate) fn enter(writable: &[PathBuf]) -> io::Result<()> {
    // unshare(2) with CLONE_NEWNS only: the reason rustix asks for `unshare_unsafe` is
    // CLONE_FILES (a file table other threads may still use), which is not asked for here,
    // and this process has a single thread.
    #[allow(deprecated)]
    rustix::thread::unshare(rustix::thread::UnshareFlags::NEWNS)
        .map_err(|e| io::Error::other(format!("unshare(CLONE_NEWNS): {e}")))?;
    mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| io::Error::other(format!("making / private: {e}")))?;
    let writable: Vec<PathBuf> = writable
        .iter()
        .map(|w| w.canonicalize().unwrap_or_else(|_| w.clone()))
        .collect();
    for w in &writable {
        mount_bind(w, w).map_err(|e| io::Error::other(format!("binding {}: {e}", w.display())))?;
    }
    for (point, opts) in mounts()? {
        let mut flags = MountFlags::BIND;
        for (word, flag) in [
            ("nosuid", MountFlags::NOSUID),
            ("nodev", MountFlags::NODEV),
            ("noexec", MountFlags::NOEXEC),
            ("noatime", MountFlags::NOATIME),
            ("nodiratime", MountFlags::NODIRATIME),
            ("relatime", MountFlags::RELATIME),
        ] {
            if opts.iter().any(|o| o == word) {
                flags |= flag;
            }
        }
        if !writable.contains(&point) {
            flags |= MountFlags::RDONLY;
        }
        match mount_remount(&point, flags, "") {
            Ok(()) => {}
            // Gone meanwhile, or hidden under another mount: nothing to reach there.
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => {
                return Err(io::Error::other(format!(
                    "remounting {} read-only: {e}",
                    point.display()
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        for (raw, want) in [
            ("/", "/"),
            ("/a\\040b", "/a b"),
            ("/x\\011y\\134z", "/x\ty\\z"),
            ("/odd\\", "/odd\\"),
        ] {
            assert_eq!(unescape(raw), want, "{raw}");
        }
    }

    #[test]
    fn the_trampolines_arguments_read_back() {
        let a = args(
            Some(1000),
            None,
            &[Path::new("/r/c"), Path::new("/tmp/t")],
            "sh",
            &["-c".into(), "echo hi".into()],
        );
        let words: Vec<&str> = a.iter().map(|w| w.to_str().unwrap()).collect();
        assert_eq!(
            words,
            [
                "__isolate",
                "1000",
                "-",
                "2",
                "/r/c",
                "/tmp/t",
                "--",
                "sh",
                "-c",
                "echo hi"
            ]
        );
    }
}
