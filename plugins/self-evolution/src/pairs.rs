//! Writing a QA pair from a knowledge fragment: the prompts, and the parsing
//! of the model's (untrusted) question and answer. Pure functions,
//! unit-tested natively.

/// Default prompt that asks for one question about `{fragment}`.
pub const DEFAULT_QUESTION_PROMPT: &str = "Here is a piece of knowledge:\n\n{fragment}\n\n\
Write one question that this knowledge answers. The question must make sense on its own, \
without the text above. Reply with the question only.";

/// Default prompt that asks for the answer to `{question}` with
/// `{fragment}` in context.
pub const DEFAULT_ANSWER_PROMPT: &str = "Answer the question using the knowledge below.\n\n\
Knowledge:\n{fragment}\n\nQuestion: {question}\n\nReply with the answer only.";

/// Strips a leading `label:` (ASCII letter case ignored, optionally in
/// `**bold**`) from `text`, if present.
fn strip_label<'a>(text: &'a str, labels: &[&str]) -> &'a str {
    let body = text.trim_start().trim_start_matches("**");
    for label in labels {
        if let Some(head) = body.get(..label.len())
            && head.eq_ignore_ascii_case(label)
        {
            let rest = body[label.len()..].trim_start_matches("**").trim_start();
            if let Some(rest) = rest.strip_prefix(':') {
                return rest.trim_start_matches("**").trim();
            }
        }
    }
    text.trim()
}

fn strip_quotes(text: &str) -> &str {
    for (open, close) in [('"', '"'), ('\u{201c}', '\u{201d}'), ('\'', '\'')] {
        if let Some(inner) = text.strip_prefix(open).and_then(|t| t.strip_suffix(close)) {
            return inner.trim();
        }
    }
    text
}

/// Whether `text` has a letter or a digit (`...` is not a question).
fn has_content(text: &str) -> bool {
    text.chars().any(char::is_alphanumeric)
}

/// The question in the model's reply: its first paragraph, without a
/// `Question:` / `Q:` label or quotes, cut before an `Answer:` the model may
/// have added, lines joined with spaces. `None` when no letter or digit is
/// left.
pub fn parse_question(reply: &str) -> Option<String> {
    let mut lines = Vec::new();
    for line in reply.lines() {
        let line = line.trim();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            break;
        }
        let lower = line.trim_start_matches("**").to_ascii_lowercase();
        if !lines.is_empty() && (lower.starts_with("answer") || lower.starts_with("a:")) {
            break;
        }
        lines.push(line);
    }
    let joined = lines.join(" ");
    let text = strip_quotes(strip_label(&joined, &["question", "q"]));
    has_content(text).then(|| text.to_owned())
}

/// The answer in the model's reply: trimmed, without an `Answer:` / `A:`
/// label or surrounding quotes (paragraphs kept). `None` when no letter or
/// digit is left.
pub fn parse_answer(reply: &str) -> Option<String> {
    let text = strip_quotes(strip_label(reply, &["answer", "a"]));
    has_content(text).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use techne_plugin_sdk::template::fill;

    #[test]
    fn prompts_are_filled() {
        let q = fill(DEFAULT_QUESTION_PROMPT, &[("fragment", "Water boils at 100 °C at sea level.")]);
        assert!(
            q.starts_with("Here is a piece of knowledge:\n\nWater boils at 100 °C at sea level.\n\nWrite one question")
        );
        let a = fill(DEFAULT_ANSWER_PROMPT, &[("fragment", "F"), ("question", "Q {fragment}?")]);
        assert_eq!(
            a,
            "Answer the question using the knowledge below.\n\nKnowledge:\nF\n\nQuestion: Q {fragment}?\n\nReply with the answer only."
        );
    }

    #[test]
    fn questions_are_parsed() {
        assert_eq!(
            parse_question("At what temperature does water boil?").as_deref(),
            Some("At what temperature does water boil?")
        );
        assert_eq!(
            parse_question("\n**Question:** \"At what temperature does\nwater boil at sea level?\"\nAnswer: 100 °C")
                .as_deref(),
            Some("At what temperature does water boil at sea level?")
        );
        assert_eq!(parse_question("Q: Why?\n\nA: Because.").as_deref(), Some("Why?"));
        assert_eq!(parse_question("Question:"), None);
        assert_eq!(parse_question("  \n"), None);
        // A question that merely starts with the letter q keeps it.
        assert_eq!(
            parse_question("Quantum tunnelling: what is it?").as_deref(),
            Some("Quantum tunnelling: what is it?")
        );
    }

    #[test]
    fn answers_are_parsed() {
        assert_eq!(parse_answer(" Answer: 100 °C.\n\nAt sea level. ").as_deref(), Some("100 °C.\n\nAt sea level."));
        assert_eq!(parse_answer("A: \"Paris\"").as_deref(), Some("Paris"));
        assert_eq!(parse_answer("Answers vary by altitude.").as_deref(), Some("Answers vary by altitude."));
        assert_eq!(parse_answer("Answer: "), None);
        assert_eq!(parse_answer("A: ..."), None);
        assert_eq!(parse_question("\"?\""), None);
    }
}
