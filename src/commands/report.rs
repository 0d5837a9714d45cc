//! `predhead report`, `predhead sweep` and `predhead merge`.

use crate::error::{Error, Result};

/// Arguments of `predhead report`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The reports directory (specs in, reports out).
    #[arg(long, default_value = "reports")]
    pub dir: std::path::PathBuf,
}

/// Arguments of `predhead sweep`.
#[derive(clap::Args, Debug, Clone)]
pub struct SweepArgs {
    /// The sweep spec (TOML).
    pub spec: std::path::PathBuf,
}

/// Arguments of `predhead merge`.
#[derive(clap::Args, Debug, Clone)]
pub struct MergeArgs {
    /// Shard result files.
    pub files: Vec<std::path::PathBuf>,
}

/// Runs `predhead report`.
pub fn run(_args: &Args) -> Result<String> {
    Err(Error::invalid("command", "report is not implemented yet"))
}

/// Runs `predhead sweep`.
pub fn run_sweep(_args: &SweepArgs) -> Result<String> {
    Err(Error::invalid("command", "sweep is not implemented yet"))
}

/// Runs `predhead merge`.
pub fn run_merge(_args: &MergeArgs) -> Result<String> {
    Err(Error::invalid("command", "merge is not implemented yet"))
}
