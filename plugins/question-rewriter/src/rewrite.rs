//! The technique's pure logic: building the prompt and cleaning the model's
//! reply. No host calls, so it is unit-tested natively.

/// The rewriting prompt of the Question Rewriter paper (arXiv 2408.10573);
/// the question follows it directly.
pub const PAPER_PROMPT: &str =
    "Rewriting question to make it more understandable, just give me the rewritten question without any other word: ";

/// The placeholder an overriding prompt may use to place the question.
pub const QUESTION_PLACEHOLDER: &str = "{question}";

/// The user message for `question`: `prompt` with the question in place of
/// `{question}` when the prompt has that placeholder, else the prompt
/// directly followed by the question (the paper's format).
pub fn build_prompt(prompt: &str, question: &str) -> String {
    if prompt.contains(QUESTION_PLACEHOLDER) {
        prompt.replace(QUESTION_PLACEHOLDER, question)
    } else {
        format!("{prompt}{question}")
    }
}

/// Labels a model may put before the rewritten question (matched without
/// regard to letter case, optionally in `**bold**`, followed by `:`).
const LABELS: &[&str] = &["rewritten question", "revised question", "rewritten", "question"];

/// Pairs of quotes that may surround the whole reply.
const QUOTES: &[(char, char)] =
    &[('"', '"'), ('\'', '\''), ('`', '`'), ('\u{201c}', '\u{201d}'), ('\u{2018}', '\u{2019}')];

/// The rewritten question in `reply`: trimmed, without a leading
/// `Rewritten question:`-style label and without quotes around it. `None`
/// when nothing is left.
pub fn clean(reply: &str) -> Option<String> {
    let mut text = reply.trim();
    loop {
        let before = text;
        text = strip_label(text).trim();
        text = strip_quotes(text).trim();
        if text == before {
            break;
        }
    }
    (!text.is_empty()).then(|| text.to_owned())
}

fn strip_label(text: &str) -> &str {
    let (bold, body) = match text.strip_prefix("**") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    for label in LABELS {
        let Some(head) = body.get(..label.len()) else { continue };
        if !head.eq_ignore_ascii_case(label) {
            continue;
        }
        let mut rest = &body[label.len()..];
        // `**Rewritten question:**` or `**Rewritten question**:`
        if bold {
            if let Some(r) = rest.strip_prefix(":**") {
                return r;
            }
            rest = match rest.strip_prefix("**") {
                Some(r) => r,
                None => continue,
            };
        }
        if let Some(r) = rest.trim_start().strip_prefix(':') {
            return r;
        }
    }
    text
}

fn strip_quotes(text: &str) -> &str {
    for &(open, close) in QUOTES {
        if let Some(inner) = text.strip_prefix(open).and_then(|t| t.strip_suffix(close)) {
            return inner;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_is_the_papers_prompt_followed_by_the_question() {
        assert_eq!(
            build_prompt(PAPER_PROMPT, "how tall eiffel?"),
            "Rewriting question to make it more understandable, just give me the rewritten question without any other word: how tall eiffel?"
        );
    }

    #[test]
    fn overriding_prompt_may_place_the_question() {
        assert_eq!(build_prompt("Q: {question}\nClearer Q:", "why sky blue"), "Q: why sky blue\nClearer Q:");
        assert_eq!(build_prompt("Clarify: ", "x"), "Clarify: x");
    }

    #[test]
    fn clean_trims_and_keeps_plain_questions() {
        assert_eq!(clean("  How tall is the Eiffel Tower?\n").as_deref(), Some("How tall is the Eiffel Tower?"));
    }

    #[test]
    fn clean_strips_labels_and_quotes() {
        for reply in [
            "Rewritten question: How tall is the Eiffel Tower?",
            "rewritten question : How tall is the Eiffel Tower?",
            "\"How tall is the Eiffel Tower?\"",
            "Rewritten Question: \"How tall is the Eiffel Tower?\"",
            "**Rewritten question:** How tall is the Eiffel Tower?",
            "**Rewritten question**: 'How tall is the Eiffel Tower?'",
            "\u{201c}How tall is the Eiffel Tower?\u{201d}",
            "Question: How tall is the Eiffel Tower?",
            "\"Rewritten question: How tall is the Eiffel Tower?\"",
        ] {
            assert_eq!(clean(reply).as_deref(), Some("How tall is the Eiffel Tower?"), "{reply:?}");
        }
    }

    #[test]
    fn clean_keeps_inner_quotes_and_colons() {
        assert_eq!(clean("What does \"ephemeral\" mean?").as_deref(), Some("What does \"ephemeral\" mean?"));
        assert_eq!(clean("Ratio 3:2 — what is it?").as_deref(), Some("Ratio 3:2 — what is it?"));
        assert_eq!(
            clean("Questions about Rust: what is a borrow?").as_deref(),
            Some("Questions about Rust: what is a borrow?")
        );
    }

    #[test]
    fn empty_replies_give_none() {
        assert_eq!(clean(""), None);
        assert_eq!(clean("  \n"), None);
        assert_eq!(clean("\"\""), None);
        assert_eq!(clean("Rewritten question:"), None);
    }
}
