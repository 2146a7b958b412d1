//! Checkpoint generations on disk.
//!
//! `checkpoints/<agent>/history/<G>/` holds generation G: `context.json`, `artifacts/`,
//! `state.json` and `manifest.json`, written in that order into a hidden staging directory
//! that is renamed into place at the end, so a generation exists completely or not at all.
//! The newest generation is then mirrored to the spec's `checkpoints/<agent>/state.json`,
//! `context.json` and `artifacts/` for people and tools that read the spec's layout.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, RenameFlags};

use super::atomic::{self, Durability};
use super::layout::CHECKPOINT_FILE_LIMIT;
use super::layout::{check_id, IdKind};
use super::{CheckpointFiles, FsStore};
use crate::error::{Error, Result};

const HISTORY: &str = "history";

/// The mode an artifact is written with: its own permission bits (never set-id or sticky
/// bits), 0644 when none were given.
fn artifact_mode(files: &CheckpointFiles, name: &str) -> u32 {
    files
        .modes
        .get(name)
        .map_or(atomic::FILE_MODE, |m| m & 0o777)
}

fn write_files(dir: BorrowedFd<'_>, files: &CheckpointFiles, manifest: bool) -> io::Result<()> {
    atomic::replace_at(dir, "context.json", &files.context, Durability::Durable)?;
    let artifacts = atomic::ensure_subdir(dir, "artifacts")?;
    for (name, bytes) in &files.artifacts {
        atomic::replace_at_mode(
            artifacts.as_fd(),
            name,
            bytes,
            Durability::Durable,
            artifact_mode(files, name),
        )?;
    }
    rfs::fsync(&artifacts)?;
    atomic::replace_at(dir, "state.json", &files.state, Durability::Durable)?;
    if manifest {
        atomic::replace_at(dir, "manifest.json", &files.manifest, Durability::Durable)?;
    }
    rfs::fsync(dir)?;
    Ok(())
}

fn read_files(dir: BorrowedFd<'_>) -> io::Result<Option<CheckpointFiles>> {
    let Some(state) = atomic::read_at(dir, "state.json", CHECKPOINT_FILE_LIMIT)? else {
        return Ok(None);
    };
    let context = atomic::read_at(dir, "context.json", CHECKPOINT_FILE_LIMIT)?.unwrap_or_default();
    let manifest =
        atomic::read_at(dir, "manifest.json", CHECKPOINT_FILE_LIMIT)?.unwrap_or_default();
    let mut artifacts = Vec::new();
    let mut modes = std::collections::BTreeMap::new();
    if let Ok(a) = atomic::open_subdir(dir, "artifacts") {
        for name in atomic::list_entries(a.as_fd())?
            .into_iter()
            .filter(|e| e.is_file && !e.name.starts_with('.'))
            .map(|e| e.name)
        {
            if let Some(bytes) = atomic::read_at(a.as_fd(), &name, CHECKPOINT_FILE_LIMIT)? {
                if let Ok(stat) = rfs::statat(&a, name.as_str(), rfs::AtFlags::SYMLINK_NOFOLLOW) {
                    modes.insert(name.clone(), stat.st_mode & 0o777);
                }
                artifacts.push((name, bytes));
            }
        }
    }
    artifacts.sort();
    Ok(Some(CheckpointFiles {
        state,
        context,
        manifest,
        artifacts,
        modes,
    }))
}

