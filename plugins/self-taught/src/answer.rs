//! Final-answer extraction from a model's (untrusted) solution text: a
//! GSM8K-style number, a multiple-choice letter or free text. Pure functions,
//! unit-tested natively.
//!
//! Every extractor prefers an explicit marker (`#### 42`, `The answer is
//! (B)`, `Final answer: Paris`) and takes the *last* one, since a chain of
//! thought may mention intermediate answers; only then does it fall back to
//! weaker evidence (the last number, a lone parenthesised letter, the last
//! line).

use core::fmt;

/// What kind of final answer a problem expects (parameter `answer-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerFormat {
    /// A number, normalised (`1,234.50` becomes `1234.5`), as in GSM8K.
    Number,
    /// The letter of a multiple-choice option, `A` to `J`.
    Letter,
    /// Free text: the rest of the line after the answer marker.
    Text,
}

impl AnswerFormat {
    /// Parses the parameter's value: `number`, `letter` or `text` (any
    /// letter case, surrounding blanks ignored).
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "number" => Ok(AnswerFormat::Number),
            "letter" => Ok(AnswerFormat::Letter),
            "text" => Ok(AnswerFormat::Text),
            other => Err(format!("parameter `answer-format` must be `number`, `letter` or `text`, got `{other}`")),
        }
    }

    /// The sentence asking the model to end its solution in a form the
    /// extractor reads reliably.
    pub fn instruction(self) -> &'static str {
        match self {
            AnswerFormat::Number => "End your reply with \"The answer is N.\", where N is the final number.",
            AnswerFormat::Letter => {
                "End your reply with \"The answer is (X).\", where X is the letter of the correct option."
            }
            AnswerFormat::Text => "End your reply with \"The answer is: ANSWER\" on its own line.",
        }
    }
}

impl fmt::Display for AnswerFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnswerFormat::Number => "number",
            AnswerFormat::Letter => "letter",
            AnswerFormat::Text => "text",
        })
    }
}

/// The final answer in `reply`, in `format`; `None` when none can be found.
pub fn extract(reply: &str, format: AnswerFormat) -> Option<String> {
    match format {
        AnswerFormat::Number => extract_number(reply),
        AnswerFormat::Letter => extract_letter(reply),
        AnswerFormat::Text => extract_text(reply),
    }
}

/// Markers after which the final answer follows, matched without regard to
/// ASCII letter case. The last occurrence of any of them wins.
const ANSWER_MARKERS: &[&str] = &["final answer:", "final answer is", "answer is", "answer:"];

/// The byte offset just past the last answer marker in `text`, if any.
fn after_last_marker(text: &str) -> Option<usize> {
    // ASCII lowercase keeps byte offsets, so they index `text` too.
    let lower = text.to_ascii_lowercase();
    ANSWER_MARKERS
        .iter()
        .filter_map(|m| lower.rfind(m).map(|i| (i, i + m.len())))
        .max_by_key(|&(start, _)| start)
        .map(|(_, end)| end)
}

/// A GSM8K-style numeric answer: the first number after the last `####`,
/// else after the last answer marker (`The answer is`), else inside the last
/// `\boxed{}`, else the last number in the text. Normalised with
/// [`normalize_number`].
pub fn extract_number(reply: &str) -> Option<String> {
    if let Some(i) = reply.rfind("####")
        && let Some(n) = numbers(&reply[i + 4..]).into_iter().next()
    {
        return Some(n);
    }
    if let Some(end) = after_last_marker(reply)
        && let Some(n) = numbers(&reply[end..]).into_iter().next()
    {
        return Some(n);
    }
    if let Some(i) = reply.rfind("\\boxed{")
        && let Some(n) = numbers(&reply[i + 7..]).into_iter().next()
    {
        return Some(n);
    }
    numbers(reply).pop()
}

