//! `techne-test-counting-evolution`: an evolution strategy (world
//! `evolution-strategy-plugin`) for the host's loop tests: it shows whether
//! a plugin's key/value state (the WIT `state` interface) is kept across the
//! rounds of a loop and across a killed-and-resumed loop. It is not a
//! technique and calls no model.
//!
//! - `write-pair(fragment, generation, …)`: adds one to the state key
//!   `pairs-written` and answers the pair
//!   question `"Question N (generation G): what does this say?"`, answer =
//!   the fragment, IFD 0.5 — N counts every pair this plugin wrote in the
//!   loop, so a state lost between rounds restarts the numbering at 1.
//! - `select(candidates, generation, …)`: adds one to `selections` and keeps
//!   the candidates written in `generation`.
//!
//! Run it with one pair written at a time (`concurrency = 1`): the count is
//! a read-modify-write, which concurrent work items would race on.

use techne_plugin_sdk::prelude::*;

/// The counting strategy.
pub struct CountingEvolution;

impl Plugin for CountingEvolution {
    fn metadata() -> Metadata {
        Metadata::new(
            "counting-evolution",
            "0.1.0",
            "Test strategy: numbers the pairs it writes in its key/value state.",
        )
    }
}

/// Add one to the counter under `key` and return the new value.
fn increment(key: &str) -> Result<u64, PluginError> {
    let current = match state::get_text(key)? {
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| PluginError::invalid_input(format!("state `{key}` holds {text:?}, not a count")))?,
        None => 0,
    };
    let next = current + 1;
    state::set_text(key, &next.to_string())?;
    Ok(next)
}

impl EvolutionStrategy for CountingEvolution {
    fn write_pair(fragment: &str, generation: u32, _model: &str, _params: &Params) -> Result<ScoredPair, PluginError> {
        let n = increment("pairs-written")?;
        let question = format!("Question {n} (generation {generation}): what does this say?");
        Ok(ScoredPair::new(QaPair::new(fragment, question, fragment), 0.5, generation))
    }

    fn select(candidates: &[ScoredPair], generation: u32, _params: &Params) -> Result<Vec<u32>, PluginError> {
        increment("selections")?;
        Ok(candidates.iter().enumerate().filter(|(_, c)| c.generation == generation).map(|(i, _)| i as u32).collect())
    }
}

export_evolution_strategy!(CountingEvolution);
