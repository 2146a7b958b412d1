//! `pas top`

use clap::Args;

use crate::cli::Ctx;
use crate::error::Result;
use crate::ops::cell;
use crate::store::Store;
use crate::tui::{app, view::Palette};

// Arguments of `pas top` (its help text is on `Command::Top`: the variant's doc wins).
#[derive(Debug, Args)]
pub struct TopArgs {
    /// One cell (default: every cell).
    pub cell: Option<String>,
}

/// Runs `pas top`.
pub fn run(ctx: &Ctx, args: TopArgs) -> Result<()> {
    let TopArgs { cell } = args;
    // A wrong cell or root is refused before the screen changes.
    let only = match cell {
        Some(q) => Some(cell::resolve(&ctx.store, &q)?),
        None => {
            ctx.store.cell_ids()?;
            None
        }
    };
    app::run(app::Options {
        root: ctx.store.file("pas top")?.root().to_path_buf(),
        only,
        palette: Palette {
            color: ctx.out.colors(),
            health: super::agent::health_tone,
            cell: super::cell::status_tone,
        },
        launch: ctx.launch,
    })
}
