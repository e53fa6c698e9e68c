//! The prompts of SELF-TAUGHT's three phases and of the baselines, and the
//! parsing of the model's (untrusted) replies to them: the identified
//! knowledge, the list of pseudo-problems and the `demos` parameter. Pure
//! functions, unit-tested natively.

use techne_plugin_sdk::serde_json::{self, Value};

use crate::answer::AnswerFormat;

/// A worked example: a problem and its step-by-step solution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demo {
    /// The problem.
    pub question: String,
    /// Its solution, ending with the final answer.
    pub answer: String,
}

/// Phase I (information identification): ask for the knowledge the problem
/// needs, stated abstractly, without solving the problem.
pub fn knowledge_prompt(problem: &str) -> String {
    format!(
        "Here is a problem:\n\n{problem}\n\n\
         Do not solve it. Identify, in abstract and general terms, the knowledge needed to solve it: \
         the concepts, facts, formulas or skills involved, not the specifics of this problem. \
         Reply with that knowledge only, in at most three sentences."
    )
}

/// Phase II, first half: ask for `n` new problems that need the same
/// knowledge, in the same format as the target problem, numbered
/// `Problem 1:`, `Problem 2:` ... so that [`split_problems`] can read them.
pub fn pseudo_problems_prompt(problem: &str, knowledge: &str, n: u32) -> String {
    let knowledge = if knowledge.trim().is_empty() {
        "the knowledge this problem needs".to_owned()
    } else {
        format!("this knowledge: {}", knowledge.trim())
    };
    format!(
        "Here is a problem:\n\n{problem}\n\n\
         Write {n} new problems that are different from it but can be solved with {knowledge}\n\
         Each new problem must have the same format as the original (for example, if the original \
         lists answer options, list options too) and must have a single correct answer. \
         Do not solve them. Write them as:\nProblem 1: ...\nProblem 2: ...\nand nothing else."
    )
}

/// Phase II, second half (and the zero-shot-CoT baseline): ask for a
/// step-by-step solution of `problem` that ends with the answer marker.
pub fn solve_prompt(problem: &str, format: AnswerFormat) -> String {
    format!("{problem}\n\nLet's think step by step. {}", format.instruction())
}

/// The zero-shot baseline: ask for the final answer only.
pub fn zero_shot_prompt(problem: &str, format: AnswerFormat) -> String {
    format!("{problem}\n\nGive only the final answer, without explanation. {}", format.instruction())
}

/// Phase III (and the few-shot-CoT baseline): solve `problem` with `demos`
/// as chain-of-thought demonstrations, in one user message.
pub fn demonstrations_prompt(problem: &str, demos: &[Demo], format: AnswerFormat) -> String {
    if demos.is_empty() {
        return solve_prompt(problem, format);
    }
    let mut prompt = format!(
        "Here are example problems with step-by-step solutions. Solve the last problem the same way, step by step. \
         {}\n\n",
        format.instruction()
    );
    for demo in demos {
        prompt.push_str(&format!("Problem: {}\nSolution: {}\n\n", demo.question.trim(), demo.answer.trim()));
    }
    prompt.push_str(&format!("Problem: {}\nSolution:", problem.trim()));
    prompt
}

/// The identified knowledge in the model's reply: trimmed, without a
/// leading `Knowledge:`-style label. `None` when nothing is left.
pub fn clean_knowledge(reply: &str) -> Option<String> {
    let mut text = reply.trim();
    for label in ["knowledge needed:", "required knowledge:", "knowledge:", "information:"] {
        if let Some(head) = text.get(..label.len())
            && head.eq_ignore_ascii_case(label)
        {
            text = text[label.len()..].trim();
        }
    }
    (!text.is_empty()).then(|| text.to_owned())
}

/// Splits the model's list of problems into at most `max` problems.
///
/// A problem starts at a line whose beginning (after `#`, `*` and blanks)
/// is an optional word `Problem`, `Question` or `Pseudo problem` and the
/// *next expected number* (1, 2, 3, ...) followed by `.`, `)`, `:` or the
/// end of the line; everything up to the next such line belongs to it
/// (options on their own lines included). Requiring the numbers in sequence
/// keeps numbered lines inside a problem from splitting it. Text before the
/// first marker is ignored; empty problems are dropped. When the reply has
/// no marker at all, the whole reply is one problem.
pub fn split_problems(reply: &str, max: usize) -> Vec<String> {
    let mut problems: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut next = 1u32;
    let mut saw_marker = false;
    for line in reply.lines() {
        if let Some(rest) = marker(line, next) {
            saw_marker = true;
            if let Some(done) = current.take() {
                problems.push(done);
            }
            current = Some(rest.to_owned());
            next += 1;
        } else if let Some(text) = current.as_mut() {
            text.push('\n');
            text.push_str(line);
        }
    }
    if let Some(done) = current.take() {
        problems.push(done);
    }
    if !saw_marker {
        problems.push(reply.to_owned());
    }
    problems
        .into_iter()
        .map(|p| p.trim().trim_end_matches("---").trim().to_owned())
        .filter(|p| !p.is_empty())
        .take(max)
        .collect()
}

/// If `line` starts problem number `n`, the text after the marker.
fn marker(line: &str, n: u32) -> Option<&str> {
    let mut rest = line.trim_start().trim_start_matches(['#', '*', ' ', '\t']);
    for word in ["pseudo-problem", "pseudo problem", "problem", "question"] {
        if let Some(head) = rest.get(..word.len())
            && head.eq_ignore_ascii_case(word)
        {
            rest = rest[word.len()..].trim_start();
            break;
        }
    }
    let number = n.to_string();
    let rest = rest.strip_prefix(number.as_str())?;
    let rest = rest.trim_start_matches('*');
    match rest.chars().next() {
        None => Some(rest),
        Some('.' | ')' | ':') => Some(rest[1..].trim_start_matches('*').trim()),
        Some(_) => None,
    }
}

