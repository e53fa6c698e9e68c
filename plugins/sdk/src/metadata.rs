//! What a plugin says about itself: [`Metadata`] and its [`Parameter`]s,
//! with builders.

pub use crate::bindings::techne::plugin::types::{Parameter, ParameterKind, PluginMetadata as Metadata};

impl Metadata {
    /// Metadata with no parameters: `name` (short, e.g. `question-rewriter`),
    /// the plugin's own semver `version` (e.g. `env!("CARGO_PKG_VERSION")`)
    /// and a one-paragraph `description` (which technique, which paper).
    pub fn new(name: impl Into<String>, version: impl Into<String>, description: impl Into<String>) -> Self {
        Metadata { name: name.into(), version: version.into(), description: description.into(), parameters: Vec::new() }
    }

    /// Adds a parameter the plugin reads.
    pub fn parameter(mut self, parameter: Parameter) -> Self {
        self.parameters.push(parameter);
        self
    }

    /// The declared parameter called `name`, if any.
    pub fn find_parameter(&self, name: &str) -> Option<&Parameter> {
        self.parameters.iter().find(|p| p.name == name)
    }
}

impl Parameter {
    /// A free-text parameter with its default.
    pub fn text(name: impl Into<String>, description: impl Into<String>, default: impl Into<String>) -> Self {
        Parameter {
            name: name.into(),
            description: description.into(),
            kind: ParameterKind::Text,
            default_value: default.into(),
        }
    }

    /// A signed 64-bit integer parameter with its default.
    pub fn integer(name: impl Into<String>, description: impl Into<String>, default: i64) -> Self {
        Parameter {
            name: name.into(),
            description: description.into(),
            kind: ParameterKind::Integer,
            default_value: default.to_string(),
        }
    }

    /// A 64-bit float parameter with its default.
    pub fn float(name: impl Into<String>, description: impl Into<String>, default: f64) -> Self {
        Parameter {
            name: name.into(),
            description: description.into(),
            kind: ParameterKind::Float,
            default_value: format_float(default),
        }
    }

    /// A `true`/`false` parameter with its default.
    pub fn boolean(name: impl Into<String>, description: impl Into<String>, default: bool) -> Self {
        Parameter {
            name: name.into(),
            description: description.into(),
            kind: ParameterKind::Boolean,
            default_value: default.to_string(),
        }
    }
}

impl ParameterKind {
    /// The kind's name as the WIT and the run configuration spell it.
    pub fn name(self) -> &'static str {
        match self {
            ParameterKind::Text => "text",
            ParameterKind::Integer => "integer",
            ParameterKind::Float => "float",
            ParameterKind::Boolean => "boolean",
        }
    }
}

/// Writes a float so that it reads back as a float (`1` becomes `1.0`).
fn format_float(value: f64) -> String {
    let text = value.to_string();
    if value.is_finite() && !text.contains(['.', 'e', 'E']) { format!("{text}.0") } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_metadata_with_typed_defaults() {
        let m = Metadata::new("demo", "0.1.0", "A demo.")
            .parameter(Parameter::text("model", "Model to call.", ""))
            .parameter(Parameter::integer("max-tokens", "Token budget.", 256))
            .parameter(Parameter::float("top-p", "Nucleus mass.", 1.0))
            .parameter(Parameter::float("temperature", "Sampling temperature.", 0.25))
            .parameter(Parameter::boolean("verbose", "Log more.", false));
        assert_eq!(m.parameters.len(), 5);
        let defaults: Vec<_> = m.parameters.iter().map(|p| p.default_value.as_str()).collect();
        assert_eq!(defaults, ["", "256", "1.0", "0.25", "false"]);
        assert_eq!(m.find_parameter("top-p").map(|p| p.kind), Some(ParameterKind::Float));
        assert!(m.find_parameter("nope").is_none());
    }
}
