//! [`Params`]: typed access to the resolved parameters the host passes to
//! every call (each declared parameter's configured value or its default).

pub use crate::bindings::techne::plugin::types::ParameterValue;
use crate::{Parameter, ParameterKind, PluginError};

/// The resolved parameters of one call, with typed getters.
///
/// The host passes every parameter declared in the plugin's metadata, with
/// the configured value or the declared default, already checked against the
/// declared kind. The getters still parse defensively: each returns
/// [`PluginError::InvalidInput`] naming the parameter and the expected kind
/// when a value is missing or malformed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    values: Vec<ParameterValue>,
}

impl Params {
    /// Wraps the values the host passed.
    pub fn new(values: Vec<ParameterValue>) -> Self {
        Params { values }
    }

    /// Parameters from `(name, value)` pairs, handy in unit tests:
    /// `Params::from_pairs([("max-tokens", "64")])`.
    pub fn from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Self
    where
        N: Into<String>,
        V: Into<String>,
    {
        Params {
            values: pairs
                .into_iter()
                .map(|(name, value)| ParameterValue { name: name.into(), value: value.into() })
                .collect(),
        }
    }

    /// What the host passes when a configuration sets only `overrides`:
    /// every parameter of `declared` (a plugin's metadata parameters) with
    /// its default value, except those `overrides` sets. Handy in unit tests
    /// of a plugin's parameter checks. An override of a parameter that
    /// `declared` lacks is [`PluginError::InvalidInput`].
    pub fn with_defaults(declared: &[Parameter], overrides: &[(&str, &str)]) -> Result<Self, PluginError> {
        let mut values: Vec<ParameterValue> =
            declared.iter().map(|p| ParameterValue { name: p.name.clone(), value: p.default_value.clone() }).collect();
        for (name, value) in overrides {
            match values.iter_mut().find(|v| v.name == *name) {
                Some(declared) => declared.value = (*value).to_owned(),
                None => {
                    return Err(PluginError::invalid_input(format!(
                        "parameter `{name}` is not declared: add it to the plugin's metadata"
                    )));
                }
            }
        }
        Ok(Params { values })
    }

    /// `Ok(())` when `condition` holds, otherwise
    /// [`PluginError::InvalidInput`] with `message`, which should name the
    /// parameter and the values it accepts, e.g.
    /// ``Params::check(top_p > 0.0 && top_p <= 1.0, "parameter `top-p` must be in (0, 1]")?``.
    pub fn check(condition: bool, message: &str) -> Result<(), PluginError> {
        if condition { Ok(()) } else { Err(PluginError::invalid_input(message)) }
    }

    /// The raw text of parameter `name`, if the host passed it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.iter().find(|v| v.name == name).map(|v| v.value.as_str())
    }

    /// Every value, in the order the host passed them.
    pub fn iter(&self) -> impl Iterator<Item = &ParameterValue> {
        self.values.iter()
    }

    /// Whether no parameter was passed.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Number of parameters passed.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Free-text parameter `name`.
    pub fn text(&self, name: &str) -> Result<String, PluginError> {
        self.require(name, ParameterKind::Text).map(str::to_owned)
    }

    /// Integer parameter `name`.
    pub fn i64(&self, name: &str) -> Result<i64, PluginError> {
        let raw = self.require(name, ParameterKind::Integer)?;
        raw.trim().parse().map_err(|_| malformed(name, ParameterKind::Integer, raw))
    }

    /// Integer parameter `name`, which must fit in a `u32` (e.g. a token
    /// budget).
    pub fn u32(&self, name: &str) -> Result<u32, PluginError> {
        let value = self.i64(name)?;
        u32::try_from(value).map_err(|_| {
            PluginError::InvalidInput(format!(
                "parameter `{name}` must be an integer from 0 to {}, got {value}",
                u32::MAX
            ))
        })
    }

    /// Float parameter `name` (an integer such as `1` is accepted too).
    pub fn f64(&self, name: &str) -> Result<f64, PluginError> {
        let raw = self.require(name, ParameterKind::Float)?;
        match raw.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(malformed(name, ParameterKind::Float, raw)),
        }
    }

    /// Float parameter `name` as an `f32` (e.g. a temperature).
    pub fn f32(&self, name: &str) -> Result<f32, PluginError> {
        self.f64(name).map(|v| v as f32)
    }

    /// Boolean parameter `name`: `true` or `false` (any letter case).
    pub fn bool(&self, name: &str) -> Result<bool, PluginError> {
        let raw = self.require(name, ParameterKind::Boolean)?;
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(malformed(name, ParameterKind::Boolean, raw)),
        }
    }

    fn require(&self, name: &str, kind: ParameterKind) -> Result<&str, PluginError> {
        self.get(name).ok_or_else(|| {
            PluginError::InvalidInput(format!(
                "parameter `{name}` ({}) was not passed by the host: declare it in the plugin's metadata",
                kind.name()
            ))
        })
    }
}

