//! Prompt templates with `{name}` placeholders, as technique plugins take
//! them from their parameters.

/// Fills `{name}` placeholders of `template` with `values` in one pass:
/// text substituted for one placeholder is never scanned again, so a value
/// that happens to contain `{query}` cannot pull the query in twice.
/// Unknown placeholders (and a lone `{`) stay as they are.
///
/// ```
/// use techne_plugin_sdk::template::fill;
///
/// let prompt = fill("Answer: {question}", &[("question", "What is {x}?")]);
/// assert_eq!(prompt, "Answer: What is {x}?");
/// ```
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        match values.iter().find(|(name, _)| after[1..].starts_with(name) && after[1 + name.len()..].starts_with('}')) {
            Some((name, value)) => {
                out.push_str(value);
                rest = &after[name.len() + 2..];
            }
            None => {
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn fills_every_known_placeholder_once() {
        assert_eq!(fill("{prompt}\n\n{query}", &[("prompt", "Think."), ("query", "2+2?")]), "Think.\n\n2+2?");
        assert_eq!(fill("{query} and {query}", &[("query", "Q")]), "Q and Q");
    }

    #[test]
    fn substituted_text_is_not_scanned_again() {
        assert_eq!(fill("{prompt} {query}", &[("prompt", "use {query}"), ("query", "Q")]), "use {query} Q");
    }

    #[test]
    fn unknown_or_unclosed_placeholders_stay() {
        assert_eq!(fill("{other} {query", &[("query", "Q")]), "{other} {query");
        assert_eq!(fill("{{query}}", &[("query", "Q")]), "{Q}");
        assert_eq!(fill("é{ü}", &[("query", "Q")]), "é{ü}");
        assert_eq!(fill("", &[("query", "Q")]), "");
    }
}
