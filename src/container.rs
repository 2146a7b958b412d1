//! Isolation level_3: the agent runs in a container made by `crun` from an OCI bundle pas
//! writes itself (`config.json`), with no image: the container's root is the host's file
//! system, read-only, with the cell's directory writable, a private `/tmp` (the agent's
//! `TMPDIR`), a fresh `/proc`, `/dev` and `/sys`, its own PID, IPC, UTS and mount
//! namespaces, and its own network namespace (loopback only) when `config/isolation.json`
//! says `network_isolation`. pas sets no rlimits in the bundle: the agent inherits the
//! supervisor's, which may be all this host lets a process have.
//!
//! crun is told to leave cgroups alone (`--cgroup-manager=disabled`): the supervisor has
//! already joined the agent's group ([`crate::ops::limits`]), so the container starts in it
//! and its memory, CPU and process limits and counters are the same as at level_1. crun
//! refuses a hybrid cgroup host (v1 controllers with a v2 mount that has controllers)
//! even then, so the trampoline `pas __contain` first makes a mount namespace of its own
//! ([`crate::namespace::enter`]: every mount read-only but the cell's directory and the
//! agent's temporary directory), unmounts the v2 hierarchy there, binds `/` under the bundle
//! as the container's root, and then becomes crun (`exec`, same pid). crun's exit status is
//! the agent's (128 + the signal for a signal). Level_3 takes root, as level_2 does.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

/// The hidden command word of the trampoline.
pub const WORD: &str = "__contain";

/// The container runtime pas drives.
pub const RUNTIME: &str = "crun";

/// The init that runs as the container's pid 1 when installed: it passes signals on to
/// the agent and reaps orphans (a pid 1 ignores `SIGTERM` it has no handler for).
pub const INIT: &str = "catatonit";

/// Where `program` is on `PATH`, when it is there.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok() && p.is_file())
}

/// Where crun is on `PATH`, when it is there.
pub fn runtime() -> Option<PathBuf> {
    on_path(RUNTIME)
}

/// Why level_3 cannot run here (`None`: it can): pas is not root, or crun is not on `PATH`.
pub fn unavailable() -> Option<String> {
    let uid = rustix::process::geteuid();
    if !uid.is_root() {
        return Some(format!(
            "isolation level_3 needs root to make the agent's namespaces and container, and pas runs as uid {}",
            uid.as_raw()
        ));
    }
    if runtime().is_none() {
        return Some(format!(
            "isolation level_3 runs agents with the container runtime {RUNTIME}, which is not on PATH (podman and docker are not used: they need an image, and podman's crun sets rlimits a confined host may refuse)"
        ));
    }
    None
}

/// One run's bundle: a directory pas owns, holding `config.json`, the container's root
/// (`rootfs`, where the trampoline binds `/`) and crun's state (`state`).
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle's directory.
    pub dir: PathBuf,
    /// The container's id for crun (unique on this host while the run lasts).
    pub id: String,
}

/// The name of the container's `/tmp` in the run's temporary directory.
pub const TMP: &str = "tmp";

/// Lays out a run's temporary directory `dir` (fresh, pas's own) for a container: `tmp`,
/// the container's `/tmp`, owned by `owner` (uid, gid) when given, and `oci`, the bundle,
/// pas's alone; returns the bundle, its id made of the directory's name.
pub fn prepare(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<Bundle> {
    use std::os::unix::fs::DirBuilderExt;
    let tmp = dir.join(TMP);
    std::fs::DirBuilder::new().mode(0o700).create(&tmp)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))?;
    }
    let bundle = dir.join("oci");
    std::fs::DirBuilder::new().mode(0o700).create(&bundle)?;
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().replace(['@', '/'], "-"))
        .unwrap_or_else(|| "pas".to_string());
    Ok(Bundle { dir: bundle, id })
}

/// What the container is made of besides the command.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    /// The directory the agent may write (its cell's), at the same path inside.
    pub writable: &'a Path,
    /// The host directory mounted as the container's `/tmp`.
    pub tmp: &'a Path,
    /// The user and group the agent runs as (`None`: pas's own).
    pub ids: (Option<u32>, Option<u32>),
    /// Whether the agent gets a network namespace of its own (loopback only).
    pub no_network: bool,
    /// The container's host name.
    pub hostname: &'a str,
    /// The init to run the command under, as pid 1 ([`INIT`]; `None`: the command is pid 1).
    pub init: Option<&'a Path>,
}

