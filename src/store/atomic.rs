//! Directory handles and atomic file replacement.
//!
//! Invariants:
//! - every path below the missions root is opened relative to a directory handle with
//!   `O_NOFOLLOW`, so a symlink planted inside the root (an agent file, a `tasks/`
//!   directory) is never followed;
//! - a file is replaced by writing a temporary file in the same directory, fsyncing it,
//!   renaming it over the old name and fsyncing the directory: a reader sees the old
//!   bytes or the new bytes, never a torn or empty file, even when the writer is killed;
//! - a failed write or fsync leaves the old file in place and is reported;
//! - modes are set explicitly with `fchmod`, so they do not depend on the umask;
//! - a replaced file keeps its owner when the writer may keep it (root rewriting another
//!   user's file), and the group and world write bits it had: a rewrite by pas never makes
//!   a file look as if only pas could have written it, so the trust checks
//!   (`crate::ops::trust`) still see who could have planted its content;
//! - every descriptor is close-on-exec.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{self as rfs, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

/// Mode of every file pas creates.
pub const FILE_MODE: u32 = 0o644;
/// Mode of every directory pas creates.
pub const DIR_MODE: u32 = 0o755;
/// Mode of an agent's output log: what a program prints may hold secrets, so the world may
/// not read it; the group (operators) may.
pub const LOG_MODE: u32 = 0o640;

/// Creates `path` and any missing parents, each with mode `mode` set explicitly (the umask
/// neither widens nor narrows it): for the missions root and directories the user names
/// outside it (`checkpoint restore --to`).
pub fn create_dir_all(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(dir) = at.filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::symlink_metadata(dir) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(dir),
            Err(e) => return Err(e),
        }
        at = dir.parent();
    }
    for dir in missing.into_iter().rev() {
        match std::fs::create_dir(dir) {
            Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a write must reach the disk before the command reports success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and its directory: the write survives a power loss.
    Durable,
    /// Skip the fsyncs (still atomic): for heartbeat stamps, where losing the last one on
    /// power loss is harmless.
    Relaxed,
}

fn mode(bits: u32) -> Mode {
    Mode::from_raw_mode(bits)
}

/// Opens a directory the user named (the missions root); symlinks here are the user's choice.
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Why pas refused a file inside the root, carried inside an `io::Error`: the layout is
/// broken (or hostile), not the disk, so it is a data error with a fix, never a hang or a
/// read of gigabytes.
#[derive(Debug)]
pub enum Refused {
    /// A path component is a symlink, or not a directory where one is expected.
    Link(String),
    /// A FIFO, socket, device or directory where a regular file belongs: reading a FIFO
    /// blocks forever and a device never ends.
    NotRegular {
        /// The file's name.
        name: String,
        /// What it is instead ("FIFO", "character device", ...).
        what: &'static str,
    },
    /// Larger than pas accepts for this kind of file.
    TooLarge {
        /// The file's name.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// The limit for its kind.
        limit: u64,
    },
    /// A lock file with more than one name: another name could be a file outside the root
    /// that pas would then write to.
    HardLinked {
        /// The file's name.
        name: String,
        /// How many names the inode has.
        links: u64,
    },
}

impl Refused {
    /// How to fix it, for the error's hint line.
    pub fn hint(&self) -> &'static str {
        match self {
            Refused::Link(_) => {
                "replace the link with a real file or directory (`pas validate` lists them)"
            }
            Refused::NotRegular { .. } => {
                "remove it, or replace it with the regular file it should be"
            }
            Refused::TooLarge { .. } => {
                "trim the file, or move what makes it large into artifacts/"
            }
            Refused::HardLinked { .. } => "remove the lock file; pas creates a fresh one",
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Link(name) => write!(
                f,
                "{name} is a symbolic link or not a directory; pas never follows links inside the root"
            ),
            Refused::NotRegular { name, what } => write!(
                f,
                "{name} is a {what}, not a regular file; pas reads only regular files"
            ),
            Refused::TooLarge { name, size, limit } => write!(
                f,
                "{name} is {size} bytes, over the limit of {limit} bytes for this kind of file"
            ),
            Refused::HardLinked { name, links } => write!(
                f,
                "{name} has {links} hard links; pas uses a lock file only when it has exactly one"
            ),
        }
    }
}

