//! The two error types of a plugin: [`HostError`] (a host call failed) and
//! [`PluginError`] (the plugin gives up on a work item).

use core::fmt;

use crate::bindings::techne::plugin::types as wit;

/// Why a host call (chat, scoring, state, ...) failed. The message always
/// says how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostError {
    /// The run configuration does not allow this call, e.g. a model that is
    /// not in the plugin's `allowed-models`.
    NotAllowed(String),
    /// The run configuration names no model by this name.
    UnknownModel(String),
    /// The arguments are invalid (e.g. `n = 0`, a negative temperature).
    InvalidRequest(String),
    /// The model's backend cannot do this (e.g. scoring on a service endpoint
    /// that returns no log-probabilities). Also returned by every host call
    /// when the plugin runs natively (unit tests), outside the techne host.
    Unsupported(String),
    /// A limit of the run or of the plugin was reached (request budget, bytes
    /// crossing the sandbox boundary, state size).
    LimitExceeded(String),
    /// The backend failed (service unreachable, model error). Retrying the
    /// item later may succeed.
    Backend(String),
}

impl HostError {
    /// The host's message, without the variant's name.
    pub fn message(&self) -> &str {
        match self {
            HostError::NotAllowed(m)
            | HostError::UnknownModel(m)
            | HostError::InvalidRequest(m)
            | HostError::Unsupported(m)
            | HostError::LimitExceeded(m)
            | HostError::Backend(m) => m,
        }
    }

    /// The variant's name as the WIT spells it, e.g. `not-allowed`.
    pub fn kind(&self) -> &'static str {
        match self {
            HostError::NotAllowed(_) => "not-allowed",
            HostError::UnknownModel(_) => "unknown-model",
            HostError::InvalidRequest(_) => "invalid-request",
            HostError::Unsupported(_) => "unsupported",
            HostError::LimitExceeded(_) => "limit-exceeded",
            HostError::Backend(_) => "backend",
        }
    }

    /// The error every host call returns when the plugin is not running
    /// inside the techne host (native unit tests).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn native(what: &str) -> Self {
        HostError::Unsupported(format!(
            "{what} is only available inside the techne host (wasm32-wasip2); \
             in native unit tests, test the plugin's pure logic instead"
        ))
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

impl std::error::Error for HostError {}

impl From<wit::Error> for HostError {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::NotAllowed(m) => HostError::NotAllowed(m),
            wit::Error::UnknownModel(m) => HostError::UnknownModel(m),
            wit::Error::InvalidRequest(m) => HostError::InvalidRequest(m),
            wit::Error::Unsupported(m) => HostError::Unsupported(m),
            wit::Error::LimitExceeded(m) => HostError::LimitExceeded(m),
            wit::Error::Backend(m) => HostError::Backend(m),
        }
    }
}

impl From<HostError> for wit::Error {
    fn from(e: HostError) -> Self {
        match e {
            HostError::NotAllowed(m) => wit::Error::NotAllowed(m),
            HostError::UnknownModel(m) => wit::Error::UnknownModel(m),
            HostError::InvalidRequest(m) => wit::Error::InvalidRequest(m),
            HostError::Unsupported(m) => wit::Error::Unsupported(m),
            HostError::LimitExceeded(m) => wit::Error::LimitExceeded(m),
            HostError::Backend(m) => wit::Error::Backend(m),
        }
    }
}

/// Why a plugin could not produce a result for a work item. The host records
/// it in the run report as a typed failure of the item; the run goes on.
///
/// `?` on a [`HostError`] gives [`PluginError::Host`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginError {
    /// The input cannot be handled by this plugin (e.g. a malformed
    /// parameter, an empty question).
    InvalidInput(String),
    /// A host call failed and the plugin gives up on the item.
    Host(HostError),
    /// Any other failure, with a message for the run report.
    Failed(String),
}

impl PluginError {
    /// A [`PluginError::InvalidInput`] with `message`.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        PluginError::InvalidInput(message.into())
    }

    /// A [`PluginError::Failed`] with `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        PluginError::Failed(message.into())
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            PluginError::Host(e) => write!(f, "host call failed: {e}"),
            PluginError::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for PluginError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PluginError::Host(e) => Some(e),
            _ => None,
        }
    }
}

impl From<HostError> for PluginError {
    fn from(e: HostError) -> Self {
        PluginError::Host(e)
    }
}

impl From<wit::Error> for PluginError {
    fn from(e: wit::Error) -> Self {
        PluginError::Host(e.into())
    }
}

impl From<PluginError> for wit::PluginError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::InvalidInput(m) => wit::PluginError::InvalidInput(m),
            PluginError::Host(e) => wit::PluginError::Host(e.into()),
            PluginError::Failed(m) => wit::PluginError::Failed(m),
        }
    }
}

impl From<wit::PluginError> for PluginError {
    fn from(e: wit::PluginError) -> Self {
        match e {
            wit::PluginError::InvalidInput(m) => PluginError::InvalidInput(m),
            wit::PluginError::Host(e) => PluginError::Host(e.into()),
            wit::PluginError::Failed(m) => PluginError::Failed(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_error_converts_to_plugin_error_with_question_mark() {
        fn call() -> Result<(), HostError> {
            Err(HostError::NotAllowed("add `m` to allowed-models".into()))
        }
        fn item() -> Result<(), PluginError> {
            call()?;
            Ok(())
        }
        let err = item().unwrap_err();
        assert_eq!(err, PluginError::Host(HostError::NotAllowed("add `m` to allowed-models".into())));
        assert_eq!(err.to_string(), "host call failed: not-allowed: add `m` to allowed-models");
    }

    #[test]
    fn round_trips_through_the_wit_types() {
        let e = PluginError::Host(HostError::Backend("down".into()));
        let w: wit::PluginError = e.clone().into();
        assert_eq!(PluginError::from(w), e);
    }
}