/// The capabilities a root agent keeps in its container: those container engines give by
/// default (no `CAP_SYS_ADMIN`, `CAP_SYS_PTRACE`, `CAP_NET_ADMIN`, module loading...).
const CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The OCI `config.json` of a run of `cmd` (its program, arguments, environment and
/// working directory; `TMPDIR` becomes `/tmp`), confined as `spec` says.
pub fn config(cmd: &Command, spec: &Spec<'_>, rootfs: &Path) -> io::Result<Value> {
    let text = |s: &std::ffi::OsStr| {
        s.to_str().map(str::to_string).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{s:?} is not UTF-8, which an OCI config cannot hold"),
            )
        })
    };
    let mut args = match spec.init {
        Some(init) => vec![text(init.as_os_str())?, "--".to_string()],
        None => Vec::new(),
    };
    args.push(text(cmd.get_program())?);
    for a in cmd.get_args() {
        args.push(text(a)?);
    }
    let mut env = Vec::new();
    for (k, v) in cmd.get_envs() {
        let Some(v) = v else { continue };
        let k = text(k)?;
        let v = if k == "TMPDIR" {
            "/tmp".to_string()
        } else {
            text(v)?
        };
        env.push(format!("{k}={v}"));
    }
    let cwd = match cmd.get_current_dir() {
        Some(d) => text(d.as_os_str())?,
        None => text(spec.writable.as_os_str())?,
    };
    let uid = spec.ids.0.unwrap_or(0);
    let gid = spec.ids.1.unwrap_or(0);
    // Root keeps the engines' default set; any other user gets none.
    let caps: Vec<&str> = if uid == 0 { CAPS.to_vec() } else { Vec::new() };
    let writable = text(spec.writable.as_os_str())?;
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "mount"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
    ];
    if spec.no_network {
        namespaces.push(json!({"type": "network"}));
    }
    let hostname: String = spec.hostname.chars().take(63).collect();
    let mut config = json!({
        "ociVersion": "1.0.0",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
                "inheritable": [], "ambient": [],
            },
            "noNewPrivileges": true,
        },
        "root": {"path": text(rootfs.as_os_str())?, "readonly": true},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
                "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/tmp", "type": "bind", "source": text(spec.tmp.as_os_str())?,
                "options": ["bind", "rw", "nosuid", "nodev"]},
            // Again after /tmp, which hides a cell directory below it.
            {"destination": writable, "type": "bind", "source": writable,
                "options": ["rbind", "rw"]},
        ],
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    });
    if spec.no_network {
        // A sysfs of the container's own network namespace; sharing the host's network,
        // the host's /sys stays, read-only like every other mount.
        let sys = json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"]});
        if let Some(m) = config["mounts"].as_array_mut() {
            m.insert(5, sys);
        }
    }
    Ok(config)
}

/// Writes the bundle of a run of `cmd` into `bundle.dir` and returns the command that
/// runs it: `pas __contain CRUN BUNDLE ID N WRITABLE...` (the trampoline, then crun),
/// without `cmd`'s environment (the container's is in the bundle) and without stdio,
/// which the caller sets.
pub fn wrap(cmd: &Command, spec: &Spec<'_>, bundle: &Bundle) -> io::Result<Command> {
    let crun = runtime().ok_or_else(|| io::Error::other(format!("{RUNTIME} is not on PATH")))?;
    let init = on_path(INIT);
    let spec = &Spec {
        init: init.as_deref(),
        ..spec.clone()
    };
    let rootfs = bundle.dir.join("rootfs");
    let state = bundle.dir.join("state");
    for d in [&rootfs, &state] {
        match std::fs::create_dir(d) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    let config = config(cmd, spec, &rootfs)?;
    std::fs::write(bundle.dir.join("config.json"), config.to_string())?;
    let exe = std::env::current_exe()?;
    let mut out = Command::new(exe);
    out.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        out.env("PATH", path);
    }
    let writable = [spec.writable, bundle.dir.parent().unwrap_or(spec.tmp)];
    out.args(args(&crun, &bundle.dir, &bundle.id, &writable));
    if let Some(dir) = cmd.get_current_dir() {
        out.current_dir(dir);
    }
    Ok(out)
}

/// Ends what is left of a run's container once crun is gone (killed: its container
/// lives on in its own session), and crun's record of it: `crun delete --force`, waited
/// for up to 5 seconds. Nothing to do when crun ended the container itself.
pub fn end(bundle: &Bundle) -> io::Result<()> {
    let state = bundle.dir.join("state");
    if !state.join(&bundle.id).exists() {
        return Ok(());
    }
    let crun = runtime().ok_or_else(|| io::Error::other(format!("{RUNTIME} is not on PATH")))?;
    let mut child = Command::new(crun)
        .arg("--root")
        .arg(&state)
        .args(["delete", "--force", &bundle.id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait()? {
            return if status.success() {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "{RUNTIME} delete --force {} failed: {status}",
                    bundle.id
                )))
            };
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "{RUNTIME} delete --force {} did not end within 5 s",
                bundle.id
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The trampoline's arguments.
fn args(crun: &Path, bundle: &Path, id: &str, writable: &[&Path]) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec![
        WORD.into(),
        crun.as_os_str().to_owned(),
        bundle.as_os_str().to_owned(),
        id.into(),
        writable.len().to_string().into(),
    ];
    out.extend(writable.iter().map(|p| p.as_os_str().to_owned()));
    out
}