impl std::error::Error for Refused {}

/// The refusal inside an I/O error, if it is one.
pub fn refused(err: &io::Error) -> Option<&Refused> {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<Refused>())
}

fn link_error(name: &str) -> io::Error {
    io::Error::other(Refused::Link(name.to_string()))
}

/// What a file type is called in messages.
fn type_name(file_type: rfs::FileType) -> &'static str {
    match file_type {
        rfs::FileType::RegularFile => "regular file",
        rfs::FileType::Directory => "directory",
        rfs::FileType::Symlink => "symbolic link",
        rfs::FileType::Fifo => "FIFO",
        rfs::FileType::Socket => "socket",
        rfs::FileType::CharacterDevice => "character device",
        rfs::FileType::BlockDevice => "block device",
        _ => "special file",
    }
}

/// Checks that an opened `name` is a regular file no larger than `limit`; returns its size.
pub fn check_regular(fd: BorrowedFd<'_>, name: &str, limit: u64) -> io::Result<u64> {
    let stat = rfs::fstat(fd)?;
    let file_type = rfs::FileType::from_raw_mode(stat.st_mode);
    if file_type != rfs::FileType::RegularFile {
        return Err(io::Error::other(Refused::NotRegular {
            name: name.to_string(),
            what: type_name(file_type),
        }));
    }
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    if size > limit {
        return Err(too_large(name, size, limit));
    }
    Ok(size)
}

fn too_large(name: &str, size: u64, limit: u64) -> io::Error {
    io::Error::other(Refused::TooLarge {
        name: name.to_string(),
        size,
        limit,
    })
}

/// Opens `name` in `dir` for reading without following a link and without blocking (a
/// FIFO opens at once and is then refused by [`check_regular`]); `None` when absent.
fn open_for_reading(dir: BorrowedFd<'_>, name: &str) -> io::Result<Option<OwnedFd>> {
    match rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(Errno::LOOP) => Err(link_error(name)),
        Err(e) => Err(e.into()),
    }
}

/// Opens `name` inside `dir` as a directory, refusing symlinks.
pub fn open_subdir(dir: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    match rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(fd),
        Err(Errno::LOOP) | Err(Errno::NOTDIR) => Err(link_error(name)),
        Err(e) => Err(e.into()),
    }
}

