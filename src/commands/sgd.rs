//! `predhead sgd` (see `../shared/contract.md`).

use crate::error::{Error, Result};

/// Arguments of `predhead sgd`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long)]
    pub config: std::path::PathBuf,
}

/// Runs `predhead sgd`.
pub fn run(args: &Args) -> Result<String> {
    let _ = crate::config::load_config(&args.config)?;
    Err(Error::invalid("command", "sgd is not implemented yet"))
}