/// The trampoline, when this process was started as one (`pas __contain ...`): prepares
/// the mount namespace crun runs in and replaces itself with crun. Returns only on
/// failure, with the message for stderr; `None` when the arguments are not the
/// trampoline's.
pub fn run_if_asked() -> Option<String> {
    crate::namespace::if_asked(
        WORD,
        "cannot run the agent's container (level_3)",
        trampoline,
    )
}

fn trampoline(args: &[OsString]) -> io::Result<std::convert::Infallible> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, "bad __contain arguments");
    let [crun, bundle, id, n, rest @ ..] = args else {
        return Err(bad());
    };
    let n: usize = n.to_str().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
    if rest.len() != n {
        return Err(bad());
    }
    let writable: Vec<PathBuf> = rest.iter().map(PathBuf::from).collect();
    let bundle = PathBuf::from(bundle);
    crate::namespace::enter(&writable)?;
    // crun refuses a hybrid host; the v2 mount goes, in this namespace only.
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let v1 = mounts
        .lines()
        .any(|l| l.split(' ').nth(2) == Some("cgroup"));
    if v1 {
        for line in mounts.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.get(2) == Some(&"cgroup2") {
                let point = crate::namespace::unescape(f[1]);
                rustix::mount::unmount(point.as_str(), rustix::mount::UnmountFlags::DETACH)
                    .map_err(|e| io::Error::other(format!("unmounting {point}: {e}")))?;
            }
        }
    }
    let rootfs = bundle.join("rootfs");
    rustix::mount::mount_bind_recursive("/", &rootfs)
        .map_err(|e| io::Error::other(format!("binding / to {}: {e}", rootfs.display())))?;
    let mut cmd = Command::new(crun);
    cmd.arg("--cgroup-manager=disabled")
        .arg("--root")
        .arg(bundle.join("state"))
        .arg("run")
        .arg("--bundle")
        .arg(&bundle)
        .arg(id);
    Err(cmd.exec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_carries_the_command_and_the_confinement() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hi"])
            .env_clear()
            .env("PATH", "/usr/bin")
            .env("TMPDIR", "/tmp/pas-x.1/tmp")
            .current_dir("/r/c");
        #[rustfmt::skip]
        let cases = [
            ("root, host network", (None, None), false, 14, 4),
            ("a user, own network", (Some(1000), Some(1000)), true, 0, 5),
        ];
        for (name, ids, no_network, caps, namespaces) in cases {
            let spec = Spec {
                writable: Path::new("/r/c"),
                tmp: Path::new("/tmp/pas-x.1/tmp"),
                ids,
                no_network,
                hostname: "a1",
                init: None,
            };
            let c = config(&cmd, &spec, Path::new("/tmp/pas-x.1/oci/rootfs")).unwrap();
            assert_eq!(
                c["process"]["args"],
                json!(["sh", "-c", "echo hi"]),
                "{name}"
            );
            assert_eq!(c["process"]["cwd"], "/r/c", "{name}");
            let env = c["process"]["env"].as_array().unwrap();
            assert!(env.contains(&json!("TMPDIR=/tmp")), "{name}: {env:?}");
            assert!(env.contains(&json!("PATH=/usr/bin")), "{name}");
            assert_eq!(c["process"]["user"]["uid"], ids.0.unwrap_or(0), "{name}");
            assert_eq!(
                c["process"]["capabilities"]["bounding"]
                    .as_array()
                    .unwrap()
                    .len(),
                caps,
                "{name}"
            );
            assert_eq!(c["root"]["readonly"], true, "{name}");
            assert!(c["process"].get("rlimits").is_none(), "{name}: no rlimits");
            let ns = c["linux"]["namespaces"].as_array().unwrap();
            assert_eq!(ns.len(), namespaces, "{name}");
            let mounts = c["mounts"].as_array().unwrap();
            let last = mounts.last().unwrap();
            assert_eq!(
                last["destination"], "/r/c",
                "{name}: the cell last, over /tmp"
            );
            assert!(mounts
                .iter()
                .any(|m| m["destination"] == "/tmp" && m["source"] == "/tmp/pas-x.1/tmp"));
        }
    }

    #[test]
    fn the_trampolines_arguments_name_the_runtime_bundle_and_writable_dirs() {
        let a = args(
            Path::new("/usr/bin/crun"),
            Path::new("/tmp/b"),
            "pas-c-a1.7",
            &[Path::new("/r/c"), Path::new("/tmp/t")],
        );
        let words: Vec<&str> = a.iter().map(|w| w.to_str().unwrap()).collect();
        assert_eq!(
            words,
            [
                WORD,
                "/usr/bin/crun",
                "/tmp/b",
                "pas-c-a1.7",
                "2",
                "/r/c",
                "/tmp/t"
            ]
        );
    }
}
