//! Typed documents: each field named once; unknown fields and key order survive every
//! rewrite.
//!
//! Every file of a cell has a type here: `Cell`, [`Agent`], `Task`, `Reservations`, and the
//! config files `Isolation`, [`Policies`], `Permissions`; the statuses and other closed sets
//! of words are enums (`status.rs`), and so is every kind of event pas writes
//! ([`EventKind`]). A field's Rust name is its JSON key, declared once in a `record!`, so no
//! key is spelled in two places.
//!
//! # Reading, changing, writing
//!
//! The [`Doc`](crate::doc::Doc) read from disk stays the document; the typed value is a view of it:
//!
//! ```
//! # use pas::doc::Doc;
//! # use pas::model::{Agent, AgentStatus};
//! # let mut doc = Doc::parse(br#"{"agent_id": "a1", "x_owner": "ops", "status": "idle"}"#,
//! #     std::path::Path::new("agents/a1.json")).unwrap();
//! let mut agent = Agent::from_doc(&doc)?;          // strict: a data error names the field
//! agent.status = AgentStatus::Active;
//! agent.heartbeat_count += 1;
//! agent.write_into(&mut doc);                      // only the changed keys are touched
//! // or, inside a store update closure that hands out `&mut Doc`:
//! Agent::edit(&mut doc, |a| a.note = Some("step 2".into()))?;
//! # Ok::<(), pas::error::Error>(())
//! ```
//!
//! `write_into` compares each field with what its key on disk reads as and leaves equal
//! ones alone, byte for byte (an epoch `last_heartbeat` stays an epoch, a boolean
//! `auto_revive` a boolean, `3600` stays `3600`). A changed key is replaced where it stands
//! (`Doc::set`'s rule), a new key goes last, a removed one is taken out without moving the
//! others, and a changed nested object (`checkpoint`, `exit`, a reservation) is merged key
//! by key the same way. Optional fields that are absent stay absent: no `null` is written
//! that was not there. Unknown keys are in each record's `extra`, in file order; changing
//! `extra` changes them, and a known key put in `extra` is ignored (its field owns it).
//!
//! # Why this design
//!
//! Call sites get plain structs: fields to read, assign and match on, checked once when the
//! view is made, so the rules need no `Option<&str>` juggling or string compares. The store
//! hands a `&mut Doc` to its update closures and returns `Doc`s from reads, so the view sits
//! next to the document rather than owning it: `from_doc` to read, `write_into` or `edit`
//! to change. The alternatives lose something: serde's derive with `#[serde(flatten)] extra`
//! writes known fields in struct order (reordering a hand-written file), cannot tell an
//! absent key from a `null` one when writing, and its errors do not name the field; a
//! wrapper with a getter and setter per key spells every key twice and re-parses on every
//! read. The `record!` macro (in `field.rs`) gives each field a *mode* saying what absence
//! and `null` mean and whether `None` writes `null` or removes the key; the table is in
//! `field.rs`'s header.
//!
//! # What is read leniently
//!
//! Hand-written files in the seed prototypes' own types are read as meant, never misread:
//! timestamps may be RFC 3339, a naive ISO date-time (read as UTC) or epoch seconds (integer
//! or float); `auto_revive` may be `true`/`false` (`yes`/`no`); whole numbers may be written
//! as floats (`3.0`). Anything else of the wrong shape, and any word an enum does not know,
//! is a data error naming the file, the field and what is accepted. The exceptions keep
//! what the code has always deliberately tolerated: the agent's `health`, `ctx_state` and
//! `spend_state` are pas's own records of values it recomputes, so an unreadable one reads
//! as not recorded (and is overwritten on the next change); and a policy value of the wrong
//! type falls back to the built-in default (`policy.rs`'s `nonsense_values_fall_back_to_
//! defaults`), so [`Policies`] reads it as not set and names it in `unusable`. Policy words
//! (`auto_revive`, `restart_policy`, `handoff_approval`) are strict: a typo there would
//! silently change what happens to a dead agent.

#[macro_use]
pub(crate) mod field;
pub(crate) mod agent;
pub(crate) mod cell;
pub(crate) mod config;
pub(crate) mod event;
pub(crate) mod reservation;
pub(crate) mod status;
pub(crate) mod task;

// Public: the agent file (the doc test above reads one), what its fields hold, and the
// event kinds the store's events take. The other documents are the crate's own.
pub use agent::{
    Agent, BudgetRequest, CheckpointRecord, Exit, Failure, Limits, PendingDirective, Revival,
    ReviveRequest, Rlimits, StopRequest,
};
pub use config::Policies;
pub use event::EventKind;
pub use field::Unusable;
pub use status::{
    AgentStatus, AutoRevive, BreachPolicy, BudgetFlag, BudgetState, Directive, ExitCause,
    HandoffApproval, Health, ReportedStatus, ReservationStatus, RestartPolicy, Role, StopCause,
};

pub(crate) use cell::Cell;
pub(crate) use config::{Grant, Isolation, Permissions, Quantity, ResourceLimits, SecurityContext};
pub(crate) use field::{Field, Record};
pub(crate) use reservation::{Reservation, Reservations};
pub(crate) use status::{CellStatus, IsolationLevel, Priority, TaskStatus};
pub(crate) use task::{HandoffRequest, Task};

/// The string at `key` of `map`, when it is a usable id (for naming a file in errors).
pub(crate) fn id_in(map: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
    map.get(key)
        .and_then(serde_json::Value::as_str)
        .filter(|id| crate::store::check_id(crate::store::IdKind::Agent, id).is_ok())
        .map(str::to_string)
}

#[cfg(test)]
pub(crate) mod tests;
