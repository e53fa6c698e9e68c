//! Work items from a dataset file (JSONL, JSON array or CSV) with a field
//! mapping, or from inline inputs.

use std::path::{Path, PathBuf};

use crate::config::{DatasetConfig, DatasetFormat};

/// One work item.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Item {
    /// Stable identity: the id field, or the 1-based record number.
    pub id: String,
    /// The question or problem.
    pub input: String,
    /// The reference answer, if the dataset has one.
    pub reference: Option<String>,
    /// Statements about the ideal answer (K-QA's `Must_have` and
    /// `Nice_to_have`), which the `k-qa-*` metrics judge the answer against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statements: Option<AnswerStatements>,
}

/// K-QA's statements about a question's ideal answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct AnswerStatements {
    /// Statements a complete answer must contain.
    pub must_have: Vec<String>,
    /// Statements a good answer may contain.
    pub nice_to_have: Vec<String>,
}

/// Why a dataset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be read.
    #[error("cannot read dataset `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The format is neither given nor inferable.
    #[error("cannot tell the format of dataset `{path}`: name it .jsonl, .json or .csv, or set `format` in [dataset]")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// A record is malformed.
    #[error("dataset `{path}`, record {record}: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// 1-based record number (line for JSONL).
        record: usize,
        /// What is wrong.
        message: String,
    },
    /// Two records share an id.
    #[error("dataset `{path}`: id {id:?} appears twice; ids must be unique (set `id-field` to a unique field)")]
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// The repeated id.
        id: String,
    },
}

/// Items from inline inputs, with ids `1`, `2`, ….
pub fn inline_items(inputs: &[String]) -> Vec<Item> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, q)| Item { id: (i + 1).to_string(), input: q.clone(), reference: None, statements: None })
        .collect()
}

/// Read every item of a dataset.
pub fn load_items(config: &DatasetConfig) -> Result<Vec<Item>, DatasetError> {
    let path = &config.path;
    let format = match config.format {
        Some(f) => f,
        None => match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("jsonl") | Some("ndjson") => DatasetFormat::Jsonl,
            Some("json") => DatasetFormat::Json,
            Some("csv") => DatasetFormat::Csv,
            _ => return Err(DatasetError::UnknownFormat { path: path.clone() }),
        },
    };
    let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Read { path: path.clone(), source })?;
    if let Some(items) = benchmark_items(format, path, &text)? {
        return Ok(items);
    }
    let records: Vec<(usize, serde_json::Map<String, serde_json::Value>)> = match format {
        DatasetFormat::Jsonl => text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| parse_object(path, i + 1, line).map(|o| (i + 1, o)))
            .collect::<Result<_, _>>()?,
        DatasetFormat::Json => {
            let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| DatasetError::Record {
                path: path.clone(),
                record: 1,
                message: e.to_string(),
            })?;
            let serde_json::Value::Array(rows) = value else {
                return Err(DatasetError::Record {
                    path: path.clone(),
                    record: 1,
                    message: "expected a JSON array of objects".into(),
                });
            };
            rows.into_iter()
                .enumerate()
                .map(|(i, row)| match row {
                    serde_json::Value::Object(o) => Ok((i + 1, o)),
                    _ => Err(DatasetError::Record {
                        path: path.clone(),
                        record: i + 1,
                        message: "expected an object".into(),
                    }),
                })
                .collect::<Result<_, _>>()?
        }
        DatasetFormat::Gsm8k
        | DatasetFormat::Bbh
        | DatasetFormat::Pubmedqa
        | DatasetFormat::KQa
        | DatasetFormat::TruthfulqaMc => Vec::new(),
        DatasetFormat::Csv => {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            let headers = reader
                .headers()
                .map_err(|e| DatasetError::Record { path: path.clone(), record: 1, message: e.to_string() })?
                .clone();
            reader
                .records()
                .enumerate()
                .map(|(i, row)| {
                    let row = row.map_err(|e| DatasetError::Record {
                        path: path.clone(),
                        record: i + 2,
                        message: e.to_string(),
                    })?;
                    let object = headers
                        .iter()
                        .zip(row.iter())
                        .map(|(h, v)| (h.to_string(), serde_json::Value::String(v.to_string())))
                        .collect();
                    Ok((i + 2, object))
                })
                .collect::<Result<_, _>>()?
        }
    };
    let mut items = Vec::with_capacity(records.len());
    let mut seen = std::collections::HashSet::new();
    for (n, (record, object)) in records.into_iter().enumerate() {
        let field = |name: &str| -> Result<Option<String>, DatasetError> {
            match object.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Ok(Some(v.to_string())),
                Some(_) => Err(DatasetError::Record {
                    path: path.clone(),
                    record,
                    message: format!("field `{name}` must be text, a number or a boolean"),
                }),
            }
        };
        let input = field(&config.input_field)?.ok_or_else(|| DatasetError::Record {
            path: path.clone(),
            record,
            message: format!(
                "no field `{}`; it has: {}. Set `input-field` in [dataset]",
                config.input_field,
                object.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })?;
        let reference = match &config.reference_field {
            Some(name) => field(name)?,
            None => None,
        };
        let id = match &config.id_field {
            Some(name) => field(name)?.ok_or_else(|| DatasetError::Record {
                path: path.clone(),
                record,
                message: format!("no id field `{name}`"),
            })?,
            None => (n + 1).to_string(),
        };
        if !seen.insert(id.clone()) {
            return Err(DatasetError::DuplicateId { path: path.clone(), id });
        }
        items.push(Item { id, input, reference, statements: None });
    }
    Ok(items)
}

