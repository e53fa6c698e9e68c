//! The Rust SDK for techne technique plugins.
//!
//! A techne plugin is a WebAssembly component (built for `wasm32-wasip2`)
//! that implements exactly one *role* of the `techne:plugin@0.1.0` WIT
//! package: [`Rewriter`], [`PromptPolicy`], [`Solver`], [`EvolutionStrategy`]
//! or [`MigrationStrategy`]. Every plugin also implements [`Plugin`] (its
//! [`Metadata`]: name, version, description and parameters). One export
//! macro per role ([`export_rewriter!`], [`export_prompt_policy!`],
//! [`export_solver!`], [`export_evolution_strategy!`],
//! [`export_migration_strategy!`]) wires the type up as the component's
//! exports: `techne:plugin/describe@0.1.0` and the role's interface, nothing
//! else. A rewriter or a prompt policy that also collects its own training
//! data implements [`RewriterTrainer`] or [`PromptPolicyTrainer`] as well and
//! is exported with [`export_rewriter_trainer!`] or
//! [`export_prompt_policy_trainer!`] instead.
//!
//! Everything a plugin can reach outside its own memory goes through the
//! host's capabilities, wrapped here: [`llm`] (chat and completion),
//! [`scoring`] (log-likelihoods), [`embeddings`], [`log`], [`state`]
//! (key/value state for the run) and [`randomness`] (the work item's seed).
//! There is no filesystem, network or environment. Pure helpers:
//! [`template::fill`] fills a prompt template's `{name}` placeholders.
//!
//! # Example: a complete rewriter plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "my-rewriter"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! techne-plugin-sdk = { path = "sdk" }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```no_run
//! use techne_plugin_sdk::prelude::*;
//!
//! struct MyRewriter;
//!
//! impl Plugin for MyRewriter {
//!     fn metadata() -> Metadata {
//!         Metadata::new("my-rewriter", env!("CARGO_PKG_VERSION"), "Asks a model to clarify the question.")
//!             .parameter(Parameter::text("model", "Model to call; empty = the plugin's default-model.", ""))
//!             .parameter(Parameter::integer("max-tokens", "Token budget of the rewrite.", 256))
//!     }
//! }
//!
//! impl Rewriter for MyRewriter {
//!     fn rewrite(question: &str, params: &Params) -> Result<String, PluginError> {
//!         let model = llm::resolve_model(&params.text("model")?)?;
//!         let sampling = Sampling::default().max_tokens(params.u32("max-tokens")?);
//!         let prompt = format!("Make this question clearer, answer with the question only: {question}");
//!         let reply = llm::chat(&model, &[Message::user(prompt)], &sampling)?;
//!         let rewritten = reply.text().trim();
//!         if rewritten.is_empty() {
//!             log::warn("the model returned nothing; keeping the original question");
//!             return Ok(question.to_owned());
//!         }
//!         Ok(rewritten.to_owned())
//!     }
//! }
//!
//! export_rewriter!(MyRewriter);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the
//! component is `target/wasm32-wasip2/release/my_rewriter.wasm`.
//!
//! # Testing natively
//!
//! The SDK also compiles for the build machine, so a plugin's pure logic can
//! be unit-tested with `cargo test --target x86_64-unknown-linux-gnu`. There,
//! host calls do not trap: [`llm`], [`scoring`] and [`embeddings`] return
//! [`HostError::Unsupported`], [`llm::default_model`] is `None`, [`log`]
//! writes to standard error, [`state`] is an in-memory map per thread and
//! [`randomness::item_seed`] is 0.
//!
//! # How the export macros work
//!
//! wit-bindgen names the export glue of an interface after the interface, so
//! a crate can hold the export bindings of only one world exporting
//! `describe`. The SDK therefore generates the types and imports once, and
//! each `export_*!` macro generates its role world inside the plugin crate
//! (reusing the SDK's types). A consequence: the plugin must depend on the
//! SDK under its own name, `techne-plugin-sdk` (not renamed), and call
//! exactly one export macro. The macros share their glue (the `describe`
//! export, turning WIT arguments into [`Params`] and [`PluginError`] into the
//! WIT error) through one hidden macro, `__techne_export_role!`, so a role's
//! macro lists only its world, its record types and its functions.

#![warn(missing_docs)]

#[doc(hidden)]
pub mod bindings;

pub mod embeddings;
mod error;
pub mod evolution_strategy;
mod export;
pub mod llm;
pub mod log;
mod metadata;
pub mod migration_strategy;
mod params;
pub mod prompt_policy;
pub mod prompt_policy_trainer;
pub mod randomness;
pub mod rewriter;
pub mod rewriter_trainer;
pub mod scoring;
pub mod solver;
pub mod state;
pub mod template;

pub use error::{HostError, PluginError};
pub use evolution_strategy::{EvolutionStrategy, QaPair, ScoredPair};
pub use metadata::{Metadata, Parameter, ParameterKind};
pub use migration_strategy::{Example, Judgement, MigrationStrategy};
pub use params::{ParameterValue, Params};
pub use prompt_policy::PromptPolicy;
pub use prompt_policy_trainer::PromptPolicyTrainer;
pub use rewriter::Rewriter;
pub use rewriter_trainer::RewriterTrainer;
pub use solver::{Solution, Solver, TraceStep};

/// What every plugin says about itself, whatever its role.
pub trait Plugin {
    /// The plugin's name, version, description and parameters. The host
    /// reads it without running any work item (e.g. `techne plugin
    /// inspect`), so it must not call any host capability.
    fn metadata() -> Metadata;
}

/// Everything a plugin usually needs: `use techne_plugin_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::llm::{self, Message, Sampling};
    pub use crate::{
        EvolutionStrategy, Example, HostError, Judgement, Metadata, MigrationStrategy, Parameter, Params, Plugin,
        PluginError, PromptPolicy, PromptPolicyTrainer, QaPair, Rewriter, RewriterTrainer, ScoredPair, Solution,
        Solver, TraceStep, embeddings, export_evolution_strategy, export_migration_strategy, export_prompt_policy,
        export_prompt_policy_trainer, export_rewriter, export_rewriter_trainer, export_solver, log, randomness,
        scoring, state,
    };
}

/// `serde_json`, re-exported so that plugins can build and parse JSON (e.g.
/// for [`state::set_json`]) without a dependency of their own.
pub use serde_json;

/// Implementation details of the export macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings;
    pub use crate::bindings::techne::plugin::types::PluginError as WitPluginError;
    pub use wit_bindgen;
}

// `__techne_generate_role_world!`, written by build.rs.
include!(concat!(env!("OUT_DIR"), "/generate_role_world.rs"));
