//! The `embeddings` interface: L2-normalised sentence embeddings.

use crate::bindings::capabilities::embeddings::Host;
use crate::bindings::capabilities::types::Error as WitError;

use super::{CapabilityContext, backend_error, strings_bytes};

impl Host for CapabilityContext {
    async fn embed(&mut self, model: String, texts: Vec<String>) -> Result<Vec<Vec<f32>>, WitError> {
        self.traffic.send_out(model.len() as u64 + strings_bytes(&texts))?;
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.check_model(&model)?;
        let vectors =
            self.models.embed(&model, &self.grant.caller, texts).await.map_err(|e| backend_error(&model, e))?;
        self.traffic.send_in(vectors.iter().map(|v| 4 * v.len() as u64).sum())?;
        Ok(vectors)
    }
}
