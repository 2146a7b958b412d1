//! The one error type of `pas` and the one place that maps errors to exit codes.
//!
//! Every failure a user can cause becomes an [`Error`] with a [`Kind`]; the CLI prints
//! `pas: <message>` (and a hint line when there is one) on stderr and exits with
//! `Kind::exit_code`. The codes are documented in `docs/cli.md`; keep both in step.

use std::fmt;
use std::path::Path;

/// What went wrong, as far as a calling script needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Something failed while doing the work (I/O, fsync, a process that would not start).
    Failure,
    /// The command line or an input value is wrong; nothing was changed.
    Usage,
    /// A cell, agent, task or file that was named does not exist.
    NotFound,
    /// The request collides with what is there: duplicate id, ambiguous name, a limit reached.
    Conflict,
    /// A file on disk is malformed or breaks its schema.
    Data,
    /// Another process holds what is needed (for example the watch lock).
    Busy,
    /// There was nothing to do (for example no task ready to claim).
    Empty,
    /// A wait ran out of time.
    Timeout,
    /// `config/permissions.json` or a policy does not allow the action.
    Denied,
    /// The store cannot be reached or has no quorum (the etcd store): nothing was written,
    /// or the message says the outcome is unknown and how to check it.
    Unavailable,
    /// A monitoring verdict (`pas check`, `pas budget check`): the exit code is the
    /// verdict itself (Nagios convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), already
    /// printed on stdout.
    Verdict(u8),
}

impl Kind {
    /// The process exit status for this kind of error (see `docs/cli.md`).
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Kind::Failure => 1,
            Kind::Usage => 2,
            Kind::NotFound => 3,
            Kind::Conflict => 4,
            Kind::Data => 5,
            Kind::Busy => 6,
            Kind::Empty => 7,
            Kind::Timeout => 8,
            Kind::Denied => 9,
            Kind::Unavailable => 10,
            Kind::Verdict(code) => code,
        }
    }

    /// The HTTP status `pas serve` answers this kind of error with (see `docs/http.md`):
    /// the caller's mistakes are 4xx, the server's trouble 5xx.
    pub(crate) fn http_status(self) -> u16 {
        match self {
            Kind::Usage => 400,
            Kind::Denied => 403,
            Kind::NotFound | Kind::Empty => 404,
            Kind::Conflict => 409,
            Kind::Data => 422,
            Kind::Failure | Kind::Verdict(_) => 500,
            Kind::Busy | Kind::Unavailable => 503,
            Kind::Timeout => 504,
        }
    }
}

/// An error that knows its exit code and, where useful, how to fix it.
#[derive(Debug, Clone)]
pub struct Error {
    /// Which exit code the failure maps to.
    pub kind: Kind,
    /// One line saying what is wrong.
    pub message: String,
    /// One line saying what to do about it.
    pub hint: Option<String>,
    /// For a failed change: whether it was made anyway (committed, but something after the
    /// commit point failed). `None` when the error is not about a change.
    pub committed: Option<bool>,
}

/// Result with the `pas` error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
            committed: None,
        }
    }

    /// Adds the hint line shown under the message.
    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Says whether the change the command was making happened, in the message too.
    pub(crate) fn outcome(mut self, committed: bool) -> Self {
        self.message = if committed {
            format!("{}; the change was made", self.message)
        } else {
            format!("{}; nothing was changed", self.message)
        };
        self.committed = Some(committed);
        self
    }

    /// A usage error (exit 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Error::new(Kind::Usage, message)
    }

    /// A not-found error (exit 3).
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Error::new(Kind::NotFound, message)
    }

    /// A conflict error (exit 4).
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Error::new(Kind::Conflict, message)
    }

    /// A data error (exit 5).
    pub(crate) fn data(message: impl Into<String>) -> Self {
        Error::new(Kind::Data, message)
    }

    /// Busy: another process holds what is needed (exit 6).
    pub(crate) fn busy(message: impl Into<String>) -> Self {
        Error::new(Kind::Busy, message)
    }

    /// A failure (exit 1).
    pub(crate) fn failure(message: impl Into<String>) -> Self {
        Error::new(Kind::Failure, message)
    }

    /// The message with its hint, as one line (`MESSAGE; HINT`): what `pas serve` and
    /// `pas mcp` answer with, where the CLI prints the two on stderr.
    pub(crate) fn line(&self) -> String {
        match &self.hint {
            Some(hint) => format!("{}; {hint}", self.message),
            None => self.message.clone(),
        }
    }

    /// An I/O failure on `path` while doing `what` ("write", "read", ...).
    pub(crate) fn io(what: &str, path: &Path, err: impl fmt::Display) -> Self {
        Error::failure(format!("cannot {what} {}: {err}", path.display()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_nonzero() {
        let kinds = [
            Kind::Failure,
            Kind::Usage,
            Kind::NotFound,
            Kind::Conflict,
            Kind::Data,
            Kind::Busy,
            Kind::Empty,
            Kind::Timeout,
            Kind::Denied,
        ];
        let mut codes: Vec<u8> = kinds.iter().map(|k| k.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains(&0));
    }

    #[test]
    fn http_statuses_are_4xx_for_the_callers_mistakes_and_5xx_for_the_servers() {
        let table = [
            (Kind::Usage, 400),
            (Kind::Denied, 403),
            (Kind::NotFound, 404),
            (Kind::Empty, 404),
            (Kind::Conflict, 409),
            (Kind::Data, 422),
            (Kind::Failure, 500),
            (Kind::Verdict(2), 500),
            (Kind::Busy, 503),
            (Kind::Timeout, 504),
        ];
        for (kind, status) in table {
            assert_eq!(kind.http_status(), status, "{kind:?}");
        }
    }
}
