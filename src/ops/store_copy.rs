//! `pas store copy`: a whole root from one store to another (a directory to etcd and back),
//! losslessly, then verified.
//!
//! Per cell: its documents byte for byte and its events with their hash chain and head
//! ([`Store::export_cell`] / [`Store::import_cell`]), every checkpoint generation (and the
//! top-level copy) with its files, the context summaries and the hooks cursor. The ready
//! index is not copied: it is made from the tasks, and the destination rebuilds it on the
//! first claim. At the end each cell is read back from the destination and compared with
//! the source (the same documents, the same events log, the same head) and its chain is
//! verified there.
//!
//! The destination must hold no cell ([`decide_destination`]): a copy never merges two roots
//! or overwrites a cell. Logs of agents' runs and the machine's ledger are this host's and
//! are not copied.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::events;
use crate::store::image::CellImage;
use crate::store::layout::Collection;
use crate::store::Store;

/// What was copied of one cell, as verified on the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CellCopy {
    /// The cell's id.
    pub cell: String,
    /// Documents on each side (the same).
    pub documents: usize,
    /// Events on each side (the same log).
    pub events: usize,
    /// Checkpoint generations copied (the top-level copy counted as one).
    pub checkpoints: usize,
    /// Context summaries copied.
    pub summaries: usize,
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copied {
    /// Where from and where to.
    pub from: String,
    pub to: String,
    /// Each cell.
    pub cells: Vec<CellCopy>,
}

/// Whether a copy may go into a destination holding `existing` cells: only an empty one.
pub fn decide_destination(existing: &[String], to: &str) -> Result<()> {
    match existing {
        [] => Ok(()),
        [one, ..] => Err(Error::conflict(format!(
            "{to} already holds {} cell(s) ({one}{}); pas store copy writes only into an empty root",
            existing.len(),
            if existing.len() > 1 { ", ..." } else { "" }
        ))
        .hint("copy into a new directory or an unused etcd prefix; a copy never merges roots")),
    }
}

/// The first difference between a cell as read from the source and from the destination;
/// `None` when they are the same.
pub fn difference(source: &CellImage, copy: &CellImage) -> Option<String> {
    let names = |i: &CellImage| i.docs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    if names(source) != names(copy) {
        return Some(format!(
            "the documents differ: {} in the source, {} in the copy",
            source.docs.len(),
            copy.docs.len()
        ));
    }
    if let Some((name, _)) = source
        .docs
        .iter()
        .zip(&copy.docs)
        .find(|((_, a), (_, b))| a != b)
        .map(|(a, _)| a)
    {
        return Some(format!("{name} differs"));
    }
    if source.events != copy.events {
        return Some("the events log differs".to_string());
    }
    if source.head != copy.head {
        return Some("the events head differs".to_string());
    }
    None
}

