//! RAII locks on stable lock files.
//!
//! Invariants: a lock is an exclusive `flock` (std's `File::lock`) on a file under
//! `.pas/locks/` that is never deleted or renamed, so every process locks the same inode;
//! data files are never locked themselves (an atomic rename replaces their inode). The
//! descriptor is close-on-exec, so agents spawned while a lock is held never inherit it.
//! Dropping the guard unlocks.
//!
//! No wait is unbounded: a lock is taken within a deadline or the caller gets a [`Busy`]
//! error naming the process that holds it (from `/proc/locks`), so one stuck process
//! cannot freeze `status`, `check`, `revive` or the watch. A lock file that is not a
//! regular file with exactly one link is refused: a planted hard link would make pas write
//! a pid into a file outside the root.
//!
//! The cell lock is re-entrant within a thread: code that holds it may call code that takes
//! it again (the inner guard is a counter, the flock stays with the outermost guard). Other
//! threads and processes still exclude each other, because each opens its own descriptor.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

use super::atomic::{ensure_subdir, Refused, FILE_MODE};
use super::layout::{LOCKS_DIR, PAS_DIR};

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct LockGuard {
    held: Held,
}

#[derive(Debug)]
enum Held {
    /// This guard owns the locked descriptor.
    File(#[allow(dead_code)] File),
    /// A re-entrant hold of a lock this thread already has, by key in [`REENTRANT`].
    Shared(String),
}

thread_local! {
    /// Re-entrant locks this thread holds: key, the locked descriptor, how many guards.
    static REENTRANT: RefCell<HashMap<String, (File, usize)>> = RefCell::new(HashMap::new());
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Held::Shared(key) = &self.held {
            REENTRANT.with(|held| {
                let mut held = held.borrow_mut();
                if let Some(entry) = held.get_mut(key) {
                    entry.1 -= 1;
                    if entry.1 == 0 {
                        // Dropping the descriptor releases the flock.
                        held.remove(key);
                    }
                }
            });
        }
    }
}

/// Takes the re-entrant lock `name` in `dir`, known in this thread as `key`. Returns the
/// guard and whether this call took the flock (false: the thread already held it).
pub fn lock_reentrant(
    dir: BorrowedFd<'_>,
    name: &str,
    key: &str,
    wait: Duration,
) -> io::Result<(LockGuard, bool)> {
    let already = REENTRANT.with(|held| {
        let mut held = held.borrow_mut();
        match held.get_mut(key) {
            Some(entry) => {
                entry.1 += 1;
                true
            }
            None => false,
        }
    });
    if !already {
        let file = open_lock_file(dir, name)?;
        lock_within(&file, name, wait)?;
        REENTRANT.with(|held| held.borrow_mut().insert(key.to_string(), (file, 1)));
    }
    Ok((
        LockGuard {
            held: Held::Shared(key.to_string()),
        },
        !already,
    ))
}

/// Opens (creating when missing) the lock file `name` under `<dir>/.pas/locks/`.
fn open_lock_file(dir: BorrowedFd<'_>, name: &str) -> io::Result<File> {
    let pas = ensure_subdir(dir, PAS_DIR)?;
    let locks = ensure_subdir(std::os::fd::AsFd::as_fd(&pas), LOCKS_DIR)?;
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rfs::openat(
        &locks,
        name,
        flags | OFlags::CREATE | OFlags::EXCL,
        Mode::from_raw_mode(FILE_MODE),
    ) {
        Ok(fd) => {
            rfs::fchmod(&fd, Mode::from_raw_mode(FILE_MODE))?;
            fd
        }
        Err(Errno::EXIST) => match rfs::openat(&locks, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => return Err(io::Error::other(Refused::Link(name.to_string()))),
            Err(e) => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    let stat = rfs::fstat(&fd)?;
    if rfs::FileType::from_raw_mode(stat.st_mode) != rfs::FileType::RegularFile {
        return Err(io::Error::other(Refused::NotRegular {
            name: name.to_string(),
            what: "special file",
        }));
    }
    #[allow(clippy::useless_conversion)] // nlink is u32 on some targets
    let links = u64::from(stat.st_nlink);
    if links != 1 {
        return Err(io::Error::other(Refused::HardLinked {
            name: name.to_string(),
            links,
        }));
    }
    Ok(File::from(fd))
}

/// A lock another process kept past the caller's deadline.
#[derive(Debug)]
pub struct Busy {
    /// The lock file's name.
    pub name: String,
    /// The process holding it, when `/proc/locks` tells.
    pub holder: Option<u32>,
    /// How long the caller waited.
    pub waited: Duration,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.waited.as_secs_f64();
        match self.holder {
            Some(pid) => write!(f, "process {pid} has held it for more than {secs:.1}s"),
            None => write!(f, "another process has held it for more than {secs:.1}s"),
        }
    }
}

impl std::error::Error for Busy {}

/// The `Busy` inside an I/O error, if it is one.
pub fn busy(err: &io::Error) -> Option<&Busy> {
    err.get_ref().and_then(|inner| inner.downcast_ref::<Busy>())
}

/// Takes `file`'s flock, waiting at most `wait`. flock has no timeout of its own, and
/// polling `try_lock` is unfair under contention (the kernel hands a released lock to a
/// blocked waiter, never to a poller between its naps), so a contended lock is waited for
/// by a blocking `flock` on a helper thread, on a second descriptor of the same open file
/// description; the caller gives up at the deadline. A helper that gets the lock after its
/// caller gave up closes its descriptor, and the lock goes with the caller's.
fn lock_within(file: &File, name: &str, wait: Duration) -> io::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    let start = Instant::now();
    match file.try_lock() {
        Ok(()) => return Ok(()),
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
        Err(std::fs::TryLockError::WouldBlock) => {}
    }
    let busy = |waited| {
        io::Error::other(Busy {
            name: name.to_string(),
            holder: holder_of(file),
            waited,
        })
    };
    if wait.is_zero() {
        return Err(busy(start.elapsed()));
    }
    let waiter = file.try_clone()?;
    let abandoned = Arc::new(AtomicBool::new(false));
    let gave_up = Arc::clone(&abandoned);
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("pas-lock-wait".into())
        .spawn(move || {
            let got = waiter.lock();
            if !gave_up.load(Ordering::SeqCst) {
                let _ = tx.send(got);
            }
            // Dropping `waiter` closes this descriptor only; the lock stays with the
            // caller's descriptor while it is open, and goes when both are closed.
        })?;
    match rx.recv_timeout(wait.saturating_sub(start.elapsed())) {
        Ok(got) => got,
        Err(_) => {
            abandoned.store(true, Ordering::SeqCst);
            Err(busy(start.elapsed()))
        }
    }
}

