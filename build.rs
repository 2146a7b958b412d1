//! Link options of one binary: `pas-supervise`. One runs per agent, for as long as the
//! agent lives, so what each copy dirties is what each further agent costs
//! (docs/design.md, Processes and revival, has the figures).
//!
//! - **Not position-independent**: in a PIE the dynamic loader writes the load address
//!   into every pointer of `.data.rel.ro` (vtables, string and panic-location tables),
//!   making those pages private to each process. Without PIE the linker resolves them once
//!   and the pages stay clean and shared between all supervisors.
//! - **Static, on glibc**: no dynamic loader runs, and no shared library (libc, libgcc_s,
//!   ld.so itself) gets its relocated data, GOT and loader state written in every process.
//!   The supervisor calls no NSS function (users come from `/etc/passwd` read as text,
//!   `accounts`), so glibc's static build does everything it needs. The C libraries Rust
//!   names come after its `-Bdynamic`, and `-lgcc_s` has no static archive: a directory in
//!   `OUT_DIR`, searched for this program only, holds a linker script per library naming
//!   the static archives ([`STAND_INS`]). When the C toolchain lacks one (Debian's
//!   libc6-dev and gcc have them all), or the build is a cross build, the program is linked
//!   dynamically without PIE, as before, and a warning says why.
//!
//! `pas` itself and the other programs stay dynamic PIE, with ASLR of the executable.
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = "pas-supervise";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    if target("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    println!("cargo:rustc-link-arg-bin={BIN}=-no-pie");
    if target("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    match static_glibc() {
        Ok(dir) => {
            println!("cargo:rustc-link-arg-bin={BIN}=-static");
            println!("cargo:rustc-link-arg-bin={BIN}=-L{}", dir.display());
        }
        Err(why) => println!("cargo:warning={BIN} is linked dynamically: {why}"),
    }
}

/// The libraries Rust's standard library names on its link line for glibc targets, each
/// with the static archives that stand in for it: libgcc_s has no static archive and is
/// what gcc links for `-static` instead (libgcc_eh, libgcc); libc needs libgcc too.
const STAND_INS: &[(&str, &[&str])] = &[
    ("gcc_s", &["libgcc_eh.a", "libgcc.a"]),
    ("c", &["libc.a", "libgcc_eh.a", "libgcc.a"]),
    ("m", &["libm.a"]),
    ("pthread", &["libpthread.a"]),
    ("dl", &["libdl.a"]),
    ("rt", &["librt.a"]),
    ("util", &["libutil.a"]),
];

/// A directory of linker scripts, one `lib<name>.a` per library of [`STAND_INS`], each a
/// `GROUP` of the C toolchain's static archives. Rust asks for those libraries after
/// `-Bdynamic`, so `-static` alone would still link them as shared objects; searched first,
/// these scripts are what the linker finds instead. Why not, when an archive is missing.
fn static_glibc() -> Result<PathBuf, String> {
    if std::env::var("TARGET").ok() != std::env::var("HOST").ok() {
        return Err("a cross build (the host's C toolchain is asked about archives)".into());
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("cargo set no OUT_DIR")?);
    let dir = out.join("static-link");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    for (name, archives) in STAND_INS {
        let mut group = String::from("GROUP(");
        for archive in *archives {
            group.push_str(&format!(" \"{}\"", found(archive)?.display()));
        }
        group.push_str(" )\n");
        let script = dir.join(format!("lib{name}.a"));
        std::fs::write(&script, group)
            .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
    }
    Ok(dir)
}

/// Where the C compiler finds `archive`: it prints the bare name when it has none.
fn found(archive: &str) -> Result<PathBuf, String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = Command::new(&cc)
        .arg(format!("-print-file-name={archive}"))
        .output()
        .map_err(|e| format!("cannot run {cc}: {e}"))?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && path.is_absolute() && Path::new(&path).exists() {
        Ok(path)
    } else {
        Err(format!(
            "{cc} finds no {archive} (install libc6-dev and gcc for a static supervisor)"
        ))
    }
}