/// Every number in `text`, in order, normalised: an optional minus sign,
/// digits with optional thousands separators (`1,234`), an optional decimal
/// part.
pub fn numbers(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // A digit run not glued to a preceding letter/digit (e.g. "x2").
        let glued = i > 0 && (bytes[i - 1].is_ascii_alphabetic() || bytes[i - 1] == b'_');
        let negative = i > 0 && bytes[i - 1] == b'-' && (i < 2 || !bytes[i - 2].is_ascii_alphanumeric());
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        // Thousands groups: a comma followed by exactly three digits.
        while i + 4 <= bytes.len()
            && bytes[i] == b','
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
            && (i + 4 == bytes.len() || !bytes[i + 4].is_ascii_digit())
        {
            i += 4;
        }
        // Decimal part: a dot followed by at least one digit.
        if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
        }
        if glued {
            continue;
        }
        let raw = &text[start..i];
        if let Some(n) = normalize_number(raw) {
            out.push(if negative && n != "0" { format!("-{n}") } else { n });
        }
    }
    out
}

/// Normalises a number's text: drops thousands separators, a leading `+`,
/// `$`, leading zeros and trailing zeros of the decimal part (`007.50`
/// becomes `7.5`, `3.0` becomes `3`). `None` when it is not a number.
pub fn normalize_number(raw: &str) -> Option<String> {
    let mut text: String = raw.trim().chars().filter(|&c| c != ',' && c != '$').collect();
    let negative = text.starts_with('-');
    if negative || text.starts_with('+') {
        text.remove(0);
    }
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text.as_str(), ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let frac = frac.trim_end_matches('0');
    let body = if frac.is_empty() { int.to_owned() } else { format!("{int}.{frac}") };
    Some(if negative && body != "0" { format!("-{body}") } else { body })
}

/// Option letters a multiple-choice answer may use.
const LETTERS: core::ops::RangeInclusive<u8> = b'A'..=b'J';

/// A multiple-choice letter (`A` to `J`): the letter right after the last
/// answer marker (`The answer is (B)`, `Answer: **C**`), else the last
/// parenthesised letter `(D)`, else a reply that starts with a letter and a
/// separator (`E. because ...`, `B`).
pub fn extract_letter(reply: &str) -> Option<String> {
    if let Some(end) = after_last_marker(reply)
        && let Some(letter) = leading_letter(&reply[end..], false)
    {
        return Some(letter);
    }
    let bytes = reply.as_bytes();
    for i in (0..bytes.len().saturating_sub(2)).rev() {
        if bytes[i] == b'(' && bytes[i + 2] == b')' {
            let c = bytes[i + 1].to_ascii_uppercase();
            if LETTERS.contains(&c) {
                return Some((c as char).to_string());
            }
        }
    }
    leading_letter(reply, true)
}

/// The option letter at the start of `text`, after blanks and opening
/// punctuation, if it stands alone: not the start of a word, and when
/// `strict`, followed by `.`, `)`, `:` or nothing (so that the pronoun in
/// "I think" is not read as option I).
fn leading_letter(text: &str, strict: bool) -> Option<String> {
    let rest = text.trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '(' | '[' | '*' | '"' | '\'' | ':'));
    let mut chars = rest.chars();
    let c = chars.next()?;
    let alone = match chars.next() {
        None => true,
        Some(n) if strict => matches!(n, '.' | ')' | ':' | '\n'),
        Some(n) => !n.is_alphanumeric(),
    };
    (c.is_ascii() && LETTERS.contains(&(c as u8)) && alone).then(|| c.to_string())
}

/// A free-text answer: the rest of the line after the last answer marker
/// (without surrounding quotes, `*` and a final period), else the last
/// non-empty line.
pub fn extract_text(reply: &str) -> Option<String> {
    if let Some(end) = after_last_marker(reply) {
        let line = reply[end..].lines().next().unwrap_or("");
        if let Some(answer) = tidy(line) {
            return Some(answer);
        }
    }
    reply.lines().rev().find_map(tidy)
}

