//! RAII locks on stable lock files.
//!
//! Invariants: a lock is an exclusive `flock` (std's `File::lock`) on a file under
//! `.pas/locks/` that is never deleted or renamed, so every process locks the same inode;
//! data files are never locked themselves (an atomic rename replaces their inode). The
//! descriptor is close-on-exec, so agents spawned while a lock is held never inherit it.
//! Dropping the guard unlocks.
//!
//! The cell lock is re-entrant within a thread: code that holds it may call code that takes
//! it again (the inner guard is a counter, the flock stays with the outermost guard). Other
//! threads and processes still exclude each other, because each opens its own descriptor.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

use super::atomic::{ensure_subdir, FILE_MODE};
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
pub fn lock_reentrant(dir: BorrowedFd<'_>, name: &str, key: &str) -> io::Result<(LockGuard, bool)> {
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
        file.lock()?;
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
        Err(Errno::EXIST) => rfs::openat(&locks, name, flags, Mode::empty())?,
        Err(e) => return Err(e.into()),
    };
    Ok(File::from(fd))
}

/// Takes the exclusive lock `name` in `dir`, waiting as long as another process holds it.
pub fn lock(dir: BorrowedFd<'_>, name: &str) -> io::Result<LockGuard> {
    let file = open_lock_file(dir, name)?;
    file.lock()?;
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
