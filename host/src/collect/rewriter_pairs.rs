//! The Question Rewriter's DPO pairs (arXiv 2408.10573, section 3) on a
//! K-QA-style dataset. Per question: the plugin samples distinct rewrites
//! (`sample-rewrites`); the answering model answers the original and every
//! rewrite greedily; the judge scores each answer on K-QA's
//! comprehensiveness and contradiction ([`super::kqa`]), always against the
//! original question's statements; the plugin turns the judged answers into
//! preference pairs (`build-pairs`: dominance, top N+ better × N− random
//! worse). The pairs are written as `prompt`/`chosen`/`rejected` JSONL, the
//! DPO format techne-training reads; every judged answer goes to a second
//! JSONL file for inspection.

use std::path::PathBuf;

use crate::backends::{ChatMessage, GenerationRequest, ModelSet, Prompt, Role, Sampling};
use crate::config::RunConfig;
use crate::sandbox::plugin::{CriterionScore, JudgedQuestion, PreferencePair, TrainerExtension};
use crate::sandbox::{WorkItem, item_seed};

use super::kqa::{self, KqaJudge, KqaRecord, KqaScores};
use super::{CollectError, CollectSettings};

/// Caller tag of the answering model's calls.
const CALLER: &str = "collect-answers";

/// One judged question or rewrite, as written to the judgements file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JudgedAnswer {
    /// The dataset record's id.
    pub id: String,
    /// Whether this is the original question (else a rewrite).
    pub original: bool,
    /// The question sent to the answering model.
    pub question: String,
    /// Its answer.
    pub answer: String,
    /// The answer's K-QA scores.
    pub scores: KqaScores,
}

/// What one question gave.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QuestionOutcome {
    /// The record's id.
    pub id: String,
    /// Distinct rewrites the plugin sampled.
    pub rewrites: usize,
    /// The original question's scores.
    pub original: KqaScores,
    /// Rewrites whose answer is at least as good on both criteria and
    /// better on one (counted by the host for the summary; the plugin
    /// decides the pairs).
    pub better: usize,
    /// Rewrites at most as good on both and worse on one.
    pub worse: usize,
    /// Pairs the plugin built.
    pub pairs: usize,
}

/// The result of a collection.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RewriterPairsSummary {
    /// Per question, in dataset order.
    pub questions: Vec<QuestionOutcome>,
    /// Pairs written.
    pub pairs: usize,
    /// Judge replies without a verdict (counted as False).
    pub unparsed_verdicts: u32,
    /// The pairs file.
    pub pairs_path: PathBuf,
    /// The judged answers file.
    pub judgements_path: PathBuf,
}

/// Where the pairs go when `[collect] output` is not set.
pub fn default_pairs_path(config: &RunConfig) -> PathBuf {
    config.run.output_dir.clone().unwrap_or_else(|| config.base_dir.clone()).join("rewriter-pairs.jsonl")
}

fn dominance(original: &KqaScores, other: &KqaScores) -> (bool, bool) {
    let better = other.comprehensiveness > original.comprehensiveness || other.contradiction < original.contradiction;
    let worse = other.comprehensiveness < original.comprehensiveness || other.contradiction > original.contradiction;
    (better && !worse, worse && !better)
}

fn judged(question: &str, answer: &str, scores: &KqaScores) -> JudgedQuestion {
    JudgedQuestion {
        question: question.to_owned(),
        answer: answer.to_owned(),
        scores: vec![
            CriterionScore {
                name: kqa::COMPREHENSIVENESS.into(),
                value: scores.comprehensiveness,
                higher_is_better: true,
            },
            CriterionScore { name: kqa::CONTRADICTION.into(), value: scores.contradiction, higher_is_better: false },
        ],
    }
}

/// Greedy answer of `model` to `question` (one user turn).
pub async fn answer(models: &ModelSet, model: &str, question: &str, max_tokens: u32) -> Result<String, CollectError> {
    let request = GenerationRequest {
        prompt: Prompt::Chat(vec![ChatMessage::new(Role::User, question)]),
        sampling: Sampling { max_tokens, ..Sampling::default() },
    };
    let generation = models
        .generate(model, CALLER, request)
        .await
        .map_err(|source| CollectError::Model { model: model.to_owned(), source })?;
    Ok(generation.choices.into_iter().next().map(|c| c.text.trim().to_owned()).unwrap_or_default())
}

