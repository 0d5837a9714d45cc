//! The crate's one error type.
//!
//! Every message names the offending field (as a dotted path such as `setting.dim` or
//! `state.w[1][3]`) and the bad value, on one line, so that the binary can print it to
//! stderr unchanged and exit with status 2.
//!
//! One line is guaranteed here, centrally: [`Error`]'s `Display` escapes every control
//! character of the field and of the problem (a newline is printed as `\n`, a carriage
//! return as `\r`, see [`one_line`]) and cuts each to at most [`MAX_FIELD_CHARS`] and
//! [`MAX_PROBLEM_CHARS`] characters. Values copied from the input into a message go through
//! [`echo`], which escapes them and cuts them to [`MAX_ECHO_CHARS`] characters.

use thiserror::Error;

/// The most characters of an input value that a message repeats ([`echo`]).
pub const MAX_ECHO_CHARS: usize = 80;
/// The most characters of a message's field (dotted path) ([`Error`]'s `Display`).
pub const MAX_FIELD_CHARS: usize = 160;
/// The most characters of a message's problem text ([`Error`]'s `Display`).
pub const MAX_PROBLEM_CHARS: usize = 400;
/// The most characters of the whole stderr line the binary prints.
pub const MAX_LINE_CHARS: usize = 640;

/// Whether `c` would break a line or is invisible control: the C0 and C1 controls
/// (`\n`, `\r`, `\t`, NEL, ...) and the Unicode line and paragraph separators.
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// `text` on one line of at most `max` characters: every control character and line
/// separator escaped as Rust does (`\n`, `\r`, `\t`, `\u{85}`, ...), and when the result is
/// longer than `max` characters, its first `max - 3` followed by `...`.
///
/// # Examples
/// ```
/// use predhead::error::one_line;
/// assert_eq!(one_line("lin\near", 80), "lin\\near");
/// assert_eq!(one_line("abcdefgh", 6), "abc...");
/// assert_eq!(one_line("plain", 80), "plain");
/// ```
pub fn one_line(text: &str, max: usize) -> String {
    let max = max.max(4);
    // Escaped pieces are kept whole: a cut falls between characters of the input.
    let mut kept: Vec<String> = Vec::new();
    let mut chars = 0usize;
    for c in text.chars() {
        let piece = if needs_escape(c) {
            c.escape_debug().to_string()
        } else {
            c.to_string()
        };
        let n = piece.chars().count();
        if chars + n > max {
            // Too long: drop pieces until `...` fits.
            while chars + 3 > max {
                match kept.pop() {
                    Some(p) => chars -= p.chars().count(),
                    None => break,
                }
            }
            kept.push("...".to_string());
            break;
        }
        chars += n;
        kept.push(piece);
    }
    kept.concat()
}

/// An input value as a message repeats it: control characters escaped and at most
/// [`MAX_ECHO_CHARS`] characters ([`one_line`]).
///
/// # Examples
/// ```
/// use predhead::error::echo;
/// assert_eq!(echo("6\n7"), "6\\n7");
/// assert_eq!(echo(&"x".repeat(1000)).chars().count(), predhead::error::MAX_ECHO_CHARS);
/// ```
pub fn echo(value: impl std::fmt::Display) -> String {
    one_line(&value.to_string(), MAX_ECHO_CHARS)
}

fn bounded_field(s: &str) -> String {
    one_line(s, MAX_FIELD_CHARS)
}

fn bounded_problem(s: &str) -> String {
    one_line(s, MAX_PROBLEM_CHARS)
}

/// Everything that can go wrong in predhead, from bad input to a numerical breakdown.
#[derive(Debug, Error)]
pub enum Error {
    /// A configuration, state, batch or spec field has a value outside its domain.
    #[error("{}: {}", bounded_field(.field), bounded_problem(.problem))]
    Invalid {
        /// Dotted path of the field, e.g. `setting.feature_patches`.
        field: String,
        /// What is wrong, with the bad value quoted.
        problem: String,
    },
    /// A required field is absent.
    #[error("{}: missing", bounded_field(.field))]
    Missing {
        /// Dotted path of the missing field.
        field: String,
    },
    /// A field that the format does not know.
    #[error("{}: unknown key", bounded_field(.field))]
    UnknownKey {
        /// Dotted path of the unknown key.
        field: String,
    },
    /// A file could not be parsed at all (TOML or JSON syntax).
    #[error("{}: {}", bounded_field(.file), bounded_problem(.problem))]
    Parse {
        /// The file name (or `config`, `state`, `batch`).
        file: String,
        /// The parser's message, folded onto one line.
        problem: String,
    },
    /// A file could not be read or written.
    #[error("{}: {}", bounded_field(.path), bounded_problem(.problem))]
    Io {
        /// The path.
        path: String,
        /// The operating system's message.
        problem: String,
    },
    /// A computation left the domain where it is defined (zero variance, non-finite state).
    #[error("{}: {}", bounded_field(.quantity), bounded_problem(.problem))]
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
        let folded = problem
            .to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Error::Parse {
            file: file.into(),
            problem: folded,
        }
    }
}