impl FsStore {
    fn agent_checkpoints(&self, cell: &str, agent: &str, create: bool) -> Result<Option<OwnedFd>> {
        check_id(IdKind::Agent, agent)?;
        let cell_fd = self.cell_fd(cell)?;
        let path = self.cell_path(cell).join("checkpoints");
        let open = |dir: BorrowedFd<'_>, name: &str| {
            if create {
                atomic::ensure_subdir(dir, name)
            } else {
                atomic::open_subdir(dir, name)
            }
        };
        let checkpoints = match open(cell_fd.as_fd(), "checkpoints") {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_error("open", &path, e)),
        };
        match open(checkpoints.as_fd(), agent) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("open", &path.join(agent), e)),
        }
    }

    fn history(&self, cell: &str, agent: &str, create: bool) -> Result<Option<OwnedFd>> {
        let Some(agent_fd) = self.agent_checkpoints(cell, agent, create)? else {
            return Ok(None);
        };
        let opened = if create {
            atomic::ensure_subdir(agent_fd.as_fd(), HISTORY)
        } else {
            atomic::open_subdir(agent_fd.as_fd(), HISTORY)
        };
        match opened {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error(
                "open",
                &self.checkpoint_dir_path(cell, agent).join(HISTORY),
                e,
            )),
        }
    }

    fn checkpoint_dir_path(&self, cell: &str, agent: &str) -> PathBuf {
        self.cell_path(cell).join("checkpoints").join(agent)
    }

    pub(super) fn generations(&self, cell: &str, agent: &str) -> Result<Vec<u64>> {
        let Some(history) = self.history(cell, agent, false)? else {
            return Ok(Vec::new());
        };
        let entries = atomic::list_entries(history.as_fd())
            .map_err(|e| self.io_error("list", &self.checkpoint_dir_path(cell, agent), e))?;
        let mut gens: Vec<u64> = entries
            .into_iter()
            .filter(|e| e.is_dir)
            .filter_map(|e| e.name.parse().ok())
            .filter(|g| *g > 0)
            .collect();
        gens.sort_unstable();
        Ok(gens)
    }

    pub(super) fn write_generation(
        &self,
        cell: &str,
        agent: &str,
        generation: u64,
        files: &CheckpointFiles,
    ) -> Result<()> {
        for (name, _) in &files.artifacts {
            if !super::layout::is_valid_id(name) {
                return Err(Error::usage(format!("artifact name {name:?} is not a plain file name"))
                    .hint("artifact names are 1-128 characters of [A-Za-z0-9._-], not starting with '-' or '.'"));
            }
        }
        let base = self.checkpoint_dir_path(cell, agent);
        let history = self
            .history(cell, agent, true)?
            .ok_or_else(|| Error::failure("cannot create the checkpoint directory"))?;
        let staging = format!(".staging-{generation}-{}", std::process::id());
        let name = generation.to_string();
        let build = || -> io::Result<()> {
            let dir = atomic::ensure_subdir(history.as_fd(), &staging)?;
            write_files(dir.as_fd(), files, true)?;
            rfs::renameat_with(
                &history,
                staging.as_str(),
                &history,
                name.as_str(),
                RenameFlags::NOREPLACE,
            )?;
            Ok(rfs::fsync(&history)?)
        };
        if let Err(e) = build() {
            let _ = std::fs::remove_dir_all(base.join(HISTORY).join(&staging));
            return Err(self.io_error("write checkpoint", &base.join(HISTORY).join(&name), e));
        }
        Ok(())
    }

    /// Mirrors a committed generation to the spec's top-level `state.json`, `context.json`
    /// and `artifacts/` (artifacts swapped in whole with an atomic exchange).
    pub(super) fn mirror_generation(
        &self,
        cell: &str,
        agent: &str,
        files: &CheckpointFiles,
    ) -> Result<()> {
        let base = self.checkpoint_dir_path(cell, agent);
        let mirror = || -> io::Result<()> {
            let agent_fd = atomic::open_subdir(self.cell_fd_io(cell)?.as_fd(), "checkpoints")
                .and_then(|c| atomic::open_subdir(c.as_fd(), agent))?;
            let fresh = format!(".artifacts-{}", std::process::id());
            let _ = std::fs::remove_dir_all(base.join(&fresh));
            let fresh_fd = atomic::ensure_subdir(agent_fd.as_fd(), &fresh)?;
            for (name, bytes) in &files.artifacts {
                atomic::replace_at_mode(
                    fresh_fd.as_fd(),
                    name,
                    bytes,
                    Durability::Durable,
                    artifact_mode(files, name),
                )?;
            }
            match rfs::renameat_with(
                &agent_fd,
                fresh.as_str(),
                &agent_fd,
                "artifacts",
                RenameFlags::EXCHANGE,
            ) {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(base.join(&fresh));
                }
                Err(rustix::io::Errno::NOENT) => {
                    rfs::renameat(&agent_fd, fresh.as_str(), &agent_fd, "artifacts")?
                }
                Err(e) => return Err(e.into()),
            }
            atomic::replace_at(
                agent_fd.as_fd(),
                "context.json",
                &files.context,
                Durability::Durable,
            )?;
            atomic::replace_at(
                agent_fd.as_fd(),
                "state.json",
                &files.state,
                Durability::Durable,
            )?;
            rfs::fsync(&agent_fd)?;
            Ok(())
        };
        mirror().map_err(|e| self.io_error("mirror checkpoint to", &base, e))
    }

    pub(super) fn read_generation(
        &self,
        cell: &str,
        agent: &str,
        generation: u64,
    ) -> Result<Option<CheckpointFiles>> {
        let base = self.checkpoint_dir_path(cell, agent);
        let dir = if generation == 0 {
            match self.agent_checkpoints(cell, agent, false)? {
                Some(fd) => fd,
                None => return Ok(None),
            }
        } else {
            let Some(history) = self.history(cell, agent, false)? else {
                return Ok(None);
            };
            match atomic::open_subdir(history.as_fd(), &generation.to_string()) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    return Err(self.io_error(
                        "open",
                        &base.join(HISTORY).join(generation.to_string()),
                        e,
                    ))
                }
            }
        };
        read_files(dir.as_fd()).map_err(|e| {
            self.io_error(
                "read checkpoint",
                &self.generation_path(cell, agent, generation),
                e,
            )
        })
    }

    pub(super) fn generation_path(&self, cell: &str, agent: &str, generation: u64) -> PathBuf {
        let base = self.checkpoint_dir_path(cell, agent);
        if generation == 0 {
            base
        } else {
            base.join(HISTORY).join(generation.to_string())
        }
    }

    pub(super) fn remove_generation(&self, cell: &str, agent: &str, generation: u64) -> Result<()> {
        check_id(IdKind::Agent, agent)?;
        if generation == 0 {
            return Err(Error::usage(
                "the top-level checkpoint files are not a generation",
            ));
        }
        let path = self.generation_path(cell, agent, generation);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_error("remove", &path, e)),
        }
    }

    /// Where a context summary lives.
    pub(super) fn summary_path(&self, cell: &str, agent: &str, name: &str) -> PathBuf {
        self.checkpoint_dir_path(cell, agent)
            .join("summaries")
            .join(name)
    }

    pub(super) fn write_summary_file(
        &self,
        cell: &str,
        agent: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<PathBuf> {
        let base = self.checkpoint_dir_path(cell, agent).join("summaries");
        let agent_fd = self
            .agent_checkpoints(cell, agent, true)?
            .ok_or_else(|| Error::failure("cannot create the checkpoint directory"))?;
        let dir = atomic::ensure_subdir(agent_fd.as_fd(), "summaries")
            .map_err(|e| self.io_error("open", &base, e))?;
        atomic::create_at(dir.as_fd(), name, bytes)
            .map_err(|e| self.io_error("write", &base.join(name), e))?;
        Ok(base.join(name))
    }

    pub(super) fn read_summaries(&self, cell: &str, agent: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let base = self.checkpoint_dir_path(cell, agent).join("summaries");
        let Some(agent_fd) = self.agent_checkpoints(cell, agent, false)? else {
            return Ok(Vec::new());
        };
        let dir = match atomic::open_subdir(agent_fd.as_fd(), "summaries") {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io_error("open", &base, e)),
        };
        let names = atomic::list_names(dir.as_fd(), ".json")
            .map_err(|e| self.io_error("list", &base, e))?;
        let mut out = Vec::new();
        for stem in names {
            let name = format!("{stem}.json");
            if let Some(bytes) = atomic::read_at(dir.as_fd(), &name, CHECKPOINT_FILE_LIMIT)
                .map_err(|e| self.io_error("read", &base.join(&name), e))?
            {
                out.push((name, bytes));
            }
        }
        Ok(out)
    }

    fn cell_fd_io(&self, cell: &str) -> io::Result<OwnedFd> {
        self.cell_fd(cell).map_err(|e| io::Error::other(e.message))
    }
}

/// Writes checkpoint files into `dest` (created when missing), outside the root.
pub(super) fn write_out(dest: &Path, files: &CheckpointFiles) -> io::Result<()> {
    atomic::create_dir_all(dest, atomic::DIR_MODE)?;
    let dir = atomic::open_root(dest)?;
    write_files(dir.as_fd(), files, false)
}