/// Opens `name` inside `dir`, creating it (mode 0755) when missing.
pub fn ensure_subdir(dir: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    match open_subdir(dir, name) {
        Ok(fd) => Ok(fd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match rfs::mkdirat(dir, name, mode(DIR_MODE)) {
                Ok(()) => {
                    let fd = open_subdir(dir, name)?;
                    rfs::fchmod(&fd, mode(DIR_MODE))?;
                    Ok(fd)
                }
                Err(Errno::EXIST) => open_subdir(dir, name),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e),
    }
}

/// Reads `name` inside `dir`; `Ok(None)` when it does not exist. Symlinks, anything but a
/// regular file, and files over `limit` bytes are refused.
pub fn read_at(dir: BorrowedFd<'_>, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let Some(fd) = open_for_reading(dir, name)? else {
        return Ok(None);
    };
    let size = check_regular(fd.as_fd(), name, limit)?;
    // One read of the size fstat gave, plus room to see that the file grew; a regular
    // file's read comes back short only at its end. Read into the spare capacity: zeroing
    // the buffer first cost as much as parsing a tenth of the file.
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).max(4096) + 1);
    loop {
        if bytes.len() == bytes.capacity() {
            if bytes.len() as u64 > limit {
                return Err(too_large(name, bytes.len() as u64, limit));
            }
            bytes.reserve(bytes.len());
        }
        match rustix::io::read(&fd, rustix::buffer::spare_capacity(&mut bytes)) {
            Ok(0) => break,
            Ok(_) if bytes.len() < bytes.capacity() => break,
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if bytes.len() as u64 > limit {
        return Err(too_large(name, bytes.len() as u64, limit));
    }
    Ok(Some(bytes))
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary name that no other process or thread uses: hidden, and not ending in `.json`,
/// so listings never mistake a leftover for a document.
fn temp_name(name: &str) -> String {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".{name}.{}.{n}.tmp", std::process::id())
}

/// What a replacement keeps of the file it replaces.
#[derive(Debug, Clone, Copy, Default)]
struct Kept {
    /// Its owner and group, when they are not the writer's.
    owner: Option<(u32, u32)>,
    /// Its group and world write bits.
    loose: u32,
}

/// What replacing `name` in `dir` keeps of it (nothing when it does not exist).
fn kept(dir: BorrowedFd<'_>, name: &str) -> Kept {
    let Ok(st) = rfs::statat(dir, name, rfs::AtFlags::SYMLINK_NOFOLLOW) else {
        return Kept::default();
    };
    let me = rustix::process::geteuid().as_raw();
    Kept {
        owner: (st.st_uid != me).then_some((st.st_uid, st.st_gid)),
        loose: st.st_mode & 0o022,
    }
}

/// Writes `bytes` to a fresh temporary file in `dir` and returns its name, with what it
/// keeps of the file it replaces (the owner, when the writer may give it away).
fn write_temp(
    dir: BorrowedFd<'_>,
    name: &str,
    bytes: &[u8],
    durability: Durability,
    file_mode: u32,
    kept: Kept,
) -> io::Result<String> {
    let tmp = temp_name(name);
    let fd = rfs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        mode(file_mode & 0o600),
    )?;
    let result = (|| {
        if let Some((uid, gid)) = kept.owner {
            // Only root may give a file away; anyone else writes it as their own, as before.
            let _ = rfs::fchown(
                &fd,
                Some(rustix::process::Uid::from_raw(uid)),
                Some(rustix::process::Gid::from_raw(gid)),
            );
        }
        rfs::fchmod(&fd, mode(file_mode | kept.loose))?;
        let mut file = File::from(fd);
        file.write_all(bytes)?;
        if durability == Durability::Durable {
            file.sync_all()?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = rfs::unlinkat(dir, tmp.as_str(), rfs::AtFlags::empty());
            Err(e)
        }
    }
}

/// Replaces `name` in `dir` with `bytes`, atomically.
pub fn replace_at(
    dir: BorrowedFd<'_>,
    name: &str,
    bytes: &[u8],
    durability: Durability,
) -> io::Result<()> {
    replace_at_mode(dir, name, bytes, durability, FILE_MODE)
}

/// [`replace_at`] with the file's mode given (a checkpoint artifact keeps its own).
pub fn replace_at_mode(
    dir: BorrowedFd<'_>,
    name: &str,
    bytes: &[u8],
    durability: Durability,
    file_mode: u32,
) -> io::Result<()> {
    let tmp = write_temp(dir, name, bytes, durability, file_mode, kept(dir, name))?;
    if let Err(e) = rfs::renameat(dir, tmp.as_str(), dir, name) {
        let _ = rfs::unlinkat(dir, tmp.as_str(), rfs::AtFlags::empty());
        return Err(e.into());
    }
    if durability == Durability::Durable {
        rfs::fsync(dir)?;
    }
    Ok(())
}

/// Replaces `name` in `dir` with `bytes`, atomically, writing the temporary file in
/// `tmp_dir` (same filesystem) so that leftovers of killed writers collect in one place the
/// next writer can clear.
pub fn replace_via(
    tmp_dir: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    name: &str,
    bytes: &[u8],
    durability: Durability,
    file_mode: u32,
) -> io::Result<()> {
    let tmp = write_temp(tmp_dir, name, bytes, durability, file_mode, kept(dir, name))?;
    if let Err(e) = rfs::renameat(tmp_dir, tmp.as_str(), dir, name) {
        let _ = rfs::unlinkat(tmp_dir, tmp.as_str(), rfs::AtFlags::empty());
        return Err(e.into());
    }
    if durability == Durability::Durable {
        rfs::fsync(dir)?;
    }
    Ok(())
}

/// Whether `name` is one of pas's temporary files (see `temp_name`).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Creates `name` in `dir` with `bytes`, atomically; fails with `AlreadyExists` when the name
/// is taken (by a file, a directory or a link), so two creators never overwrite each other.
pub fn create_at(dir: BorrowedFd<'_>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(
        dir,
        name,
        bytes,
        Durability::Durable,
        FILE_MODE,
        Kept::default(),
    )?;
    let renamed = rfs::renameat_with(dir, tmp.as_str(), dir, name, RenameFlags::NOREPLACE);
    if let Err(e) = renamed {
        let _ = rfs::unlinkat(dir, tmp.as_str(), rfs::AtFlags::empty());
        return Err(e.into());
    }
    rfs::fsync(dir)?;
    Ok(())
}

