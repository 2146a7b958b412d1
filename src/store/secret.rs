//! The bearer token of `pas serve`: `<root>/.pas/serve-token`, mode 0600, created on first
//! start and replaced only when rotated. Whoever can read it may change the root over
//! HTTP, so it is never world-readable and never printed unless asked for.

use std::os::fd::AsFd;

use super::atomic::{self, Durability};
use super::layout::PAS_DIR;
use super::FsStore;
use crate::error::{Error, Result};

/// The token file's name under the root's `.pas/`.
pub const TOKEN_FILE: &str = "serve-token";

/// A token file is one line; anything bigger is not ours.
const TOKEN_LIMIT: u64 = 4096;

/// Which token file is on disk (inode and change time): when it differs from the one a
/// server read, the token was rotated.
pub type TokenVersion = Option<(u64, i64, i64)>;

impl FsStore {
    /// The [`TokenVersion`] of the token file now (`None` when it cannot be seen). A stat,
    /// cheap enough for every request that needs the token.
    pub(crate) fn serve_token_version(&self) -> TokenVersion {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(self.root().join(PAS_DIR).join(TOKEN_FILE)).ok()?;
        Some((meta.ino(), meta.ctime(), meta.ctime_nsec()))
    }

    /// The server's bearer token: the one on disk, or a new random one written 0600 when
    /// there is none or `rotate` asks for a new one. Returns the token and the file's path.
    pub(crate) fn serve_token(&self, rotate: bool) -> Result<(String, std::path::PathBuf)> {
        let root = self.ensure_root()?;
        let dir_path = self.root().join(PAS_DIR);
        let path = dir_path.join(TOKEN_FILE);
        let pas = atomic::ensure_subdir(root.as_fd(), PAS_DIR)
            .map_err(|e| self.io_error("create", &dir_path, e))?;
        if !rotate {
            let bytes = atomic::read_at(pas.as_fd(), TOKEN_FILE, TOKEN_LIMIT)
                .map_err(|e| self.io_error("read", &path, e))?;
            if let Some(bytes) = bytes {
                let token = String::from_utf8_lossy(&bytes).trim().to_string();
                if token.len() < 16 {
                    return Err(Error::data(format!(
                        "{} holds no usable token (fewer than 16 characters)",
                        path.display()
                    ))
                    .hint("make a new one with `pas serve token --rotate`"));
                }
                return Ok((token, path));
            }
        }
        // A replacement would keep group and world write bits someone gave the old file.
        atomic::remove_at(pas.as_fd(), TOKEN_FILE)
            .map_err(|e| self.io_error("remove", &path, e))?;
        // Two v4 uuids: 244 random bits from the operating system's generator.
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        atomic::replace_at_mode(
            pas.as_fd(),
            TOKEN_FILE,
            format!("{token}\n").as_bytes(),
            Durability::Durable,
            0o600,
        )
        .map_err(|e| self.io_error("write", &path, e))?;
        Ok((token, path))
    }
}
