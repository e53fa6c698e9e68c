//! One work item through the pipeline: rewriter → policy → solver, the
//! answer model or a writer (Self-Evolution's QA-pair writing), then an
//! optional judge plugin (LlamaDuo's judge); then the run's metrics score
//! it. Every stage failure is recorded on the item; the rest of the run
//! goes on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::backends::{ChatMessage, GenerationRequest, ModelSet, Prompt, Role as ChatRole, Sampling};
use crate::config::PipelineConfig;
use crate::sandbox::{Plugin, Role, TraceStep, WorkItem, item_seed};

use super::RunError;
use super::control::{StopReason, StopSignal};
use super::dataset::{AnswerStatements, Item};
use super::output::{ItemFailure, ItemResult};
use crate::backends::meter::{Budget, UsageMeter};
use crate::eval::{Judge, Metric, RunMetric};

/// One unit of work: a technique applied to an item, with its place in the output.
#[derive(Clone)]
pub struct WorkUnit {
    /// Position in the results (technique order, then dataset order).
    pub order: usize,
    /// The technique.
    pub pipeline: Arc<Pipeline>,
    /// The item.
    pub item: Item,
}

/// How a run scores each finished item: the reference metrics, and the LLM
/// judge when `llm-judge` is among the metrics.
#[derive(Debug, Clone, Default)]
pub struct Scoring {
    /// Reference metrics (pure functions of answer and reference).
    pub metrics: Vec<Metric>,
    /// The judge of the `llm-judge` metric.
    pub judge: Option<Judge>,
    /// The judge of the `k-qa-*` metrics (K-QA's statement prompts).
    pub kqa: Option<crate::collect::kqa::KqaJudge>,
}

impl Scoring {
    /// The scoring a configuration asks for, judging with `models`.
    pub fn new(config: &crate::config::RunConfig, models: &ModelSet) -> Self {
        let run_metrics = super::run_metrics(config);
        let metrics = run_metrics
            .iter()
            .filter_map(|m| match m {
                RunMetric::Reference(m) => Some(*m),
                _ => None,
            })
            .collect();
        let judge_config = config.evaluation.as_ref().and_then(|e| e.judge.clone());
        let kqa = judge_config
            .as_ref()
            .filter(|_| {
                run_metrics.iter().any(|m| matches!(m, RunMetric::KqaComprehensiveness | RunMetric::KqaContradiction))
            })
            .map(|j| crate::collect::kqa::KqaJudge::new(models.clone(), j.model.clone(), j.max_tokens));
        let judge = match judge_config {
            Some(judge) if run_metrics.contains(&RunMetric::LlmJudge) => Some(Judge::new(judge, models.clone())),
            _ => None,
        };
        Self { metrics, judge, kqa }
    }

    /// Score one finished item; the judge's seeds derive from `seed`.
    /// `statements` are the item's K-QA statements, for the `k-qa-*` metrics.
    pub async fn score(&self, result: &mut ItemResult, statements: Option<&AnswerStatements>, seed: u64) {
        result.score(&self.metrics);
        if let Some(judge) = &self.judge {
            result.score_with_judge(judge, seed).await;
        }
        if let (Some(kqa), Some(statements)) = (&self.kqa, statements) {
            result.score_with_kqa(kqa, statements).await;
        }
    }
}

/// Run `units`, at most `concurrency` at once. Before a unit starts, the stop
/// signal and the budget are checked; a unit that does not start is left
/// out of the results (a resumed run picks it up). Each finished unit is
/// scored with `scoring` and passed to `finished` (the journal) as soon as
/// it ends. Results come back in `order`.
pub async fn run_units(
    units: Vec<WorkUnit>,
    run_seed: u64,
    concurrency: usize,
    control: RunControl,
    meter: Arc<UsageMeter>,
    scoring: Arc<Scoring>,
    finished: Arc<dyn Fn(&ItemResult) + Send + Sync>,
) -> Vec<(usize, ItemResult)> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for unit in units {
        let semaphore = semaphore.clone();
        let control = control.clone();
        let finished = finished.clone();
        let meter = meter.clone();
        let scoring = scoring.clone();
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            if let Some(reason) = meter.exhausted(&control.budget) {
                control.stop.stop(StopReason::Budget(reason));
            }
            if control.stop.is_stopped() {
                return None;
            }
            let judge_seed = item_seed(run_seed ^ JUDGE_SEED_SALT, &unit.item.id);
            let statements = unit.item.statements.clone();
            let mut result = unit.pipeline.run_item(unit.item, run_seed).await;
            scoring.score(&mut result, statements.as_ref(), judge_seed).await;
            finished(&result);
            Some((unit.order, result))
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Some(done)) => results.push(done),
            Ok(None) => {}
            Err(e) => tracing::error!("a work item's task failed: {e}"),
        }
    }
    results.sort_by_key(|(order, _)| *order);
    results
}

