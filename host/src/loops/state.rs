//! A loop's persistent state: `loop.json` (what identifies the loop, the
//! completed steps of every round, the current model, per-round metrics),
//! rewritten atomically after every step, and `steps.jsonl`, an append-only
//! record of every completed step (so a resumed loop can be checked not to
//! have redone one).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Format version of `loop.json`.
pub const STATE_FORMAT: u32 = 1;

/// `loop.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Format version of this file.
    pub format: u32,
    /// The techne version that started the loop.
    pub techne_version: String,
    /// The loop kind (`self-evolution`, `llamaduo`, …).
    pub kind: String,
    /// The loop's name (`run.name`); trained models are `<name>-r<round>`.
    pub name: String,
    /// The configuration file (absolute) the loop started from.
    pub config_path: PathBuf,
    /// sha256 of the configuration text and the overrides that change results.
    pub config_sha256: String,
    /// sha256 of each plugin file, by configured name.
    pub plugins: BTreeMap<String, String>,
    /// The base model (a registry name, `default`, or a GGUF file).
    pub base_model: String,
    /// The model the next round starts from (the base before round 1).
    pub current_model: String,
    /// Metrics of the base model, when the kind evaluates it before round 1.
    #[serde(default)]
    pub baseline: BTreeMap<String, f64>,
    /// Whether the baseline evaluation is done.
    #[serde(default)]
    pub baseline_done: bool,
    /// Every round started so far, in order.
    pub rounds: Vec<RoundRecord>,
    /// Why the loop ended (`None` while it runs).
    pub finished: Option<String>,
    /// The strategy plugin's key/value state (the WIT `state` interface) as
    /// of the last completed step, values hex-encoded: restored when the
    /// loop resumes, so a plugin's state is kept across rounds and kills.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub strategy_state: BTreeMap<String, String>,
}

/// One round in `loop.json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RoundRecord {
    /// 1-based round number.
    pub round: u32,
    /// The steps completed, in order.
    pub steps: Vec<String>,
    /// The model this round trained and registered.
    pub model: Option<String>,
    /// Metrics by name (evaluation scores, data sizes, final loss, …).
    pub metrics: BTreeMap<String, f64>,
    /// The training loss of every optimizer step.
    pub losses: Vec<f64>,
    /// Items the strategy plugin failed on (reasons in the round's `failures.jsonl`).
    pub failures: u64,
    /// Seconds spent in this round's completed steps.
    pub seconds: f64,
}

impl LoopState {
    /// The record of `round`, created when missing.
    pub fn round_mut(&mut self, round: u32) -> &mut RoundRecord {
        if let Some(i) = self.rounds.iter().position(|r| r.round == round) {
            return &mut self.rounds[i];
        }
        self.rounds.push(RoundRecord { round, ..RoundRecord::default() });
        self.rounds.sort_by_key(|r| r.round);
        let i = self.rounds.iter().position(|r| r.round == round).unwrap_or(self.rounds.len() - 1);
        &mut self.rounds[i]
    }

    /// The record of `round`, if started.
    pub fn round(&self, round: u32) -> Option<&RoundRecord> {
        self.rounds.iter().find(|r| r.round == round)
    }

    /// Whether `step` of `round` is completed.
    pub fn step_done(&self, round: u32, step: &str) -> bool {
        self.round(round).is_some_and(|r| r.steps.iter().any(|s| s == step))
    }

    /// Read `loop.json` from `dir`; `None` when there is none or it cannot be read.
    pub fn read(dir: &Path) -> Option<LoopState> {
        let text = std::fs::read_to_string(dir.join(STATE_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The strategy's state entries, decoded; `Err` names a key whose value is not hex.
    pub fn strategy_entries(&self) -> Result<BTreeMap<String, Vec<u8>>, String> {
        self.strategy_state
            .iter()
            .map(|(k, v)| hex::decode(v).map(|bytes| (k.clone(), bytes)).map_err(|_| k.clone()))
            .collect()
    }

    /// Replace the recorded strategy state with `entries`.
    pub fn set_strategy_entries(&mut self, entries: &BTreeMap<String, Vec<u8>>) {
        self.strategy_state = entries.iter().map(|(k, v)| (k.clone(), hex::encode(v))).collect();
    }

    /// Write `loop.json` into `dir` atomically.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::sandbox::component_cache::write_atomically(&dir.join(STATE_FILE), &json)
    }
}

/// The state file's name in a loop directory.
pub const STATE_FILE: &str = "loop.json";
/// The completed-steps record's name in a loop directory.
pub const STEPS_FILE: &str = "steps.jsonl";

/// One line of `steps.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLine {
    /// The round (0: before the first round, e.g. the baseline).
    pub round: u32,
    /// The step's name.
    pub step: String,
    /// Seconds it took.
    pub seconds: f64,
}

/// Append a completed step to `dir/steps.jsonl` (flushed to disk).
pub fn append_step(dir: &Path, line: &StepLine) -> std::io::Result<()> {
    append_jsonl(&dir.join(STEPS_FILE), line)
}

/// Append one JSON line to `path` and flush it to disk.
pub fn append_jsonl<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path)?;
    if file.metadata()?.len() > 0 {
        // A line torn by a killed process is ended first, so it stays one bad line.
        use std::io::{Read as _, Seek as _};
        file.seek(std::io::SeekFrom::End(-1))?;
        let mut last = [0u8];
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.insert(0, b'\n');
        }
    }
    file.write_all(&line)?;
    file.sync_data()
}