/// Collects the pairs of every record of `config`'s dataset (limited by
/// `run.limit`) with `settings`, writing them to `pairs_path` (and the
/// judged answers beside it). `progress` sees each question as it is done.
pub async fn collect(
    config: &RunConfig,
    settings: &CollectSettings,
    models: &ModelSet,
    pairs_path: PathBuf,
    progress: &mut (dyn FnMut(&QuestionOutcome) + Send),
) -> Result<RewriterPairsSummary, CollectError> {
    let judge_model = settings.judge_model.as_deref().ok_or_else(|| {
        CollectError::Config("rewriter pairs need a judge: set `judge-model` in [collect] to a [models.NAME]".into())
    })?;
    super::require_model(config, "judge-model", judge_model)?;
    super::require_model(config, "answer-model", &settings.answer_model)?;
    let dataset = config.dataset.as_ref().ok_or_else(|| {
        CollectError::Config("rewriter pairs need a K-QA-style [dataset] (Question, Must_have, Nice_to_have)".into())
    })?;
    let mut records: Vec<KqaRecord> = kqa::read_records(&dataset.path)?;
    records.drain(..dataset.skip.min(records.len()));
    if let Some(limit) = config.run.limit {
        records.truncate(limit);
    }
    let plugin = super::load_trainer(config, &settings.plugin, TrainerExtension::RewriterTrainer, models).await?;
    let judge = KqaJudge::new(models.clone(), judge_model, settings.judge_max_tokens).with_mode(settings.judge_mode);
    let plugin_error = |item: &str| {
        let (plugin, item) = (settings.plugin.clone(), item.to_owned());
        move |source| CollectError::Plugin { plugin, item, source: Box::new(source) }
    };

    let mut pairs: Vec<PreferencePair> = Vec::new();
    let mut judgements: Vec<JudgedAnswer> = Vec::new();
    let mut outcomes = Vec::new();
    let mut unparsed = 0;
    for record in &records {
        let item = WorkItem { id: record.id.clone(), seed: item_seed(config.run.seed, &record.id) };
        let mut instance = plugin.instantiate(&item).await.map_err(plugin_error(&record.id))?;
        let rewrites = instance.sample_rewrites(&record.question).await.map_err(plugin_error(&record.id))?;
        let mut judged_rewrites = Vec::with_capacity(rewrites.len());
        let mut original = None;
        for (index, question) in std::iter::once(&record.question).chain(&rewrites).enumerate() {
            let text = answer(models, &settings.answer_model, question, settings.answer_max_tokens).await?;
            let scores = judge.score(record, &text).await?;
            unparsed += scores.unparsed;
            judgements.push(JudgedAnswer {
                id: record.id.clone(),
                original: index == 0,
                question: question.clone(),
                answer: text.clone(),
                scores,
            });
            if index == 0 {
                original = Some((judged(question, &text, &scores), scores));
            } else {
                judged_rewrites.push((judged(question, &text, &scores), scores));
            }
        }
        let Some((original, original_scores)) = original else { continue };
        let wit_rewrites: Vec<JudgedQuestion> = judged_rewrites.iter().map(|(j, _)| j.clone()).collect();
        let built = instance.build_pairs(&original, &wit_rewrites).await.map_err(plugin_error(&record.id))?;
        let (mut better, mut worse) = (0, 0);
        for (_, scores) in &judged_rewrites {
            let (b, w) = dominance(&original_scores, scores);
            better += usize::from(b);
            worse += usize::from(w);
        }
        let outcome = QuestionOutcome {
            id: record.id.clone(),
            rewrites: rewrites.len(),
            original: original_scores,
            better,
            worse,
            pairs: built.len(),
        };
        progress(&outcome);
        outcomes.push(outcome);
        pairs.extend(built);
    }
    let judgements_path = pairs_path.with_file_name(format!(
        "{}.judgements.jsonl",
        pairs_path.file_stem().and_then(|s| s.to_str()).unwrap_or("rewriter-pairs")
    ));
    super::write_jsonl(&pairs_path, &pairs)?;
    super::write_jsonl(&judgements_path, &judgements)?;
    Ok(RewriterPairsSummary {
        questions: outcomes,
        pairs: pairs.len(),
        unparsed_verdicts: unparsed,
        pairs_path,
        judgements_path,
    })
}