/// Copies every cell of `from` into `to` (described as `from_name`, `to_name`), then checks
/// each against its source; `progress` hears of each cell.
pub fn copy(
    from: &dyn Store,
    to: &dyn Store,
    from_name: &str,
    to_name: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<Copied> {
    let cells = from.cell_ids()?;
    decide_destination(&to.cell_ids()?, to_name)?;
    let mut out = Copied {
        from: from_name.to_string(),
        to: to_name.to_string(),
        cells: Vec::new(),
    };
    for cell in &cells {
        progress(&format!("copying cell {cell}"));
        crate::store::settle(from, cell)?;
        let image = from.export_cell(cell)?;
        to.import_cell(cell, &image)?;
        let (checkpoints, summaries) = copy_files(from, to, cell)?;
        if let Some(cursor) = from.hook_cursor(cell)? {
            to.set_hook_cursor(cell, &cursor)?;
        }
        let back = to.export_cell(cell)?;
        if let Some(what) = difference(&image, &back) {
            return Err(Error::failure(format!(
                "cell {cell} was copied to {to_name} but does not read back the same: {what}"
            ))
            .hint("the source is unchanged; remove the copy and run pas store copy again"));
        }
        let v = events::verify_against(&back.events, back.head.as_ref());
        if let Some(b) = v.first_break {
            return Err(Error::data(format!(
                "the events of cell {cell} do not verify after the copy: {}",
                b.reason
            ))
            .hint(format!(
                "run `pas events verify {cell}` on the source: a copy keeps the chain as it is"
            )));
        }
        out.cells.push(CellCopy {
            cell: cell.clone(),
            documents: back.docs.len(),
            events: v.lines,
            checkpoints,
            summaries,
        });
    }
    Ok(out)
}

/// Copies a cell's checkpoints and summaries; how many of each.
fn copy_files(from: &dyn Store, to: &dyn Store, cell: &str) -> Result<(usize, usize)> {
    let (mut checkpoints, mut summaries) = (0, 0);
    for agent in from.list(cell, Collection::Agents)? {
        for g in from.checkpoint_generations(cell, &agent)? {
            if let Some(files) = from.read_checkpoint(cell, &agent, g)? {
                to.write_checkpoint(cell, &agent, g, &files)?;
                checkpoints += 1;
            }
        }
        if let Some(files) = from.read_checkpoint(cell, &agent, 0)? {
            to.mirror_checkpoint(cell, &agent, &files)?;
            checkpoints += 1;
        }
        for (name, bytes) in from.summaries(cell, &agent)? {
            to.write_summary(cell, &agent, &name, &bytes)?;
            summaries += 1;
        }
    }
    Ok((checkpoints, summaries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(docs: &[(&str, &str)], events: &str) -> CellImage {
        CellImage {
            docs: docs
                .iter()
                .map(|(n, b)| (n.to_string(), b.as_bytes().to_vec()))
                .collect(),
            events: events.as_bytes().to_vec(),
            head: crate::store::image::head_of(events.as_bytes()),
        }
    }

    #[test]
    fn only_an_empty_destination_is_copied_into() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], None),
            (&["c1"], Some("holds 1 cell(s) (c1)")),
            (&["c1", "c2"], Some("holds 2 cell(s) (c1, ...)")),
        ];
        for (existing, want) in cases {
            let existing: Vec<String> = existing.iter().map(|s| s.to_string()).collect();
            match (decide_destination(&existing, "etcd://h:1/p"), want) {
                (Ok(()), None) => {}
                (Err(e), Some(part)) => {
                    assert!(e.message.contains(part), "{}", e.message);
                    assert_eq!(e.kind, crate::error::Kind::Conflict);
                }
                (got, want) => panic!("{existing:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_copy_that_reads_back_differently_is_named() {
        let base = image(&[("cell.json", "{}\n"), ("agents/a.json", "{\"x\":1}")], "");
        let cases: &[(&str, CellImage, Option<&str>)] = &[
            ("the same", base.clone(), None),
            (
                "a document missing",
                image(&[("cell.json", "{}\n")], ""),
                Some("the documents differ: 2 in the source, 1 in the copy"),
            ),
            (
                "key order changed",
                image(
                    &[("cell.json", "{}\n"), ("agents/a.json", "{\"x\": 1}")],
                    "",
                ),
                Some("agents/a.json differs"),
            ),
            (
                "events differ",
                image(
                    &[("cell.json", "{}\n"), ("agents/a.json", "{\"x\":1}")],
                    "{\"seq\":1}\n",
                ),
                Some("the events log differs"),
            ),
        ];
        for (why, copy, want) in cases {
            assert_eq!(difference(&base, copy).as_deref(), *want, "{why}");
        }
        let mut other_head = base.clone();
        other_head.head = crate::store::image::head_of(b"{\"seq\":1}\n");
        assert_eq!(
            difference(&base, &other_head).as_deref(),
            Some("the events head differs")
        );
    }
}