/// Items of the public benchmark formats, which have fixed fields; `None`
/// for the generic formats.
fn benchmark_items(format: DatasetFormat, path: &Path, text: &str) -> Result<Option<Vec<Item>>, DatasetError> {
    let record = |record: usize, message: String| DatasetError::Record { path: path.to_path_buf(), record, message };
    let text_field =
        |o: &serde_json::Map<String, serde_json::Value>, name: &str, n: usize| -> Result<String, DatasetError> {
            o.get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| record(n, format!("no text field `{name}`")))
        };
    let jsonl = |question: &str, answer: &str| -> Result<Vec<Item>, DatasetError> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .enumerate()
            .map(|(n, (line, l))| {
                let o = parse_object(path, line + 1, l)?;
                Ok(Item {
                    id: (n + 1).to_string(),
                    input: text_field(&o, question, line + 1)?,
                    reference: Some(text_field(&o, answer, line + 1)?),
                    statements: kqa_statements(&o),
                })
            })
            .collect()
    };
    let json = || serde_json::from_str::<serde_json::Value>(text).map_err(|e| record(1, e.to_string()));
    Ok(Some(match format {
        DatasetFormat::Gsm8k => jsonl("question", "answer")?,
        DatasetFormat::KQa => jsonl("Question", "Free_form_answer")?,
        DatasetFormat::Bbh => {
            let value = json()?;
            let examples = value
                .get("examples")
                .and_then(|e| e.as_array())
                .ok_or_else(|| record(1, "expected {\"examples\": [...]} (a BIG-Bench Hard task file)".into()))?;
            examples
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let o = e.as_object().ok_or_else(|| record(i + 1, "expected an object".into()))?;
                    Ok(Item {
                        id: (i + 1).to_string(),
                        input: text_field(o, "input", i + 1)?,
                        reference: Some(text_field(o, "target", i + 1)?),
                        statements: None,
                    })
                })
                .collect::<Result<_, DatasetError>>()?
        }
        DatasetFormat::Pubmedqa => {
            let value = json()?;
            let map = value.as_object().ok_or_else(|| record(1, "expected {PMID: {...}} (PubMedQA)".into()))?;
            map.iter()
                .enumerate()
                .map(|(i, (pmid, entry))| {
                    let o = entry.as_object().ok_or_else(|| record(i + 1, "expected an object".into()))?;
                    let contexts: Vec<&str> = o
                        .get("CONTEXTS")
                        .and_then(|c| c.as_array())
                        .map(|c| c.iter().filter_map(|x| x.as_str()).collect())
                        .unwrap_or_default();
                    let question = text_field(o, "QUESTION", i + 1)?;
                    Ok(Item {
                        id: pmid.clone(),
                        input: format!(
                            "Context: {}\nQuestion: {question}\nAnswer with yes, no or maybe.",
                            contexts.join(" ")
                        ),
                        reference: Some(text_field(o, "final_decision", i + 1)?),
                        statements: None,
                    })
                })
                .collect::<Result<_, DatasetError>>()?
        }
        DatasetFormat::TruthfulqaMc => truthfulqa_items(path, text)?,
        DatasetFormat::Jsonl | DatasetFormat::Json | DatasetFormat::Csv => return Ok(None),
    }))
}

