//! Instruction-following difficulty (IFD, Li et al. 2024, "From Quantity to
//! Quality", the selection score Self-Evolution uses):
//!
//! ```text
//! IFD(Q, A) = loss(A | Q) / loss(A),   loss = −mean token log-probability
//! ```
//!
//! `loss(A | Q)` scores the answer as the model's chat reply to the
//! question; `loss(A)` scores it after an empty prompt. A low IFD means the
//! question makes the answer much easier to produce (the model already
//! follows it); an IFD near or above 1 means the question hardly helps.
//! Pure functions, unit-tested natively.

/// The loss of a scored continuation: `−logprob_sum / token_count`.
/// `None` for an empty continuation or a non-finite sum.
pub fn loss(logprob_sum: f64, token_count: u32) -> Option<f64> {
    (token_count > 0 && logprob_sum.is_finite()).then(|| -logprob_sum / f64::from(token_count))
}

/// `conditioned_loss / unconditioned_loss`; `None` when the unconditioned
/// loss is 0 (the model is certain of the answer without the question: IFD
/// undefined) or either loss is not finite.
pub fn ifd(conditioned_loss: f64, unconditioned_loss: f64) -> Option<f64> {
    (conditioned_loss.is_finite() && unconditioned_loss.is_finite() && unconditioned_loss != 0.0)
        .then(|| conditioned_loss / unconditioned_loss)
}

/// IFD from the two scorings of the answer: with the question
/// (`conditioned`) and without (`unconditioned`), each as (log-probability
/// sum, token count).
pub fn ifd_from_scores(conditioned: (f64, u32), unconditioned: (f64, u32)) -> Option<f64> {
    ifd(loss(conditioned.0, conditioned.1)?, loss(unconditioned.0, unconditioned.1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_the_negative_mean_logprob() {
        assert_eq!(loss(-6.0, 4), Some(1.5));
        assert_eq!(loss(0.0, 3), Some(0.0));
        assert_eq!(loss(-1.0, 0), None);
        assert_eq!(loss(f64::NEG_INFINITY, 2), None);
    }

    #[test]
    fn ifd_is_the_ratio_of_losses() {
        assert_eq!(ifd(0.5, 2.0), Some(0.25));
        assert_eq!(ifd(3.0, 2.0), Some(1.5));
        assert_eq!(ifd(1.0, 0.0), None);
        assert_eq!(ifd(f64::NAN, 1.0), None);
        // Answer of 4 tokens: sum −2 given the question, −8 alone: (0.5) / (2.0).
        assert_eq!(ifd_from_scores((-2.0, 4), (-8.0, 4)), Some(0.25));
        // Token counts may differ (chat template vs raw prompt): each loss is a mean.
        assert_eq!(ifd_from_scores((-3.0, 3), (-8.0, 4)), Some(0.5));
        assert_eq!(ifd_from_scores((-3.0, 0), (-8.0, 4)), None);
    }
}
