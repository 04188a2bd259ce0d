//! `fedsim report`: a report (summary.md and figures) of saved run directories.

use std::path::PathBuf;

use anyhow::Result;

use crate::report::ReportOptions;

/// Writes a report; fails (after writing it) when a run had to be left out.
pub fn report(runs: &[PathBuf], options: &ReportOptions) -> Result<()> {
    let report = crate::report::write(runs, options)?;
    println!("{}", report.brief());
    anyhow::ensure!(
        report.skipped.is_empty(),
        "{} of {} runs could not be read and were left out of {}:\n{}",
        report.skipped.len(),
        runs.len(),
        report.summary.display(),
        report.skipped.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
    );
    Ok(())
}

/// The command line as one string a shell would accept (arguments with spaces quoted).
pub fn shell_words(words: Vec<String>) -> String {
    words
        .into_iter()
        .map(|w| if w.contains(char::is_whitespace) { format!("'{w}'") } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}
