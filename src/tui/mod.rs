//! `pas top`: a live, full-screen view of the fleet in the terminal, like `htop`.
//!
//! - [`model`]: the pure state (tree rows, selection, filter, keys), built from a snapshot
//!   of the same views `pas status` prints;
//! - [`view`]: drawing the model with ratatui (tested against stored screens);
//! - [`app`]: the terminal, the event loop, the background reads (woken by the store's
//!   change notifications, [`crate::store::changes`]).
//!
//! It reads the files everything else reads and changes them only through the code of the
//! matching commands (`pas cell set`, `pas revive`, `pas agent stop`), after a `y`.

pub mod app;
pub mod model;
pub mod view;