impl From<Vec<ParameterValue>> for Params {
    fn from(values: Vec<ParameterValue>) -> Self {
        Params::new(values)
    }
}

fn malformed(name: &str, kind: ParameterKind, raw: &str) -> PluginError {
    let expected = match kind {
        ParameterKind::Text => "text",
        ParameterKind::Integer => "an integer",
        ParameterKind::Float => "a float",
        ParameterKind::Boolean => "a boolean (`true` or `false`)",
    };
    PluginError::InvalidInput(format!("parameter `{name}` must be {expected}, got `{raw}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_with_overrides_and_checks() {
        let declared = [Parameter::integer("max-tokens", "Budget.", 64), Parameter::text("prompt", "Template.", "{q}")];
        let p = Params::with_defaults(&declared, &[("prompt", "Say {q}")]).unwrap();
        assert_eq!((p.u32("max-tokens").unwrap(), p.text("prompt").unwrap().as_str()), (64, "Say {q}"));
        assert_eq!(p.len(), 2);
        let err = Params::with_defaults(&declared, &[("max-token", "3")]).unwrap_err();
        assert_eq!(
            err,
            PluginError::invalid_input("parameter `max-token` is not declared: add it to the plugin's metadata")
        );
        assert_eq!(Params::check(true, "unused"), Ok(()));
        assert_eq!(
            Params::check(false, "parameter `x` must be 1"),
            Err(PluginError::invalid_input("parameter `x` must be 1"))
        );
    }

    fn params() -> Params {
        Params::from_pairs([
            ("model", "qwen"),
            ("max-tokens", " 256 "),
            ("negative", "-3"),
            ("temperature", "0.7"),
            ("top-p", "1"),
            ("greedy", "True"),
            ("broken", "many"),
        ])
    }

    #[test]
    fn typed_getters_parse_values() {
        let p = params();
        assert_eq!(p.text("model").unwrap(), "qwen");
        assert_eq!(p.i64("max-tokens").unwrap(), 256);
        assert_eq!(p.u32("max-tokens").unwrap(), 256);
        assert_eq!(p.i64("negative").unwrap(), -3);
        assert_eq!(p.f64("temperature").unwrap(), 0.7);
        assert_eq!(p.f32("top-p").unwrap(), 1.0);
        assert!(p.bool("greedy").unwrap());
        assert_eq!(p.get("missing"), None);
        assert_eq!(p.len(), 7);
    }

    #[test]
    fn errors_name_the_parameter_and_the_kind() {
        let p = params();
        let msg = |e: PluginError| match e {
            PluginError::InvalidInput(m) => m,
            other => panic!("expected invalid-input, got {other:?}"),
        };
        assert_eq!(msg(p.i64("broken").unwrap_err()), "parameter `broken` must be an integer, got `many`");
        assert_eq!(msg(p.f64("broken").unwrap_err()), "parameter `broken` must be a float, got `many`");
        assert_eq!(
            msg(p.bool("broken").unwrap_err()),
            "parameter `broken` must be a boolean (`true` or `false`), got `many`"
        );
        assert_eq!(
            msg(p.u32("negative").unwrap_err()),
            "parameter `negative` must be an integer from 0 to 4294967295, got -3"
        );
        assert_eq!(
            msg(p.text("absent").unwrap_err()),
            "parameter `absent` (text) was not passed by the host: declare it in the plugin's metadata"
        );
        assert!(msg(p.f64("absent").unwrap_err()).contains("(float)"));
    }

    #[test]
    fn non_finite_floats_are_rejected() {
        let p = Params::from_pairs([("t", "NaN"), ("u", "inf")]);
        assert!(p.f64("t").is_err());
        assert!(p.f64("u").is_err());
    }
}
