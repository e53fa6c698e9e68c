//! Role `solver`: solve a problem and show the work. Export with
//! [`export_solver!`](crate::export_solver).

use crate::{Params, Plugin, PluginError};

pub use crate::bindings::exports::techne::plugin::solver::{Solution, TraceStep};

/// A solver (world `solver-plugin`).
pub trait Solver: Plugin {
    /// Solve `problem`.
    fn solve(problem: &str, params: &Params) -> Result<Solution, PluginError>;
}

impl Solution {
    /// A solution with `answer` (as it should be scored) and no trace.
    pub fn new(answer: impl Into<String>) -> Self {
        Solution { answer: answer.into(), trace: Vec::new() }
    }

    /// Appends a step to the trace, e.g. `("knowledge", "...")`.
    pub fn step(mut self, label: impl Into<String>, text: impl Into<String>) -> Self {
        self.trace.push(TraceStep::new(label, text));
        self
    }
}

impl TraceStep {
    /// A step called `label` (e.g. `knowledge`, `pseudo-problem`, `answer`)
    /// with its `text`.
    pub fn new(label: impl Into<String>, text: impl Into<String>) -> Self {
        TraceStep { label: label.into(), text: text.into() }
    }
}

/// Exports `$plugin` (a type implementing [`Plugin`] and [`Solver`]) as the
/// component's `describe` and `solver` interfaces. Invoke it once, in the
/// plugin crate's `lib.rs`.
///
/// ```no_run
/// use techne_plugin_sdk::{export_solver, llm, Metadata, Params, Plugin, PluginError, Solution, Solver};
///
/// struct Direct;
///
/// impl Plugin for Direct {
///     fn metadata() -> Metadata {
///         Metadata::new("direct", "0.1.0", "Asks the default model directly.")
///     }
/// }
///
/// impl Solver for Direct {
///     fn solve(problem: &str, _params: &Params) -> Result<Solution, PluginError> {
///         let model = llm::resolve_model("")?;
///         let reply = llm::chat(&model, &[llm::Message::user(problem)], &llm::Sampling::default())?;
///         Ok(Solution::new(reply.text().trim()).step("answer", reply.text()))
///     }
/// }
///
/// export_solver!(Direct);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_solver {
    ($plugin:ty) => {
        $crate::__techne_export_role! {
            plugin: $plugin,
            world: "techne:plugin/solver-plugin",
            with: {
                "techne:plugin/solver@0.1.0/trace-step": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::solver::TraceStep,
                "techne:plugin/solver@0.1.0/solution": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::solver::Solution,
            },
            interface solver: $crate::Solver {
                fn solve(borrowed problem: ::std::string::String) -> $crate::solver::Solution;
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_solution_with_a_trace() {
        let s = Solution::new("42").step("knowledge", "6 * 7 = 42").step("answer", "42");
        assert_eq!(s.answer, "42");
        assert_eq!(s.trace.len(), 2);
        assert_eq!(s.trace[0], TraceStep::new("knowledge", "6 * 7 = 42"));
    }
}