/// Removes the file `name` from `dir`; `Ok(false)` when it was not there.
pub fn remove_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<bool> {
    let removed = unlink_at(dir, name)?;
    if removed {
        rfs::fsync(dir)?;
    }
    Ok(removed)
}

/// Removes the file `name` from `dir` without syncing the directory; `Ok(false)` when it
/// was not there.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<bool> {
    match rfs::unlinkat(dir, name, rfs::AtFlags::empty()) {
        Ok(()) => Ok(true),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// fsyncs the file or directory `name` (a relative path, links refused) under `dir`.
pub fn sync_file_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rfs::fsync(&fd)?;
    Ok(())
}

/// Renames directory entry `from` to `to` inside `dir` (both names plain), refusing to
/// replace an existing `to`.
pub fn rename_noreplace(dir: BorrowedFd<'_>, from: &str, to: &str) -> io::Result<()> {
    rfs::renameat_with(dir, from, dir, to, RenameFlags::NOREPLACE)?;
    rfs::fsync(dir)?;
    Ok(())
}

/// The names in `dir` ending in `suffix`, not hidden, sorted. Entries that are not regular
/// files (links, directories) are skipped.
pub fn list_names(dir: BorrowedFd<'_>, suffix: &str) -> io::Result<Vec<String>> {
    Ok(names_of(list_entries(dir)?, suffix))
}

/// The sorted stems of `entries` ending in `suffix`, hidden names left out.
fn names_of(entries: Vec<Entry>, suffix: &str) -> Vec<String> {
    let mut names = Vec::new();
    // Every name, whatever it is: a FIFO, a directory or a link named like a document
    // must be read (and refused, loudly), not vanish from listings.
    for entry in entries {
        if !entry.name.starts_with('.') {
            if let Some(stem) = entry.name.strip_suffix(suffix) {
                names.push(stem.to_string());
            }
        }
    }
    names.sort();
    names
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry's name (lossy UTF-8).
    pub name: String,
    /// A regular file.
    pub is_file: bool,
    /// A directory (not a link to one).
    pub is_dir: bool,
    /// A symbolic link.
    pub is_symlink: bool,
}

/// Every entry of `dir` but `.` and `..`, unsorted.
pub fn list_entries(dir: BorrowedFd<'_>) -> io::Result<Vec<Entry>> {
    // `Dir::read_from` opens its own description of the directory (its own position).
    entries_of(&mut rfs::Dir::read_from(dir)?)
}

