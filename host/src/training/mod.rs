//! Training runs as the host drives them: the one entry point,
//! [`run_training`], that `techne train sft|dpo` and the multi-round loops
//! both call.
//!
//! It wraps the native trainer (crate `techne-training`: LoRA SFT and DPO,
//! checkpoints, merge, export, registration with lineage) with
//! - a progress bar (step, loss, learning rate, tokens/s; drawn only on a
//!   terminal and never in CI, see [`progress`]);
//! - outside control ([`TrainingControl`]): a first interrupt stops after the
//!   current step with a checkpoint (resumable with `resume: true`), a second
//!   aborts at once without writing anything;
//! - a training report in the output directory: `report.md` and a
//!   self-contained `report.html` with SVG loss, learning-rate and
//!   throughput curves (DPO: reward accuracy and margin), see [`report`];
//! - the hand-off to an external trainer ([`external`]): the data set written
//!   in TRL's formats, a command template run to completion, and the weights
//!   it leaves (GGUF, or a Hugging Face safetensors llama directory) imported
//!   and registered with lineage.

pub mod bench;
pub mod external;
pub mod hf;
pub mod progress;
pub mod report;
pub mod trainer_state;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

pub use techne_training::{Control, TrainConfig, TrainError, TrainEvent, TrainKind, TrainReport};

pub use external::{ExternalError, ExternalRecord, ExternalTrainer};

/// Stop and abort requests from outside a running training (signal
/// handlers, a loop's own budget). Shared through an `Arc`; checked after
/// every optimizer step.
#[derive(Debug, Default)]
pub struct TrainingControl {
    /// 0: run, 1: stop after this step with a checkpoint, 2: abort.
    state: AtomicU8,
}

impl TrainingControl {
    /// A control that asks for nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stop after the current step, writing a checkpoint (resumable).
    pub fn request_stop(&self) {
        let _ = self.state.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Abort after the current step without writing a checkpoint (like a crash).
    pub fn request_abort(&self) {
        self.state.store(2, Ordering::SeqCst);
    }

    /// What an interrupt signal does: the first asks to stop, any later one
    /// to abort. Returns the answer the trainer will now get.
    pub fn interrupt(&self) -> Control {
        match self.state.fetch_max(1, Ordering::SeqCst) {
            0 => Control::Stop,
            _ => {
                self.request_abort();
                Control::Abort
            }
        }
    }

    /// The answer the trainer gets after a step.
    pub fn answer(&self) -> Control {
        match self.state.load(Ordering::SeqCst) {
            0 => Control::Continue,
            1 => Control::Stop,
            _ => Control::Abort,
        }
    }
}

/// How [`run_training`] runs. `Default`: no progress bar, no outside
/// control, the native trainer.
#[derive(Debug, Clone, Default)]
pub struct TrainingOptions {
    /// Draw a progress bar on stderr (only when stderr is a terminal and `CI` is unset).
    pub progress: bool,
    /// Stop/abort requests from outside.
    pub control: Option<Arc<TrainingControl>>,
    /// Hand the training to an external command instead of the native trainer.
    pub external: Option<ExternalTrainer>,
}

/// The result of [`run_training`].
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The trainer's report (also `report.json` in the output directory).
    /// For an external run: the import's outcome, with no steps.
    pub report: TrainReport,
    /// `report.md` in the output directory.
    pub report_md: PathBuf,
    /// `report.html` in the output directory.
    pub report_html: PathBuf,
    /// What the external trainer ran, for an external run.
    pub external: Option<ExternalRecord>,
}

impl TrainOutcome {
    /// Whether the run stopped before its last step (on request); resume it
    /// with `resume: true` and the same settings.
    pub fn stopped_early(&self) -> bool {
        self.report.stopped_early
    }
}

/// Why a training run failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    /// The native trainer failed (bad settings or data, model, I/O, checkpoint, divergence, abort).
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The external trainer failed or left no usable weights.
    #[error(transparent)]
    External(#[from] ExternalError),
    /// The training report could not be written.
    #[error("cannot write the training report {path}: {message}; check that the output directory is writable")]
    Report {
        /// The report file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Runs one training: `kind` (SFT or DPO) with `config`, natively or through
/// `options.external`, then writes `report.md` and `report.html` into
/// `config.output_dir`.
///
/// Blocking (minutes on a CPU): call it from a blocking thread
/// (`tokio::task::spawn_blocking`). A stop request ends the run after the
/// current step with a checkpoint and returns `Ok` with
/// [`TrainOutcome::stopped_early`]; run it again with `resume: true` to
/// finish. An abort request returns [`TrainError::Aborted`].
pub fn run_training(
    kind: TrainKind,
    config: &TrainConfig,
    options: &TrainingOptions,
) -> Result<TrainOutcome, TrainingError> {
    if let Some(external) = &options.external {
        let (report, record) = external::run_external(kind, config, external, options.control.as_deref())?;
        let (report_md, report_html) = report::write(&report, &record.report_rows())?;
        return Ok(TrainOutcome { report, report_md, report_html, external: Some(record) });
    }
    let mut bar = progress::TrainProgress::new(options.progress, kind);
    let control = options.control.clone();
    let trained = match kind {
        TrainKind::Sft => techne_training::train_sft(config, |event| on_event(&mut bar, control.as_deref(), event)),
        TrainKind::Dpo => techne_training::train_dpo(config, |event| on_event(&mut bar, control.as_deref(), event)),
    };
    bar.finish();
    let report = trained?;
    let (report_md, report_html) = report::write(&report, &[])?;
    Ok(TrainOutcome { report, report_md, report_html, external: None })
}

fn on_event(bar: &mut progress::TrainProgress, control: Option<&TrainingControl>, event: &TrainEvent<'_>) -> Control {
    bar.event(event);
    match (event, control) {
        (TrainEvent::Step(_), Some(control)) => control.answer(),
        _ => Control::Continue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_interrupt_stops_and_the_second_aborts() {
        let control = TrainingControl::new();
        assert_eq!(control.answer(), Control::Continue);
        assert_eq!(control.interrupt(), Control::Stop);
        assert_eq!(control.answer(), Control::Stop);
        assert_eq!(control.interrupt(), Control::Abort);
        assert_eq!(control.answer(), Control::Abort);
        control.request_stop();
        assert_eq!(control.answer(), Control::Abort, "a stop request does not undo an abort");
    }
}
