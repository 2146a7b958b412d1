//! A cell's documents and events as bytes, for `pas store copy`: what
//! [`Store::export_cell`](super::Store::export_cell) reads and
//! [`Store::import_cell`](super::Store::import_cell) writes, so a copy keeps every document
//! byte for byte (unknown fields, key order) and the events log with its hash chain and head.

use super::events::{self, Head};
use super::layout::{is_valid_id, Collection, ConfigFile, FileKey};
use super::{FsStore, Store};

use crate::error::{Error, Result};

/// One cell as bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CellImage {
    /// Each document by its path in a cell directory (`cell.json`, `agents/<id>.json`,
    /// `tasks/<id>.json`, `config/<name>.json`, `reservations.json`), sorted by path.
    pub docs: Vec<(String, Vec<u8>)>,
    /// The events log: its lines, each with its newline.
    pub events: Vec<u8>,
    /// The chain's recorded head.
    pub head: Option<Head>,
}

/// The document a path in a cell directory names; `None` for anything else.
pub fn doc_key(path: &str) -> Option<FileKey<'_>> {
    let id = |dir: &str| {
        path.strip_prefix(dir)?
            .strip_suffix(".json")
            .filter(|id| is_valid_id(id))
    };
    match path {
        "cell.json" => Some(FileKey::Cell),
        "reservations.json" => Some(FileKey::Reservations),
        _ => id("agents/")
            .map(FileKey::Agent)
            .or_else(|| id("tasks/").map(FileKey::Task))
            .or_else(|| {
                let name = path.strip_prefix("config/")?;
                ConfigFile::ALL
                    .into_iter()
                    .find(|c| c.file_name() == name)
                    .map(FileKey::Config)
            }),
    }
}

/// The documents of `image` with their keys; a path that names no
/// document is refused.
pub fn doc_keys(image: &CellImage) -> Result<Vec<(FileKey<'_>, Vec<u8>)>> {
    image
        .docs
        .iter()
        .map(|(path, bytes)| {
            doc_key(path).map(|k| (k, bytes.clone())).ok_or_else(|| {
                Error::data(format!("{path:?} is not a document of a cell"))
                    .hint("documents are cell.json, reservations.json, agents/<id>.json, tasks/<id>.json and config/<name>.json")
            })
        })
        .collect()
}

/// The head of `log` read from its start: for a log whose head was not recorded.
pub fn head_of(log: &[u8]) -> Option<Head> {
    let (lines, _) = events::split_lines(log);
    if lines.is_empty() {
        return None;
    }
    let lines: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let genesis = Head {
        seq: 0,
        hash: events::GENESIS.to_string(),
        size: 0,
    };
    Some(events::head_after(&lines, 0, genesis))
}

impl FsStore {
    /// [`Store::export_cell`] on files.
    pub(super) fn export_image(&self, cell: &str) -> Result<CellImage> {
        if !self.has_cell(cell) {
            return Err(Error::not_found(format!("cell {cell} does not exist")));
        }
        let dir = self.cell_path(cell);
        let mut image = CellImage::default();
        let singles = [FileKey::Cell, FileKey::Reservations]
            .into_iter()
            .chain(ConfigFile::ALL.into_iter().map(FileKey::Config));
        for key in singles {
            let path = dir.join(key.relative());
            match std::fs::read(&path) {
                Ok(bytes) => image.docs.push((key.relative(), bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("read", &path, e)),
            }
        }
        for what in [Collection::Agents, Collection::Tasks] {
            for (id, bytes) in self.read_collection_bytes(cell, what)? {
                image
                    .docs
                    .push((format!("{}/{id}.json", what.dir()), bytes?));
            }
        }
        image.docs.sort();
        image.events = self.read_log(cell, super::LogFile::Events, 0)?;
        image.head = self.events_head(cell)?;
        Ok(image)
    }
}