fn tidy(text: &str) -> Option<String> {
    let t = text.trim().trim_start_matches(':').trim();
    let t = t.trim_matches(|c: char| matches!(c, '*' | '"' | '\'' | '`')).trim();
    let t = t.strip_suffix('.').unwrap_or(t).trim();
    let t = t.trim_matches(|c: char| matches!(c, '*' | '"' | '\'' | '`')).trim();
    (!t.is_empty()).then(|| t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!(AnswerFormat::parse(" Number "), Ok(AnswerFormat::Number));
        assert_eq!(AnswerFormat::parse("letter"), Ok(AnswerFormat::Letter));
        assert_eq!(AnswerFormat::parse("TEXT"), Ok(AnswerFormat::Text));
        assert!(AnswerFormat::parse("digits").unwrap_err().contains("`digits`"));
    }

    #[test]
    fn gsm8k_marker_wins() {
        let reply = "She has 3 + 4 = 7 apples, then 7 * 2 = 14.\n#### 14";
        assert_eq!(extract_number(reply).as_deref(), Some("14"));
        assert_eq!(extract_number("#### $1,234.50").as_deref(), Some("1234.5"));
    }

    #[test]
    fn answer_is_marker_then_last_number() {
        assert_eq!(
            extract_number("Step 1: 12 eggs. Step 2: 12 - 3 = 9. The answer is 9 eggs, not 12.").as_deref(),
            Some("9")
        );
        assert_eq!(extract_number("So 5 + 5 = 10, and 10 / 4 = 2.5").as_deref(), Some("2.5"));
        assert_eq!(extract_number("Answer: -3").as_deref(), Some("-3"));
        assert_eq!(extract_number("the result is \\boxed{42}. Check: 6*7").as_deref(), Some("42"));
        assert_eq!(extract_number("no digits here"), None);
    }

    #[test]
    fn numbers_are_scanned_and_normalised() {
        assert_eq!(numbers("1,234 and 1, 2, 3 and 007.500 and x2 and 3-1"), ["1234", "1", "2", "3", "7.5", "3", "1"]);
        assert_eq!(numbers("costs -5 dollars, 10.0 total"), ["-5", "10"]);
        assert_eq!(normalize_number("+0.0"), Some("0".into()));
        assert_eq!(normalize_number("-0"), Some("0".into()));
        assert_eq!(normalize_number("$12,000"), Some("12000".into()));
        assert_eq!(normalize_number("1.2.3"), None);
        assert_eq!(normalize_number("abc"), None);
    }

    #[test]
    fn letters() {
        assert_eq!(extract_letter("Option A is wrong because ... The answer is (C).").as_deref(), Some("C"));
        assert_eq!(extract_letter("Answer: **B**").as_deref(), Some("B"));
        assert_eq!(extract_letter("I think (a) fits, but (d) is better").as_deref(), Some("D"));
        assert_eq!(extract_letter("E. Because it rains.").as_deref(), Some("E"));
        assert_eq!(extract_letter("B").as_deref(), Some("B"));
        // "I" as a pronoun and words starting with a letter are not answers.
        assert_eq!(extract_letter("I am not sure. Both are plausible."), None);
        assert_eq!(extract_letter("The answer is: Because of gravity"), None);
    }

    #[test]
    fn free_text() {
        assert_eq!(extract_text("It is in France.\nThe answer is: Paris.").as_deref(), Some("Paris"));
        assert_eq!(extract_text("Final answer: \"the Nile\"").as_deref(), Some("the Nile"));
        assert_eq!(extract_text("Reasoning...\n\nMount Everest\n  ").as_deref(), Some("Mount Everest"));
        assert_eq!(extract_text("   \n "), None);
    }

    #[test]
    fn extract_dispatches_on_format() {
        let reply = "Paris has 2 airports. The answer is (B).";
        assert_eq!(extract(reply, AnswerFormat::Letter).as_deref(), Some("B"));
        assert_eq!(extract(reply, AnswerFormat::Number).as_deref(), Some("2"));
        assert_eq!(extract(reply, AnswerFormat::Text).as_deref(), Some("(B)"));
    }
}