/// Mixed into the run seed for the judge's requests, so they do not share
/// seeds with the answer model's.
const JUDGE_SEED_SALT: u64 = 0x6a75_6467_6500_0000;

/// What may stop a run early: the stop signal (SIGINT/SIGTERM) and the budget.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    /// Checked before each item starts.
    pub stop: Arc<StopSignal>,
    /// Checked against the models' usage before each item starts.
    pub budget: Budget,
}

/// The assembled stages of one technique.
pub struct Pipeline {
    name: String,
    rewriter: Option<Arc<Plugin>>,
    policy: Option<Arc<Plugin>>,
    solver: Option<Arc<Plugin>>,
    answer_model: Option<String>,
    writer: Option<Arc<Plugin>>,
    judge: Option<(Arc<Plugin>, String)>,
    models: ModelSet,
    system_prompt: Option<String>,
    answer_max_tokens: u32,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Pipeline {
    /// Put a technique's configured stages together, checking each plugin's role.
    pub fn assemble(
        name: &str,
        p: &PipelineConfig,
        plugins: &BTreeMap<String, Arc<Plugin>>,
        models: &ModelSet,
    ) -> Result<Self, RunError> {
        let stage =
            |stage: &'static str, plugin: &Option<String>, expected: Role| -> Result<Option<Arc<Plugin>>, RunError> {
                let Some(plugin) = plugin else { return Ok(None) };
                // `validate` guarantees that every named plugin is configured.
                let Some(loaded) = plugins.get(plugin) else { return Ok(None) };
                if loaded.role() != expected {
                    return Err(RunError::WrongRole { stage, plugin: plugin.clone(), actual: loaded.role(), expected });
                }
                Ok(Some(loaded.clone()))
            };
        Ok(Self {
            name: name.to_string(),
            rewriter: stage("rewriter", &p.rewriter, Role::Rewriter)?,
            policy: stage("policy", &p.policy, Role::PromptPolicy)?,
            solver: stage("solver", &p.solver, Role::Solver)?,
            answer_model: p.answer_model.clone().filter(|m| models.get(m).is_some()),
            writer: stage("writer", &p.writer, Role::EvolutionStrategy)?,
            judge: stage("judge", &p.judge, Role::MigrationStrategy)?.zip(p.judge_model.clone()),
            models: models.clone(),
            system_prompt: p.system_prompt.clone(),
            answer_max_tokens: p.answer_max_tokens,
        })
    }

    /// The technique's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stages as text, e.g. `question → rewriter(r) → answer-model(m)`.
    pub fn describe(&self) -> String {
        let mut stages = vec!["question".to_string()];
        if let Some(p) = &self.rewriter {
            stages.push(format!("rewriter({})", p.name()));
        }
        if let Some(p) = &self.policy {
            stages.push(format!("policy({})", p.name()));
        }
        if let Some(p) = &self.solver {
            stages.push(format!("solver({})", p.name()));
        }
        match (&self.writer, &self.answer_model) {
            (Some(p), Some(name)) => stages.push(format!("writer({}, {name})", p.name())),
            (None, Some(name)) => stages.push(format!("answer-model({name})")),
            _ => {}
        }
        if let Some((p, model)) = &self.judge {
            stages.push(format!("judge({}, {model})", p.name()));
        }
        stages.join(" → ")
    }

    /// Push one item through every stage.
    pub async fn run_item(&self, item: Item, run_seed: u64) -> ItemResult {
        let started = Instant::now();
        let seed = item_seed(run_seed, &item.id);
        let work = WorkItem { id: item.id.clone(), seed };
        let result = self.answer(&item, &work, started).await;
        match &self.judge {
            Some((judge, model)) if result.failure.is_none() => self.judge(result, judge, model, &work, started).await,
            _ => result,
        }
    }

