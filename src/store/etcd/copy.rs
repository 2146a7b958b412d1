//! A cell of the etcd store as bytes and back ([`CellImage`]), for `pas store copy`.
//!
//! An import writes its keys in transactions of at most [`BATCH_OPS`] operations and about
//! [`BATCH_BYTES`] bytes (etcd bounds both), every one of them on the condition that the
//! cell does not exist yet; the cell's id key goes in the last one, so the cell appears
//! only once all of it is there (a copy that stops halfway leaves keys no command reads;
//! copying again overwrites them).

use etcd_client::{Compare, CompareOp, Txn as EtcdTxn, TxnOp};

use super::blobs::check_value;
use super::{EtcdStore, StoredHead};
use crate::error::{Error, Result};
use crate::store::events;
use crate::store::image::{self, CellImage};
use crate::store::layout::{check_id, IdKind};
use crate::store::Store;

/// The most operations in one transaction of an import (etcd's `--max-txn-ops` is 128 by
/// default; docs/etcd.md asks for 10,000).
const BATCH_OPS: usize = 100;
/// About the most bytes of values in one transaction of an import (etcd refuses requests
/// over 1.5 MiB).
const BATCH_BYTES: usize = 1 << 20;

impl EtcdStore {
    /// [`Store::export_cell`] on etcd.
    pub(super) fn export_image(&self, cell: &str) -> Result<CellImage> {
        check_id(IdKind::Cell, cell)?;
        if !self.has_cell(cell) {
            return Err(Error::not_found(format!("cell {cell} does not exist")));
        }
        let prefix = self.cell_prefix(cell);
        let mut out = CellImage::default();
        for kv in self.get_prefix(prefix.clone())? {
            let Some(path) = kv
                .key()
                .strip_prefix(prefix.as_bytes())
                .and_then(|p| std::str::from_utf8(p).ok())
            else {
                continue;
            };
            if let Some(k) = image::doc_key(path) {
                out.docs.push((k.relative(), kv.value().to_vec()));
            } else if path.starts_with(".pas/events/") {
                out.events.extend_from_slice(kv.value());
                out.events.push(b'\n');
            }
        }
        out.docs.sort();
        out.head = self.stored_head(cell)?.0.map(|s| s.head);
        Ok(out)
    }

    /// [`Store::import_cell`] on etcd.
    pub(super) fn import_image(&self, cell: &str, img: &CellImage) -> Result<()> {
        check_id(IdKind::Cell, cell)?;
        if self.has_cell(cell) {
            return Err(Error::conflict(format!(
                "cell {cell} already exists ({})",
                self.describe_cell(cell)
            )));
        }
        let mut puts: Vec<(String, Vec<u8>)> = Vec::new();
        for (key, bytes) in image::doc_keys(img)? {
            let k = self.doc_key(cell, key);
            check_value(&self.describe_key(&k), bytes.len())?;
            puts.push((k, bytes));
        }
        let (lines, _) = events::split_lines(&img.events);
        for (i, line) in lines.iter().enumerate() {
            let seq = serde_json::from_slice::<events::Event>(line)
                .map(|e| e.seq)
                .ok()
                .filter(|s| *s > 0)
                .unwrap_or(i as u64 + 1);
            let k = self.event_key(cell, seq);
            check_value(&self.describe_key(&k), line.len())?;
            puts.push((k, line.to_vec()));
        }
        if let Some(head) = img.head.clone().or_else(|| image::head_of(&img.events)) {
            let stored = StoredHead {
                head,
                last: lines
                    .last()
                    .map(|l| String::from_utf8_lossy(l).into_owned()),
            };
            puts.push((
                self.meta_key(cell, "events-head"),
                serde_json::to_vec(&stored).unwrap_or_default(),
            ));
        }
        // Stale from the start: the first claim rebuilds the ready index from the tasks.
        puts.push((self.meta_key(cell, "tasks-gen"), Vec::new()));
        let id_key = self.cell_id_key(cell);
        let absent = || vec![Compare::version(id_key.clone(), CompareOp::Equal, 0)];
        let mut batch: Vec<TxnOp> = Vec::new();
        let mut bytes = 0;
        for (k, v) in puts {
            if batch.len() + 1 >= BATCH_OPS || bytes + v.len() > BATCH_BYTES {
                self.send_import(cell, absent(), std::mem::take(&mut batch))?;
                bytes = 0;
            }
            bytes += v.len() + k.len();
            batch.push(TxnOp::put(k, v, None));
        }
        batch.push(TxnOp::put(id_key.clone(), "", None));
        self.send_import(cell, absent(), batch)?;
        self.committed();
        Ok(())
    }

    fn send_import(&self, cell: &str, when: Vec<Compare>, ops: Vec<TxnOp>) -> Result<()> {
        if self
            .send(EtcdTxn::new().when(when).and_then(ops))?
            .succeeded()
        {
            return Ok(());
        }
        Err(Error::conflict(format!(
            "cell {cell} was created in {} while it was copied",
            self.describe_cell(cell)
        ))
        .hint("copy into a prefix no one else writes"))
    }
}