/// Parses the `demos` parameter: a JSON list of `{"question": ..., "answer":
/// ...}` objects (blank text means no demos).
pub fn parse_demos(json: &str) -> Result<Vec<Demo>, String> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_str(json).map_err(|e| format!("parameter `demos` is not valid JSON: {e}"))?;
    let Value::Array(items) = value else {
        return Err("parameter `demos` must be a JSON list of {\"question\": ..., \"answer\": ...} objects".into());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |name: &str| {
                item.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
            };
            match (field("question"), field("answer")) {
                (Some(question), Some(answer)) => Ok(Demo { question, answer }),
                _ => Err(format!("parameter `demos`: item {i} needs non-empty text fields `question` and `answer`")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_carry_the_problem_and_the_format() {
        let k = knowledge_prompt("What is 15% of 80?");
        assert!(k.starts_with("Here is a problem:\n\nWhat is 15% of 80?\n\nDo not solve it."));
        let p = pseudo_problems_prompt("What is 15% of 80?", " percentages ", 3);
        assert!(p.contains("Write 3 new problems"));
        assert!(p.contains("with this knowledge: percentages\n"));
        assert!(pseudo_problems_prompt("q", "", 2).contains("with the knowledge this problem needs\n"));
        assert_eq!(
            solve_prompt("2+2?", AnswerFormat::Number),
            "2+2?\n\nLet's think step by step. End your reply with \"The answer is N.\", where N is the final number."
        );
        assert!(zero_shot_prompt("2+2?", AnswerFormat::Letter).contains("The answer is (X)."));
    }

    #[test]
    fn demonstrations_prompt_lists_demos_then_the_problem() {
        let demos = [
            Demo { question: "1+1?".into(), answer: "1+1=2. The answer is 2.".into() },
            Demo { question: " 2+3? ".into(), answer: "2+3=5. The answer is 5.".into() },
        ];
        let prompt = demonstrations_prompt("4+4?", &demos, AnswerFormat::Number);
        assert_eq!(
            prompt,
            "Here are example problems with step-by-step solutions. Solve the last problem the same way, step by step. \
             End your reply with \"The answer is N.\", where N is the final number.\n\n\
             Problem: 1+1?\nSolution: 1+1=2. The answer is 2.\n\n\
             Problem: 2+3?\nSolution: 2+3=5. The answer is 5.\n\n\
             Problem: 4+4?\nSolution:"
        );
        assert_eq!(
            demonstrations_prompt("4+4?", &[], AnswerFormat::Number),
            solve_prompt("4+4?", AnswerFormat::Number)
        );
    }

    #[test]
    fn knowledge_is_cleaned() {
        assert_eq!(clean_knowledge("  Knowledge: percentages.\n").as_deref(), Some("percentages."));
        assert_eq!(clean_knowledge("Ratios and rates").as_deref(), Some("Ratios and rates"));
        assert_eq!(clean_knowledge("Knowledge:   "), None);
    }

    #[test]
    fn problems_are_split_on_sequential_markers() {
        let reply = "Sure! Here they are.\n\
                     Problem 1: A shirt costs $20 and is discounted 10%. What does it cost?\n\
                     Problem 2: Which is a prime?\n(A) 4\n(B) 7\n1. not a marker: numbering restarts\n\
                     **Problem 3:** A car travels 2 hours at 30 km/h. How far?\n\
                     Problem 4: extra";
        let problems = split_problems(reply, 3);
        assert_eq!(problems.len(), 3);
        assert_eq!(problems[0], "A shirt costs $20 and is discounted 10%. What does it cost?");
        assert_eq!(problems[1], "Which is a prime?\n(A) 4\n(B) 7\n1. not a marker: numbering restarts");
        assert_eq!(problems[2], "A car travels 2 hours at 30 km/h. How far?");
    }

    #[test]
    fn plain_numbered_lists_and_unmarked_replies() {
        assert_eq!(split_problems("1. What is 3*4?\n2) What is 5*6?\n", 5), ["What is 3*4?", "What is 5*6?"]);
        assert_eq!(split_problems("### Question 1\nHow many legs?\n### Question 2\n\n", 5), ["How many legs?"]);
        assert_eq!(split_problems("What is 7*8?", 3), ["What is 7*8?"]);
        assert!(split_problems("   ", 3).is_empty());
        // "10" is not marker 1 even though it starts with "1".
        assert_eq!(split_problems("10 apples cost $5.", 3), ["10 apples cost $5."]);
    }

    #[test]
    fn demos_parse_and_errors() {
        let demos = parse_demos(r#"[{"question": "1+1?", "answer": "2"}, {"question": "q", "answer": " a ", "x": 1}]"#)
            .unwrap();
        assert_eq!(demos[1], Demo { question: "q".into(), answer: "a".into() });
        assert_eq!(parse_demos("  "), Ok(vec![]));
        assert!(parse_demos("{").unwrap_err().contains("not valid JSON"));
        assert!(parse_demos(r#"{"question": "q"}"#).unwrap_err().contains("JSON list"));
        assert!(parse_demos(r#"[{"question": "q", "answer": ""}]"#).unwrap_err().contains("item 0"));
    }
}
