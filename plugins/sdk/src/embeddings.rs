//! Sentence embeddings.

use crate::HostError;
#[cfg(target_arch = "wasm32")]
use crate::bindings::techne::plugin::embeddings as wit;

/// Embed each of `texts` with `model`, one vector per text, in order.
/// Vectors are L2-normalised, so a dot product ([`cosine`]) is the cosine
/// similarity.
pub fn embed(model: &str, texts: &[impl AsRef<str>]) -> Result<Vec<Vec<f32>>, HostError> {
    let texts: Vec<String> = texts.iter().map(|t| t.as_ref().to_owned()).collect();
    #[cfg(target_arch = "wasm32")]
    {
        wit::embed(model, &texts).map_err(HostError::from)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (model, texts);
        Err(HostError::native("embeddings::embed"))
    }
}

/// Cosine similarity of two L2-normalised vectors (their dot product; the
/// shorter length wins if they differ).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cosine_is_the_dot_product() {
        assert_eq!(super::cosine(&[0.6, 0.8], &[0.6, 0.8]), 1.0);
        assert_eq!(super::cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
    }
}
