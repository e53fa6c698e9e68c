//! Self-Instruct-style synthesis of new (prompt, response) pairs from seed
//! examples: the prompt, the choice of seeds per call and the robust
//! parsing of the service model's (untrusted) reply. Pure functions,
//! unit-tested natively.

use techne_plugin_sdk::serde_json::{Deserializer, Value};
use techne_plugin_sdk::template::fill;

/// The default synthesis prompt, in the style of the paper's: seed
/// example(s), a request for similar but diverse pairs, JSON out.
/// Placeholders: `{count}` (pairs wanted), `{examples}` (the seeds) and
/// `{topic}` (a sentence naming the `topic` parameter, or nothing when it is
/// empty).
pub const DEFAULT_SYNTHESIS_PROMPT: &str = "Generate {count} new (instruction, response) pairs that are \
similar in context and structure to the example(s) below. Each instruction must pose a clear task or \
question; each response must complete it accurately and in full, with the level of detail of the \
examples, so that someone with a basic understanding of the subject can follow it.{topic}

{examples}

Make the new pairs diverse and different from the examples. Reply with JSON only, in this format:
{\"contents\": [{\"instruction\": \"...\", \"response\": \"...\"}, ...]}";

/// The seeds of one call, as `(prompt, response)`.
pub fn format_examples(seeds: &[(&str, &str)]) -> String {
    seeds
        .iter()
        .enumerate()
        .map(|(i, (prompt, response))| {
            format!("Example {}:\nInstruction: {}\nResponse: {}", i + 1, prompt.trim(), response.trim())
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The synthesis prompt of one call.
pub fn synthesis_prompt(template: &str, seeds: &[(&str, &str)], count: usize, topic: &str) -> String {
    let topic = topic.trim();
    let topic = if topic.is_empty() { String::new() } else { format!(" The topic is {topic}.") };
    fill(template, &[("count", &count.to_string()), ("examples", &format_examples(seeds)), ("topic", &topic)])
}

/// The indices of the seeds shown in call number `call`: `k` consecutive
/// seeds (cyclically, at most all of them) starting at `offset + call · k`,
/// so successive calls walk through every seed.
pub fn pick_seeds(seed_count: usize, k: usize, offset: u64, call: usize) -> Vec<usize> {
    if seed_count == 0 {
        return Vec::new();
    }
    let k = k.clamp(1, seed_count);
    let start = (offset % seed_count as u64) as usize + call.wrapping_mul(k) % seed_count;
    (0..k).map(|i| (start + i) % seed_count).collect()
}

/// Keys under which a pair's prompt may come.
const PROMPT_KEYS: &[&str] = &["instruction", "prompt", "question", "input"];
/// Keys under which a pair's response may come.
const RESPONSE_KEYS: &[&str] = &["response", "output", "answer", "completion"];

/// Whether `text` has a letter or a digit: `...`, `¶` or an echoed `<...>`
/// placeholder are not a prompt or a response.
pub fn has_content(text: &str) -> bool {
    text.chars().any(char::is_alphanumeric)
}

/// The (prompt, response) pairs in the service model's reply, trimmed;
/// pairs whose prompt or response has no letter or digit are dropped.
///
/// Reads the first JSON value in the reply (code fences and prose around it
/// are fine) that holds pairs: a list of objects, or an object with such a
/// list (`contents` or any other key); each object's prompt is under
/// `instruction`/`prompt`/`question`/`input` and its response under
/// `response`/`output`/`answer`/`completion`. When there is no JSON, reads
/// `Instruction: ... Response: ...` blocks from the text.
pub fn parse_pairs(reply: &str) -> Vec<(String, String)> {
    for (start, _) in reply.match_indices(['{', '[']) {
        let Some(Ok(value)) = Deserializer::from_str(&reply[start..]).into_iter::<Value>().next() else {
            continue;
        };
        let pairs = pairs_in(&value);
        if !pairs.is_empty() {
            return pairs;
        }
    }
    text_pairs(reply)
}

fn pairs_in(value: &Value) -> Vec<(String, String)> {
    match value {
        Value::Array(items) => items.iter().filter_map(pair_of).collect(),
        Value::Object(map) => {
            if let Some(pair) = pair_of(value) {
                return vec![pair];
            }
            let preferred = map.get("contents").into_iter();
            preferred
                .chain(map.values())
                .filter_map(|v| match v {
                    Value::Array(items) => Some(items.iter().filter_map(pair_of).collect::<Vec<_>>()),
                    _ => None,
                })
                .find(|pairs| !pairs.is_empty())
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

fn pair_of(value: &Value) -> Option<(String, String)> {
    let Value::Object(map) = value else { return None };
    let field = |keys: &[&str]| {
        map.iter()
            .find(|(k, _)| keys.iter().any(|key| k.eq_ignore_ascii_case(key)))
            .and_then(|(_, v)| v.as_str())
            .map(str::trim)
            .filter(|s| has_content(s))
            .map(str::to_owned)
    };
    Some((field(PROMPT_KEYS)?, field(RESPONSE_KEYS)?))
}

/// `Instruction: ...` / `Response: ...` blocks (labels case-insensitive,
/// optionally numbered or in `**bold**`), each response running up to the
/// next instruction.
fn text_pairs(reply: &str) -> Vec<(String, String)> {
    #[derive(PartialEq)]
    enum Part {
        None,
        Prompt,
        Response,
    }
    let mut pairs = Vec::new();
    let (mut prompt, mut response, mut part) = (String::new(), String::new(), Part::None);
    let mut flush = |prompt: &mut String, response: &mut String| {
        let (p, r) = (prompt.trim(), response.trim());
        if has_content(p) && has_content(r) {
            pairs.push((p.to_owned(), r.to_owned()));
        }
        prompt.clear();
        response.clear();
    };
    for line in reply.lines() {
        if let Some(rest) = labelled(line, "instruction") {
            flush(&mut prompt, &mut response);
            prompt.push_str(rest);
            part = Part::Prompt;
        } else if let Some(rest) = labelled(line, "response") {
            response.push_str(rest);
            part = Part::Response;
        } else {
            let target = match part {
                Part::Prompt => &mut prompt,
                Part::Response => &mut response,
                Part::None => continue,
            };
            target.push('\n');
            target.push_str(line);
        }
    }
    flush(&mut prompt, &mut response);
    pairs
}

/// If `line` starts with `label` (after `#`, `*`, `-`, blanks, an optional
/// number), optionally numbered, then `:`, the text after it.
fn labelled<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    let rest = line.trim_start().trim_start_matches(['#', '*', '-', ' ']);
    let head = rest.get(..label.len())?;
    if !head.eq_ignore_ascii_case(label) {
        return None;
    }
    let rest = rest[label.len()..].trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ' || c == '*');
    rest.strip_prefix(':').map(|r| r.trim_start_matches('*').trim())
}

/// A key for exact-duplicate checks: words lowercased, joined by spaces.
pub fn exact_key(prompt: &str, response: &str) -> String {
    let words = |t: &str| t.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ");
    format!("{}\u{1f}{}", words(prompt), words(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_lists_the_seeds() {
        let p = synthesis_prompt(DEFAULT_SYNTHESIS_PROMPT, &[("Summarize X.", "X is ...")], 5, " summarization ");
        assert!(p.starts_with("Generate 5 new (instruction, response) pairs"));
        assert!(p.contains("can follow it. The topic is summarization.\n\nExample 1:\nInstruction: Summarize X.\nResponse: X is ...\n\n"));
        let p = synthesis_prompt("{count}|{topic}|{examples}", &[("a", "b"), ("c", "d")], 2, "");
        assert_eq!(p, "2||Example 1:\nInstruction: a\nResponse: b\n\nExample 2:\nInstruction: c\nResponse: d");
    }

    #[test]
    fn seeds_rotate_through_calls() {
        assert_eq!(pick_seeds(5, 2, 0, 0), [0, 1]);
        assert_eq!(pick_seeds(5, 2, 0, 1), [2, 3]);
        assert_eq!(pick_seeds(5, 2, 0, 2), [4, 0]);
        assert_eq!(pick_seeds(5, 2, 7, 0), [2, 3]);
        assert_eq!(pick_seeds(3, 10, 0, 0), [0, 1, 2]);
        assert_eq!(pick_seeds(3, 0, 0, 4), [1]);
        assert!(pick_seeds(0, 2, 0, 0).is_empty());
    }

    #[test]
    fn json_replies() {
        let reply = "```json\n{\"contents\": [{\"instruction\": \" Name a prime. \", \"response\": \"7\"}, \
                     {\"instruction\": \"\", \"response\": \"dropped\"}, {\"Prompt\": \"2+2?\", \"Output\": \"4\"}]}\n```";
        assert_eq!(parse_pairs(reply), [("Name a prime.".into(), "7".into()), ("2+2?".into(), "4".into())]);
        assert_eq!(parse_pairs(r#"[{"question": "q", "answer": "a"}]"#), [("q".into(), "a".into())]);
        assert_eq!(parse_pairs(r#"Sure: {"pairs": [{"input": "i", "completion": "c"}]}"#), [("i".into(), "c".into())]);
        assert_eq!(parse_pairs(r#"{"instruction": "one", "response": "pair"}"#), [("one".into(), "pair".into())]);
    }

    #[test]
    fn text_replies() {
        let reply = "Here you go:\n**Instruction 1:** Define entropy.\n**Response 1:** A measure of disorder.\n\
                     It grows.\n\nInstruction: What is 3*3?\nResponse: 9\nInstruction: orphan";
        assert_eq!(
            parse_pairs(reply),
            [
                ("Define entropy.".into(), "A measure of disorder.\nIt grows.".into()),
                ("What is 3*3?".into(), "9".into())
            ]
        );
        assert!(parse_pairs("I can't help with that.").is_empty());
        assert!(parse_pairs("{\"contents\": []}").is_empty());
        // The format's placeholders echoed back are not pairs.
        assert!(parse_pairs(r#"{"contents": [{"instruction": "...", "response": "\u00b6"}]}"#).is_empty());
        assert!(parse_pairs("Instruction: ...\nResponse: ...").is_empty());
    }

    #[test]
    fn exact_keys_ignore_case_and_spacing() {
        assert_eq!(exact_key("Name  a prime.", "7"), exact_key("name a prime.", " 7 "));
        assert_ne!(exact_key("a", "b c"), exact_key("a b", "c"));
    }
}
