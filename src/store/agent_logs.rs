//! Agents' logs on disk: `logs/<agent>.log`, and the older parts moved aside by rotation,
//! `logs/<agent>.log.<n>` (a higher `n` is newer), the way s6-log and svlogd keep a
//! directory of old files next to `current`.
//!
//! Only the agent's supervisor writes and rotates its log; readers (`pas logs`) list the
//! files, read them by pieces, and recognise a file they were reading after it was moved
//! aside by its identity (device and inode).

use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use chrono::{DateTime, Utc};
use rustix::fs::{self as rfs, AtFlags};

use super::atomic;
use super::layout::{check_id, IdKind, LogFile, LOGS_DIR};
use super::{FsStore, LogChunk, LogSegment};
use crate::error::Result;

/// The number of a rotated file of `agent`'s log, when `name` is one.
fn rotated_number(agent: &str, name: &str) -> Option<u64> {
    let rest = name.strip_prefix(agent)?.strip_prefix(".log.")?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

fn modified(stat: &rfs::Stat) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(
        stat.st_mtime,
        u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
    )
}

fn segment(rotated: Option<u64>, stat: &rfs::Stat) -> LogSegment {
    LogSegment {
        rotated,
        len: u64::try_from(stat.st_size).unwrap_or(0),
        id: (stat.st_dev, stat.st_ino),
        modified: modified(stat),
    }
}

/// The numbers of `agent`'s rotated files in `logs`, oldest first.
fn rotated_numbers(logs: BorrowedFd<'_>, agent: &str) -> io::Result<Vec<u64>> {
    let mut numbers: Vec<u64> = atomic::list_entries(logs)?
        .into_iter()
        .filter(|e| e.is_file)
        .filter_map(|e| rotated_number(agent, &e.name))
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

impl FsStore {
    /// The cell's `logs/` directory, `None` when it does not exist.
    fn logs_dir(&self, cell: &str) -> Result<Option<OwnedFd>> {
        let cell_fd = self.cell_fd(cell)?;
        match atomic::open_subdir(cell_fd.as_fd(), LOGS_DIR) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("open", &self.cell_path(cell).join(LOGS_DIR), e)),
        }
    }

    pub(super) fn agent_log_segments(&self, cell: &str, agent: &str) -> Result<Vec<LogSegment>> {
        check_id(IdKind::Agent, agent)?;
        let Some(logs) = self.logs_dir(cell)? else {
            return Ok(Vec::new());
        };
        let logs_path = self.cell_path(cell).join(LOGS_DIR);
        let numbers = rotated_numbers(logs.as_fd(), agent)
            .map_err(|e| self.io_error("list", &logs_path, e))?;
        let mut out = Vec::with_capacity(numbers.len() + 1);
        let files = numbers
            .into_iter()
            .map(|n| (Some(n), LogFile::AgentRotated(agent, n)))
            .chain([(None, LogFile::Agent(agent))]);
        for (rotated, log) in files {
            let name = log.file_name();
            match rfs::statat(&logs, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat)
                    if rfs::FileType::from_raw_mode(stat.st_mode) == rfs::FileType::RegularFile =>
                {
                    out.push(segment(rotated, &stat));
                }
                // A file removed by a rotation since the listing, or not a file at all.
                Ok(_) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(self.io_error("inspect", &logs_path.join(&name), e.into())),
            }
        }
        Ok(out)
    }

    pub(super) fn read_log_piece(
        &self,
        cell: &str,
        log: LogFile<'_>,
        offset: u64,
        max: usize,
    ) -> Result<Option<LogChunk>> {
        if let Some(id) = log.agent() {
            check_id(IdKind::Agent, id)?;
        }
        let Some(logs) = self.logs_dir(cell)? else {
            return Ok(None);
        };
        let name = log.file_name();
        let path = self.cell_path(cell).join(LOGS_DIR).join(&name);
        let read = || -> io::Result<Option<LogChunk>> {
            let fd = match rfs::openat(
                &logs,
                name.as_str(),
                rfs::OFlags::RDONLY
                    | rfs::OFlags::NOFOLLOW
                    | rfs::OFlags::NONBLOCK
                    | rfs::OFlags::CLOEXEC,
                rfs::Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            atomic::check_regular(fd.as_fd(), &name, u64::MAX)?;
            let stat = rfs::fstat(&fd)?;
            let mut file = std::fs::File::from(fd);
            file.seek(SeekFrom::Start(offset))?;
            let mut bytes = Vec::new();
            file.take(max as u64).read_to_end(&mut bytes)?;
            Ok(Some(LogChunk {
                bytes,
                id: (stat.st_dev, stat.st_ino),
            }))
        };
        read().map_err(|e| self.io_error("read", &path, e))
    }

    pub(super) fn rotate_agent_log(
        &self,
        cell: &str,
        agent: &str,
        keep: usize,
    ) -> Result<std::fs::File> {
        check_id(IdKind::Agent, agent)?;
        let cell_fd = self.cell_fd(cell)?;
        let logs_path = self.cell_path(cell).join(LOGS_DIR);
        let logs = atomic::ensure_subdir(cell_fd.as_fd(), LOGS_DIR)
            .map_err(|e| self.io_error("open", &logs_path, e))?;
        let current = LogFile::Agent(agent).file_name();
        let rotate = || -> io::Result<()> {
            let mut numbers = rotated_numbers(logs.as_fd(), agent)?;
            if keep == 0 {
                atomic::remove_at(logs.as_fd(), &current)?;
            } else {
                let next = numbers.last().map_or(1, |n| n + 1);
                let moved = LogFile::AgentRotated(agent, next).file_name();
                match atomic::rename_noreplace(logs.as_fd(), &current, &moved) {
                    Ok(()) => numbers.push(next),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            let drop = numbers.len().saturating_sub(keep);
            for n in &numbers[..drop] {
                atomic::remove_at(logs.as_fd(), &LogFile::AgentRotated(agent, *n).file_name())?;
            }
            Ok(())
        };
        rotate().map_err(|e| self.io_error("rotate", &logs_path.join(&current), e))?;
        atomic::open_append(logs.as_fd(), &current, atomic::LOG_MODE)
            .map_err(|e| self.io_error("open", &logs_path.join(&current), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_files_are_recognised_by_their_number_only() {
        assert_eq!(rotated_number("a1", "a1.log.3"), Some(3));
        assert_eq!(rotated_number("a1", "a1.log.12"), Some(12));
        for name in [
            "a1.log",
            "a1.log.",
            "a1.log.x",
            "a1.log.3.tmp",
            "a1.log.log",
            "b1.log.3",
        ] {
            assert_eq!(rotated_number("a1", name), None, "{name}");
        }
        // An agent whose id looks like another's rotated file keeps its own files.
        assert_eq!(rotated_number("a1", "a1.log.3.log"), None);
        assert_eq!(rotated_number("a1.log.3", "a1.log.3.log.1"), Some(1));
    }
}
