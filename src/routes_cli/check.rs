//! `mcpulse routes check FILE`.

use std::path::Path;

use mcpulse_sinks::routes::{RoutesFile, check};

use super::CliError;
use super::integrations::Integrations;

/// Parses `path` (located errors), builds every receiver integration (located errors),
/// and prints the report with its warnings.
pub fn run(path: &Path) -> Result<(), CliError> {
    let file = RoutesFile::load(path)?;
    Integrations::build(&file).map_err(CliError::Integrations)?;
    print!("{}", check(&file));
    Ok(())
}