/// `dir`, opened by the caller and listed on its own descriptor (no second open of it, as
/// [`list_entries`] makes: three system calls fewer per directory of a fleet view): the
/// names ending in `suffix`, as [`list_names`] gives them, and the directory, whose
/// [`rfs::Dir::fd`] serves the `*at` calls that read its files.
pub fn list_names_owned(dir: OwnedFd, suffix: &str) -> io::Result<(Vec<String>, rfs::Dir)> {
    let mut listing = rfs::Dir::new(dir)?;
    let entries = entries_of(&mut listing)?;
    Ok((names_of(entries, suffix), listing))
}

/// The entries `listing` reads, but `.` and `..`.
fn entries_of(listing: &mut rfs::Dir) -> io::Result<Vec<Entry>> {
    let mut found = Vec::new();
    while let Some(entry) = listing.read() {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        found.push((name, entry.file_type()));
    }
    let dir = listing.fd()?;
    Ok(found
        .into_iter()
        .map(|(name, mut file_type)| {
            // A filesystem that does not say the type in its listing: ask for it.
            if file_type == rfs::FileType::Unknown {
                file_type = match rfs::statat(dir, name.as_str(), rfs::AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => rfs::FileType::from_raw_mode(st.st_mode),
                    Err(_) => rfs::FileType::Unknown,
                };
            }
            Entry {
                name,
                is_file: file_type == rfs::FileType::RegularFile,
                is_dir: file_type == rfs::FileType::Directory,
                is_symlink: file_type == rfs::FileType::Symlink,
            }
        })
        .collect())
}

/// Opens (creating with `file_mode` when missing) an append-only log in `dir`, refusing
/// links and anything but a regular file.
pub fn open_append(dir: BorrowedFd<'_>, name: &str, file_mode: u32) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::APPEND | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rfs::openat(
        dir,
        name,
        flags | OFlags::CREATE | OFlags::EXCL,
        mode(file_mode),
    ) {
        Ok(fd) => {
            rfs::fchmod(&fd, mode(file_mode))?;
            fd
        }
        Err(Errno::EXIST) => match rfs::openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => return Err(link_error(name)),
            Err(e) => return Err(e.into()),
        },
        Err(Errno::LOOP) => return Err(link_error(name)),
        Err(e) => return Err(e.into()),
    };
    check_regular(fd.as_fd(), name, u64::MAX)?;
    Ok(File::from(fd))
}

/// The last complete line of an append-only log (without its newline). A torn tail, left
/// by a writer killed mid-append, is cut off first, so the next append starts on a fresh
/// line. The caller holds the log's lock.
pub fn last_line_repairing(file: &mut File) -> io::Result<Option<Vec<u8>>> {
    use std::io::{Seek, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut window: u64 = 4096;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::with_capacity((len - start) as usize);
        Read::by_ref(file)
            .take(len - start)
            .read_to_end(&mut tail)?;
        // Cut a torn tail back to the last newline.
        let complete_end = match tail.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None if start == 0 => 0,
            None => {
                window *= 2;
                continue;
            }
        };
        if complete_end < tail.len() {
            file.set_len(start + complete_end as u64)?;
        }
        let body = &tail[..complete_end.saturating_sub(1)];
        match body.iter().rposition(|b| *b == b'\n') {
            Some(i) => return Ok(Some(body[i + 1..].to_vec())),
            None if start == 0 => return Ok((!body.is_empty()).then(|| body.to_vec())),
            None => window *= 2,
        }
    }
}

/// Appends `bytes` with one `write` (the file is in append mode), optionally fsynced.
pub fn append(file: &mut File, bytes: &[u8], durability: Durability) -> io::Result<()> {
    file.write_all(bytes)?;
    if durability == Durability::Durable {
        file.sync_data()?;
    }
    Ok(())
}

