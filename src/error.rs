//! The crate's one error type.
//!
//! Every message names the offending field (as a dotted path such as `setting.dim` or
//! `state.w[1][3]`) and the bad value, on one line, so that the binary can print it to
//! stderr unchanged and exit with status 2.

use thiserror::Error;

/// Everything that can go wrong in predhead, from bad input to a numerical breakdown.
#[derive(Debug, Error)]
pub enum Error {
    /// A configuration, state, batch or spec field has a value outside its domain.
    #[error("{field}: {problem}")]
    Invalid {
        /// Dotted path of the field, e.g. `setting.feature_patches`.
        field: String,
        /// What is wrong, with the bad value quoted.
        problem: String,
    },
    /// A required field is absent.
    #[error("{field}: missing")]
    Missing {
        /// Dotted path of the missing field.
        field: String,
    },
    /// A field that the format does not know.
    #[error("{field}: unknown key")]
    UnknownKey {
        /// Dotted path of the unknown key.
        field: String,
    },
    /// A file could not be parsed at all (TOML or JSON syntax).
    #[error("{file}: {problem}")]
    Parse {
        /// The file name (or `config`, `state`, `batch`).
        file: String,
        /// The parser's message, folded onto one line.
        problem: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {problem}")]
    Io {
        /// The path.
        path: String,
        /// The operating system's message.
        problem: String,
    },
    /// A computation left the domain where it is defined (zero variance, non-finite state).
    #[error("{quantity}: {problem}")]
    Numerical {
        /// The quantity that broke down, e.g. `normalization variance of F_1`.
        quantity: String,
        /// What happened.
        problem: String,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Invalid`] for `field` with a message.
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// An [`Error::Numerical`] for `quantity` with a message.
    pub fn numerical(quantity: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Numerical {
            quantity: quantity.into(),
            problem: problem.into(),
        }
    }

    /// An [`Error::Io`] from an I/O error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, err: &std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            problem: err.to_string(),
        }
    }

    /// An [`Error::Parse`] with the parser's message folded onto one line.
    pub fn parse(file: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        let one_line = problem
            .to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Error::Parse {
            file: file.into(),
            problem: one_line,
        }
    }
}
