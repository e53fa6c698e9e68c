//! The progress bar of a training run: steps done of the total, the last
//! step's loss, learning rate and tokens/s (DPO: reward accuracy), and the
//! DPO reference pass. Drawn on stderr only when it is a terminal and `CI`
//! is unset; every step is also logged at `info` level (`techne -v`).

use std::io::IsTerminal;

use techne_training::{TrainEvent, TrainKind};

/// Turns trainer events into a progress bar and log lines.
pub struct TrainProgress {
    bar: Option<indicatif::ProgressBar>,
    visible: bool,
    kind: TrainKind,
    total_steps: u64,
    /// Whether the bar counts steps (not DPO reference pairs).
    showing_steps: bool,
}

impl TrainProgress {
    /// A bar for a `kind` run; `enabled: false` (or no terminal, or `CI` set) draws nothing.
    pub fn new(enabled: bool, kind: TrainKind) -> Self {
        let visible = enabled && std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        Self { bar: None, visible, kind, total_steps: 0, showing_steps: false }
    }

    fn make_bar(&mut self, total: u64, position: u64, unit: &str) {
        if let Some(old) = self.bar.take() {
            old.finish_and_clear();
        }
        if !self.visible {
            return;
        }
        let bar = indicatif::ProgressBar::new(total);
        let template = format!("{{bar:30}} {{pos}}/{{len}} {unit}  eta {{eta}}  {{msg}}");
        let style = indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_position(position);
        self.bar = Some(bar);
    }

    /// Shows one trainer event.
    pub fn event(&mut self, event: &TrainEvent<'_>) {
        match event {
            TrainEvent::Prepared { examples, skipped, total_steps, trainable_params, resumed_from } => {
                tracing::info!(
                    kind = self.kind.as_str(),
                    examples,
                    skipped,
                    total_steps,
                    trainable_params,
                    resumed_from,
                    "training prepared"
                );
                self.total_steps = *total_steps as u64;
                self.make_bar(self.total_steps, resumed_from.unwrap_or(0) as u64, "steps");
                self.showing_steps = true;
            }
            TrainEvent::Reference { done, total } => {
                if self.showing_steps {
                    self.make_bar(*total as u64, 0, "DPO reference pairs");
                    self.showing_steps = false;
                }
                if let Some(bar) = &self.bar {
                    bar.set_position(*done as u64);
                }
            }
            TrainEvent::Step(record) => {
                let dpo = record
                    .dpo
                    .as_ref()
                    .map(|d| format!("  accuracy {:.2}  margin {:+.3}", d.accuracy, d.margin))
                    .unwrap_or_default();
                let message = format!(
                    "loss {:.4}  lr {:.2e}  {:.0} tokens/s{dpo}",
                    record.loss, record.lr, record.tokens_per_second
                );
                tracing::info!(step = record.step, "{message}");
                if !self.showing_steps {
                    self.make_bar(self.total_steps, record.step.saturating_sub(1) as u64, "steps");
                    self.showing_steps = true;
                }
                if let Some(bar) = &self.bar {
                    bar.set_position(record.step as u64);
                    bar.set_message(message);
                }
            }
            TrainEvent::Checkpoint { step, dir } => {
                tracing::info!(step, dir = %dir.display(), "checkpoint written");
            }
            TrainEvent::Exporting => {
                tracing::info!("merging the adapters, exporting to ONNX and registering");
                if let Some(bar) = &self.bar {
                    bar.set_message("merging, exporting to ONNX, registering…");
                }
            }
        }
    }

    /// Clears the bar.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