/// Read every well-formed line of a JSONL file (a torn last line from a
/// killed process is skipped); a missing file is empty.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Vec<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Write `values` as a JSONL file atomically.
pub fn write_jsonl<T: Serialize>(path: &Path, values: &[T]) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    for value in values {
        bytes.extend(serde_json::to_vec(value).map_err(std::io::Error::other)?);
        bytes.push(b'\n');
    }
    crate::sandbox::component_cache::write_atomically(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> LoopState {
        LoopState {
            format: STATE_FORMAT,
            techne_version: "0".into(),
            kind: "self-evolution".into(),
            name: "t".into(),
            config_path: PathBuf::from("/c.toml"),
            config_sha256: "abc".into(),
            plugins: BTreeMap::new(),
            base_model: "default".into(),
            current_model: "default".into(),
            baseline: BTreeMap::new(),
            baseline_done: false,
            rounds: Vec::new(),
            finished: None,
            strategy_state: BTreeMap::new(),
        }
    }

    #[test]
    fn strategy_state_round_trips_as_hex_and_bad_hex_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state();
        let entries: BTreeMap<String, Vec<u8>> =
            [("calls".to_string(), b"3".to_vec()), ("blob".to_string(), vec![0, 255, 7])].into();
        s.set_strategy_entries(&entries);
        s.write(dir.path()).unwrap();
        let read = LoopState::read(dir.path()).unwrap();
        assert_eq!(read.strategy_entries(), Ok(entries));
        assert_eq!(read.strategy_state["blob"], "00ff07");

        let mut bad = read;
        bad.strategy_state.insert("broken".into(), "zz".into());
        assert_eq!(bad.strategy_entries(), Err("broken".to_string()));
        // A loop.json written before strategy state existed still reads.
        let old = serde_json::to_value(state()).unwrap();
        assert!(old.get("strategy_state").is_none());
        let back: LoopState = serde_json::from_value(old).unwrap();
        assert!(back.strategy_state.is_empty());
    }

    #[test]
    fn rounds_are_created_in_order_and_steps_are_remembered() {
        let mut s = state();
        s.round_mut(2).steps.push("train".into());
        s.round_mut(1).steps.push("write-pairs".into());
        assert_eq!(s.rounds.iter().map(|r| r.round).collect::<Vec<_>>(), vec![1, 2]);
        assert!(s.step_done(2, "train"));
        assert!(!s.step_done(1, "train"));
        assert!(!s.step_done(3, "train"));
    }

    #[test]
    fn state_round_trips_through_the_directory_and_torn_jsonl_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state();
        s.round_mut(1).metrics.insert("bleu4".into(), 0.25);
        s.write(dir.path()).unwrap();
        assert_eq!(LoopState::read(dir.path()), Some(s));

        append_step(dir.path(), &StepLine { round: 1, step: "train".into(), seconds: 1.0 }).unwrap();
        let path = dir.path().join(STEPS_FILE);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"round\": 1, \"st").unwrap();
        drop(f);
        append_step(dir.path(), &StepLine { round: 2, step: "train".into(), seconds: 2.0 }).unwrap();
        let lines: Vec<StepLine> = read_jsonl(&path).unwrap();
        assert_eq!(
            lines,
            vec![
                StepLine { round: 1, step: "train".into(), seconds: 1.0 },
                StepLine { round: 2, step: "train".into(), seconds: 2.0 }
            ]
        );
    }
}