/// TruthfulQA MC1 items: a JSON array (canonical `mc_task.json`, or Hugging
/// Face rows) or JSONL (Hugging Face rows). Each question's choices are put
/// in an order drawn from a hash of the question (the canonical files list
/// the correct answer first, so keeping their order would make it always
/// `(A)`; the choices are sorted first, so both layouts agree), lettered `(A)`, `(B)`, …; the reference is the correct letter.
fn truthfulqa_items(path: &Path, text: &str) -> Result<Vec<Item>, DatasetError> {
    let record = |record: usize, message: String| DatasetError::Record { path: path.to_path_buf(), record, message };
    let rows: Vec<(usize, serde_json::Value)> = if text.trim_start().starts_with('[') {
        match serde_json::from_str::<serde_json::Value>(text).map_err(|e| record(1, e.to_string()))? {
            serde_json::Value::Array(rows) => rows.into_iter().enumerate().map(|(i, r)| (i + 1, r)).collect(),
            _ => return Err(record(1, "expected a JSON array of TruthfulQA questions".into())),
        }
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).map(|v| (i + 1, v)).map_err(|e| record(i + 1, e.to_string())))
            .collect::<Result<_, _>>()?
    };
    rows.into_iter()
        .enumerate()
        .map(|(n, (at, row))| {
            let question = row
                .get("question")
                .and_then(|q| q.as_str())
                .ok_or_else(|| record(at, "no text field `question`".into()))?;
            let targets =
                row.get("mc1_targets").ok_or_else(|| record(at, "no `mc1_targets` (is this TruthfulQA MC?)".into()))?;
            let mut choices = truthfulqa_choices(targets).map_err(|m| record(at, m))?;
            // A layout-independent order before the shuffle (JSON objects carry none).
            choices.sort();
            let correct: Vec<usize> = choices.iter().enumerate().filter(|(_, (_, ok))| *ok).map(|(i, _)| i).collect();
            if correct.len() != 1 {
                return Err(record(
                    at,
                    format!("mc1_targets must mark exactly one choice correct, not {}", correct.len()),
                ));
            }
            if choices.len() > 10 {
                return Err(record(at, format!("{} choices; the `choice` metric reads letters A to J", choices.len())));
            }
            let order = shuffled_order(question, choices.len());
            let mut input = format!("Q: {question}\nOptions:\n");
            let mut reference = String::new();
            for (slot, &index) in order.iter().enumerate() {
                let letter = char::from(b'A' + slot as u8);
                input.push_str(&format!("({letter}) {}\n", choices[index].0));
                if index == correct[0] {
                    reference = format!("({letter})");
                }
            }
            input.push_str("Answer with the letter of the true option.");
            let id = row.get("id").and_then(|v| v.as_str()).map(str::to_string).unwrap_or_else(|| (n + 1).to_string());
            Ok(Item { id, input, reference: Some(reference), statements: None })
        })
        .collect()
}

/// The (choice, correct) pairs of a TruthfulQA targets value: `{choice: 0|1}`
/// (canonical) or `{choices: [..], labels: [..]}` (Hugging Face).
fn truthfulqa_choices(targets: &serde_json::Value) -> Result<Vec<(String, bool)>, String> {
    let object = targets.as_object().ok_or("mc1_targets must be an object")?;
    let label = |v: &serde_json::Value| v.as_i64().map(|l| l == 1).or_else(|| v.as_bool());
    if let (Some(choices), Some(labels)) = (object.get("choices"), object.get("labels")) {
        let (Some(choices), Some(labels)) = (choices.as_array(), labels.as_array()) else {
            return Err("mc1_targets.choices and .labels must be lists".into());
        };
        if choices.len() != labels.len() {
            return Err(format!("{} choices but {} labels", choices.len(), labels.len()));
        }
        return choices
            .iter()
            .zip(labels)
            .map(|(c, l)| match (c.as_str(), label(l)) {
                (Some(c), Some(l)) => Ok((c.to_string(), l)),
                _ => Err("choices must be text and labels 0 or 1".to_string()),
            })
            .collect();
    }
    object
        .iter()
        .map(|(choice, l)| {
            label(l).map(|l| (choice.clone(), l)).ok_or_else(|| format!("label of {choice:?} must be 0 or 1"))
        })
        .collect()
}

