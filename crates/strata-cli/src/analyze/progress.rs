//! The progress spinner of `strata analyze`, fed by the engine's progress
//! reports.

use std::io::IsTerminal;
use std::sync::Arc;

use strata_analysis::{Progress, ProgressFn};

/// A spinner on stderr naming the current stage; absent when stderr is not a
/// terminal, so piped and captured output never carries it.
pub struct Spinner(Option<indicatif::ProgressBar>);

impl Spinner {
    /// A spinner if stderr is a terminal.
    pub fn on_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            Spinner(Some(bar))
        } else {
            Spinner(None)
        }
    }

    /// The engine callback updating the spinner, if there is one.
    pub fn callback(&self) -> Option<ProgressFn> {
        let bar = self.0.clone()?;
        Some(Arc::new(move |p: Progress| {
            if p.fraction >= 1.0 {
                // A look is done; the next one (`--looks`) starts afresh.
                bar.set_message("");
            } else {
                bar.set_message(p.stage);
            }
        }))
    }

    /// Removes the spinner.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