/// The bytes of `name` in `dir` from `offset` to the end; empty when it does not exist.
/// Anything but a regular file is refused.
pub fn read_from(dir: BorrowedFd<'_>, name: &str, offset: u64) -> io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let Some(fd) = open_for_reading(dir, name)? else {
        return Ok(Vec::new());
    };
    check_regular(fd.as_fd(), name, u64::MAX)?;
    let mut file = File::from(fd);
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically (temporary file beside it, fsync, rename, fsync of
/// the directory): for files outside the root, like `pas metrics --output`.
pub fn write_path_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let dir = open_root(parent)?;
    replace_at(dir.as_fd(), name, bytes, Durability::Durable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pas-atomic-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replace_then_read_round_trips_and_leaves_no_temp() {
        let dir = tempdir();
        let fd = open_root(&dir).unwrap();
        replace_at(fd.as_fd(), "a.json", b"{\"x\":1}\n", Durability::Durable).unwrap();
        replace_at(fd.as_fd(), "a.json", b"{\"x\":2}\n", Durability::Relaxed).unwrap();
        assert_eq!(
            read_at(fd.as_fd(), "a.json", 1 << 20).unwrap().unwrap(),
            b"{\"x\":2}\n"
        );
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_log_tail_is_cut_and_the_last_line_found() {
        let dir = tempdir();
        let fd = open_root(&dir).unwrap();
        let mut log = open_append(fd.as_fd(), "e.jsonl", FILE_MODE).unwrap();
        assert_eq!(last_line_repairing(&mut log).unwrap(), None);
        append(&mut log, b"one\ntwo\nhalf-writ", Durability::Relaxed).unwrap();
        assert_eq!(last_line_repairing(&mut log).unwrap().unwrap(), b"two");
        append(&mut log, b"three\n", Durability::Relaxed).unwrap();
        assert_eq!(
            std::fs::read(dir.join("e.jsonl")).unwrap(),
            b"one\ntwo\nthree\n"
        );
        let long = vec![b'x'; 10_000];
        append(&mut log, &long, Durability::Relaxed).unwrap();
        append(&mut log, b"\n", Durability::Relaxed).unwrap();
        assert_eq!(last_line_repairing(&mut log).unwrap().unwrap(), long);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn create_refuses_existing_names() {
        let dir = tempdir();
        let fd = open_root(&dir).unwrap();
        create_at(fd.as_fd(), "a.json", b"1").unwrap();
        let err = create_at(fd.as_fd(), "a.json", b"2").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            read_at(fd.as_fd(), "a.json", 1 << 20).unwrap().unwrap(),
            b"1"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn symlinks_are_not_followed() {
        let dir = tempdir();
        std::fs::write(dir.join("target"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.join("target"), dir.join("link.json")).unwrap();
        std::fs::create_dir(dir.join("real")).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("sub")).unwrap();
        let fd = open_root(&dir).unwrap();
        assert!(read_at(fd.as_fd(), "link.json", 1 << 20).is_err());
        assert!(open_subdir(fd.as_fd(), "sub").is_err());
        // Replacing a link swaps the link itself; the target is untouched.
        replace_at(fd.as_fd(), "link.json", b"new", Durability::Durable).unwrap();
        assert_eq!(std::fs::read(dir.join("target")).unwrap(), b"secret");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn modes_ignore_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir();
        let fd = open_root(&dir).unwrap();
        let old = rustix::process::umask(Mode::from_raw_mode(0o077));
        replace_at(fd.as_fd(), "m.json", b"{}", Durability::Durable).unwrap();
        ensure_subdir(fd.as_fd(), "sub").unwrap();
        rustix::process::umask(old);
        let file_mode = std::fs::metadata(dir.join("m.json"))
            .unwrap()
            .permissions()
            .mode();
        let dir_mode = std::fs::metadata(dir.join("sub"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(file_mode & 0o777, FILE_MODE);
        assert_eq!(dir_mode & 0o777, DIR_MODE);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