    /// The judge plugin's similarity and precision (1–100) of the answer,
    /// recorded as `judge-similarity` and `judge-precision` on [0, 1]. An
    /// item without a reference is not judged; a judge that fails leaves
    /// the answer unjudged (trace step `judge-failure`), not failed.
    async fn judge(
        &self,
        mut result: ItemResult,
        judge: &Plugin,
        model: &str,
        work: &WorkItem,
        started: Instant,
    ) -> ItemResult {
        let (Some(reference), Some(answer)) = (result.reference.clone(), result.answer.clone()) else {
            return result;
        };
        let example = crate::sandbox::Example { prompt: result.input.clone(), response: reference };
        let judged = match judge.instantiate(work).await {
            Ok(mut instance) => instance.judge(&example, &answer, model).await,
            Err(e) => Err(e),
        };
        match judged {
            Ok(judgement) => {
                for (name, score) in
                    [("judge-similarity", judgement.similarity), ("judge-precision", judgement.precision)]
                {
                    result.scores.insert(name.to_string(), (score - 1.0) / 99.0);
                }
                result.trace.push(TraceStep {
                    label: "judge".into(),
                    text: format!(
                        "similarity {:.1}, precision {:.1} (1-100)",
                        judgement.similarity, judgement.precision
                    ),
                });
                result.finished(started)
            }
            // The judge scores the answer; it does not make it. An answer it
            // could not judge keeps its other scores and gets no judge
            // scores; the reason goes into the trace.
            Err(e) => {
                let failure = ItemFailure::plugin("judge", judge.name(), &e);
                result.trace.push(TraceStep { label: "judge-failure".into(), text: failure.message });
                result.finished(started)
            }
        }
    }

    /// The answer stages: rewriter, then solver, writer or policy → answer model.
    async fn answer(&self, item: &Item, work: &WorkItem, started: Instant) -> ItemResult {
        let seed = work.seed;
        let work = work.clone();
        let mut result = ItemResult::new(&self.name, item);
        let mut question = item.input.clone();
        if let Some(rewriter) = &self.rewriter {
            match rewriter.rewrite(&work, &question).await {
                Ok(rewritten) => {
                    question = rewritten.clone();
                    result.rewritten = Some(rewritten);
                }
                Err(e) => return result.failed(ItemFailure::plugin("rewriter", rewriter.name(), &e), started),
            }
        }
        if let Some(solver) = &self.solver {
            return match solver.solve(&work, &question).await {
                Ok(solution) => {
                    result.answer = Some(solution.answer);
                    result.trace = solution.trace;
                    result.finished(started)
                }
                Err(e) => result.failed(ItemFailure::plugin("solver", solver.name(), &e), started),
            };
        }
        let mut prompt = question;
        if let Some(policy) = &self.policy {
            match policy.propose(&work, &prompt).await {
                Ok(prompts) => {
                    prompt = prompts.into_iter().find(|p| !p.trim().is_empty()).unwrap_or(prompt);
                    result.prompt = Some(prompt.clone());
                }
                Err(e) => return result.failed(ItemFailure::plugin("policy", policy.name(), &e), started),
            }
        }
        let Some(model) = &self.answer_model else {
            return result.failed(
                ItemFailure { stage: "answer".into(), kind: "configuration".into(), message: "no answer model".into() },
                started,
            );
        };
        if let Some(writer) = &self.writer {
            let written = match writer.instantiate(&work).await {
                Ok(mut instance) => instance.write_pair(&prompt, 0, model).await,
                Err(e) => Err(e),
            };
            return match written {
                Ok(scored) => {
                    result.prompt = Some(scored.pair.question.clone());
                    result.trace = vec![
                        TraceStep { label: "question".into(), text: scored.pair.question },
                        TraceStep { label: "ifd".into(), text: format!("{:.4}", scored.ifd) },
                    ];
                    result.answer = Some(scored.pair.answer);
                    result.finished(started)
                }
                Err(e) => result.failed(ItemFailure::plugin("writer", writer.name(), &e), started),
            };
        }
        let mut messages = Vec::new();
        if let Some(system) = &self.system_prompt {
            messages.push(ChatMessage::new(ChatRole::System, system.clone()));
        }
        messages.push(ChatMessage::new(ChatRole::User, prompt));
        let request = GenerationRequest {
            prompt: Prompt::Chat(messages),
            sampling: Sampling { max_tokens: self.answer_max_tokens, seed, ..Sampling::default() },
        };
        match self.models.generate(model, "pipeline", request).await {
            Ok(generation) => {
                result.answer = generation.choices.into_iter().next().map(|c| c.text);
                result.finished(started)
            }
            Err(e) => result.failed(
                ItemFailure {
                    stage: "answer".into(),
                    kind: "backend".into(),
                    message: format!("model '{model}': {e}"),
                },
                started,
            ),
        }
    }
}