/// The pid holding a flock on `file`, from `/proc/locks` (matched by device and inode).
fn holder_of(file: &File) -> Option<u32> {
    let stat = rfs::fstat(file.as_fd()).ok()?;
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(
        &text,
        rfs::major(stat.st_dev),
        rfs::minor(stat.st_dev),
        stat.st_ino,
    )
}

/// Finds the holder in `/proc/locks` text: lines like
/// `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`, device numbers in hex. Waiters
/// (`->` lines) are skipped.
fn holder_in(text: &str, major: u32, minor: u32, inode: u64) -> Option<u32> {
    let wanted = format!("{major:02x}:{minor:02x}:{inode}");
    text.lines()
        .filter(|line| !line.contains("->"))
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = fields.iter().position(|f| *f == wanted)?;
            fields.get(at.checked_sub(1)?)?.parse().ok()
        })
}

/// Takes the exclusive lock `name` in `dir`, waiting at most `wait` for another process.
pub fn lock(dir: BorrowedFd<'_>, name: &str, wait: Duration) -> io::Result<LockGuard> {
    let file = open_lock_file(dir, name)?;
    lock_within(&file, name, wait)?;
    Ok(LockGuard {
        held: Held::File(file),
    })
}

/// Takes the lock `name` in `dir` only if it is free right now.
pub fn try_lock(dir: BorrowedFd<'_>, name: &str) -> io::Result<Option<LockGuard>> {
    let file = open_lock_file(dir, name)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(LockGuard {
            held: Held::File(file),
        })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Takes the lock `name` in `dir` if free and writes this process's pid into the lock file;
/// when another process holds it, returns that holder's pid (as it wrote it).
pub fn try_lock_recording_pid(
    dir: BorrowedFd<'_>,
    name: &str,
) -> io::Result<Result<LockGuard, Option<u32>>> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = open_lock_file(dir, name)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
            Ok(Ok(LockGuard {
                held: Held::File(file),
            }))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            file.read_to_string(&mut text)?;
            Ok(Err(text.trim().parse().ok()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_found_in_proc_locks_text() {
        let text = "1: FLOCK  ADVISORY  WRITE 4242 00:1f:123456 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 5151 00:1f:123456 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 99 08:01:777 0 EOF\n";
        let cases = [
            ((0x00, 0x1f, 123456), Some(4242)),
            ((0x08, 0x01, 777), Some(99)),
            ((0x08, 0x01, 778), None),
            ((0x00, 0x20, 123456), None),
        ];
        for ((major, minor, inode), want) in cases {
            assert_eq!(
                holder_in(text, major, minor, inode),
                want,
                "{major}:{minor}:{inode}"
            );
        }
    }

    #[test]
    fn a_held_lock_times_out_naming_this_process() {
        let dir = std::env::temp_dir().join(format!("pas-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fd = super::super::atomic::open_root(&dir).unwrap();
        let _held = lock(fd.as_fd(), "x.lock", Duration::from_secs(1)).unwrap();
        // A second descriptor in the same process is a different flock holder.
        let err = lock(fd.as_fd(), "x.lock", Duration::from_millis(20)).unwrap_err();
        let busy = busy(&err).expect("a Busy error");
        assert_eq!(busy.holder, Some(std::process::id()));
        assert!(busy.waited >= Duration::from_millis(20));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_hard_linked_lock_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("pas-lock-link-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".pas/locks")).unwrap();
        let outside = dir.join("outside");
        std::fs::write(&outside, "keep me").unwrap();
        std::fs::hard_link(&outside, dir.join(".pas/locks/w.lock")).unwrap();
        let fd = super::super::atomic::open_root(&dir).unwrap();
        let err = try_lock_recording_pid(fd.as_fd(), "w.lock").unwrap_err();
        assert!(matches!(
            super::super::atomic::refused(&err),
            Some(Refused::HardLinked { links: 2, .. })
        ));
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
