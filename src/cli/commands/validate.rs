//! `pas validate`

use clap::Args;
use serde_json::json;

use crate::cli::Ctx;
use crate::error::{Error, Result};
use crate::ops::cell;
use crate::ops::validate::{self, Severity};
use crate::output::{Styled, Tone};

// Arguments of `pas validate`.
//
// Example: pas validate 3f2a --strict
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Only this cell (default: every cell under the root).
    pub cell: Option<String>,
    /// Fail on warnings too.
    #[arg(long)]
    pub strict: bool,
}

/// Runs `pas validate`.
pub fn run(ctx: &Ctx, args: ValidateArgs) -> Result<()> {
    let ValidateArgs { cell, strict } = args;
    let problems = match &cell {
        Some(query) => {
            let id = cell::resolve(&ctx.store, query)?;
            validate::validate_cell(&ctx.store, &id)?
        }
        None => validate::validate_root(&ctx.store, &mut |done, total| {
            ctx.out
                .progress(&format!("validating: {done}/{total} cells checked"));
        })?,
    };
    ctx.out.progress_done();
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    let warnings = problems.len() - errors;
    let failed = errors > 0 || (strict && warnings > 0);
    if ctx.out.is_json() {
        ctx.out.json(
            &json!({ "ok": !failed, "errors": errors, "warnings": warnings, "problems": problems }),
        );
    } else if !problems.is_empty() {
        let rows = problems
            .iter()
            .map(|p| {
                let (sev, tone) = match p.severity {
                    Severity::Error => ("error", Tone::Bad),
                    Severity::Warning => ("warning", Tone::Warn),
                };
                vec![
                    Styled::from(if p.cell.is_empty() {
                        "(root)"
                    } else {
                        p.cell.as_str()
                    }),
                    Styled::from(p.file.as_str()),
                    Styled::from(if p.path.is_empty() {
                        "-"
                    } else {
                        p.path.as_str()
                    }),
                    Styled::new(sev, tone),
                    Styled::from(p.reason.as_str()),
                ]
            })
            .collect();
        ctx.out
            .table(&["CELL", "FILE", "PATH", "SEVERITY", "REASON"], rows);
    } else {
        ctx.out.info("ok: no problems found");
    }
    if failed {
        return Err(Error::data(format!(
            "validation found {errors} error(s) and {warnings} warning(s)"
        ))
        .hint("fix the files listed above, then run `pas validate` again"));
    }
    Ok(())
}