/// A permutation of `0..len` fixed by `key` (Fisher–Yates driven by FNV-1a and SplitMix64).
fn shuffled_order(key: &str, len: usize) -> Vec<usize> {
    let mut state = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// K-QA's `Must_have` / `Nice_to_have` lists of a record (also in lower
/// case), when it has must-have statements; records of other formats have
/// neither and get `None`.
fn kqa_statements(o: &serde_json::Map<String, serde_json::Value>) -> Option<AnswerStatements> {
    let list = |names: [&str; 2]| -> Vec<String> {
        names
            .iter()
            .find_map(|n| o.get(*n).and_then(|v| v.as_array()))
            .map(|a| a.iter().filter_map(|v| v.as_str()).map(str::to_owned).filter(|s| !s.trim().is_empty()).collect())
            .unwrap_or_default()
    };
    let must_have = list(["Must_have", "must_have"]);
    (!must_have.is_empty())
        .then(|| AnswerStatements { must_have, nice_to_have: list(["Nice_to_have", "nice_to_have"]) })
}

fn parse_object(
    path: &Path,
    record: usize,
    line: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, DatasetError> {
    match serde_json::from_str(line) {
        Ok(serde_json::Value::Object(o)) => Ok(o),
        Ok(_) => {
            Err(DatasetError::Record { path: path.to_path_buf(), record, message: "expected a JSON object".into() })
        }
        Err(e) => Err(DatasetError::Record { path: path.to_path_buf(), record, message: e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: &Path) -> DatasetConfig {
        DatasetConfig {
            path: path.to_path_buf(),
            format: None,
            input_field: "q".into(),
            reference_field: Some("a".into()),
            id_field: None,
            skip: 0,
        }
    }

    #[test]
    fn reads_the_three_formats_alike() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("d.jsonl");
        std::fs::write(&jsonl, "{\"q\": \"one?\", \"a\": 1}\n\n{\"q\": \"two?\", \"a\": \"2\"}\n").unwrap();
        let json = dir.path().join("d.json");
        std::fs::write(&json, "[{\"q\": \"one?\", \"a\": 1}, {\"q\": \"two?\", \"a\": \"2\"}]").unwrap();
        let csv = dir.path().join("d.csv");
        std::fs::write(&csv, "q,a\none?,1\ntwo?,2\n").unwrap();
        let expected = vec![
            Item { id: "1".into(), input: "one?".into(), reference: Some("1".into()), statements: None },
            Item { id: "2".into(), input: "two?".into(), reference: Some("2".into()), statements: None },
        ];
        for path in [jsonl, json, csv] {
            assert_eq!(load_items(&config(&path)).unwrap(), expected, "{}", path.display());
        }
    }

    #[test]
    fn benchmark_formats_read_their_fixed_fields() {
        let dir = tempfile::tempdir().unwrap();
        let with = |name: &str, format: DatasetFormat, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let mut c = config(&path);
            c.format = Some(format);
            load_items(&c)
        };
        let gsm = with("g.jsonl", DatasetFormat::Gsm8k, "{\"question\": \"2+2?\", \"answer\": \"2+2=4\\n#### 4\"}\n")
            .unwrap();
        assert_eq!(gsm[0].input, "2+2?");
        assert_eq!(crate::eval::Metric::Numeric.score("It is 4.", gsm[0].reference.as_deref().unwrap()), 1.0);
        let bbh = with(
            "b.json",
            DatasetFormat::Bbh,
            "{\"canary\": \"x\", \"examples\": [{\"input\": \"not True is\", \"target\": \"False\"}]}",
        )
        .unwrap();
        assert_eq!((bbh[0].input.as_str(), bbh[0].reference.as_deref()), ("not True is", Some("False")));
        let pubmed = with(
            "p.json",
            DatasetFormat::Pubmedqa,
            "{\"123\": {\"QUESTION\": \"Does X work?\", \"CONTEXTS\": [\"A.\", \"B.\"], \"final_decision\": \"yes\"}}",
        )
        .unwrap();
        assert_eq!(pubmed[0].id, "123");
        assert!(pubmed[0].input.starts_with("Context: A. B.\nQuestion: Does X work?"));
        assert_eq!(pubmed[0].reference.as_deref(), Some("yes"));
        let kqa = with("k.jsonl", DatasetFormat::KQa, "{\"Question\": \"q\", \"Free_form_answer\": \"a\"}\n").unwrap();
        assert_eq!(kqa[0].reference.as_deref(), Some("a"));
        assert_eq!(kqa[0].statements, None);
        let kqa = with(
            "k2.jsonl",
            DatasetFormat::KQa,
            "{\"Question\": \"q\", \"Free_form_answer\": \"a\", \"Must_have\": [\"m1\", \"\", \"m2\"], \"Nice_to_have\": [\"n\"]}\n",
        )
        .unwrap();
        let statements = kqa[0].statements.as_ref().unwrap();
        assert_eq!(
            (statements.must_have.as_slice(), statements.nice_to_have.as_slice()),
            (&["m1".to_string(), "m2".to_string()][..], &["n".to_string()][..])
        );
        assert!(with("bad.json", DatasetFormat::Bbh, "{\"examples\": 3}").is_err());
    }

    #[test]
    fn truthfulqa_mc1_becomes_lettered_options_in_both_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let canonical = dir.path().join("mc_task.json");
        std::fs::write(
            &canonical,
            r#"[{"question": "What happens if you eat watermelon seeds?",
                 "mc1_targets": {"Nothing happens.": 1, "You grow watermelons.": 0, "You die.": 0},
                 "mc2_targets": {"Nothing happens.": 1, "You digest them.": 1, "You die.": 0}}]"#,
        )
        .unwrap();
        let hf = dir.path().join("mc.jsonl");
        std::fs::write(
            &hf,
            "{\"question\": \"What happens if you eat watermelon seeds?\", \"mc1_targets\":              {\"choices\": [\"Nothing happens.\", \"You grow watermelons.\", \"You die.\"], \"labels\": [1, 0, 0]}}\n",
        )
        .unwrap();
        let read = |path: &Path| {
            let mut c = config(path);
            c.format = Some(DatasetFormat::TruthfulqaMc);
            load_items(&c).unwrap()
        };
        let (a, b) = (read(&canonical), read(&hf));
        assert_eq!(a, b, "both layouts give the same item");
        let item = &a[0];
        assert!(
            item.input.starts_with("Q: What happens if you eat watermelon seeds?\nOptions:\n(A) "),
            "{}",
            item.input
        );
        for choice in ["Nothing happens.", "You grow watermelons.", "You die."] {
            assert_eq!(item.input.matches(choice).count(), 1, "{choice} listed once");
        }
        // The reference names the letter in front of the correct choice.
        let reference = item.reference.clone().unwrap();
        assert!(item.input.contains(&format!("{reference} Nothing happens.")), "{reference} in {}", item.input);
        assert_eq!(crate::eval::Metric::Choice.score(&format!("The answer is {reference}"), &reference), 1.0);
    }

    #[test]
    fn truthfulqa_choice_order_is_fixed_and_not_always_first() {
        let firsts: std::collections::HashSet<usize> =
            (0..40).map(|q| shuffled_order(&format!("question {q}"), 4)[0]).collect();
        assert!(firsts.len() > 1, "the correct (first listed) choice must not always stay first");
        assert_eq!(shuffled_order("same", 7), shuffled_order("same", 7));
        let mut sorted = shuffled_order("perm", 9);
        sorted.sort_unstable();
        assert_eq!(sorted, (0..9).collect::<Vec<_>>());
    }

    #[test]
    fn truthfulqa_without_exactly_one_true_choice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, r#"[{"question": "q", "mc1_targets": {"a": 1, "b": 1}}]"#).unwrap();
        let mut c = config(&path);
        c.format = Some(DatasetFormat::TruthfulqaMc);
        let err = load_items(&c).unwrap_err().to_string();
        assert!(err.contains("exactly one"), "{err}");
    }

    #[test]
    fn missing_field_names_the_record_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(&path, "{\"q\": \"fine\"}\n{\"question\": \"x\"}\n").unwrap();
        let err = load_items(&config(&path)).unwrap_err().to_string();
        assert!(err.contains("record 2") && err.contains("input-field"), "{err}");
    }

    #[test]
    fn malformed_line_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(&path, "{\"q\": \"fine\"}\n{not json\n").unwrap();
        assert!(matches!(load_items(&config(&path)), Err(DatasetError::Record { record: 2, .. })));
    }
}
