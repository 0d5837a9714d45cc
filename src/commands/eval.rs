//! `predhead eval` (see `../shared/contract.md`).

use crate::error::{Error, Result};

/// Arguments of `predhead eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long)]
    pub config: std::path::PathBuf,
}

/// Runs `predhead eval`.
pub fn run(args: &Args) -> Result<String> {
    let _ = crate::config::load_config(&args.config)?;
    Err(Error::invalid("command", "eval is not implemented yet"))
}
