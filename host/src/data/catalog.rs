//! The datasets `techne data fetch` knows: where each file is published
//! (a pinned upstream commit where there is one), its sha256 when known, the
//! license and the dataset format to name in `[dataset]`.

/// One file of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogFile {
    /// Its path under the dataset's base URL.
    pub remote: &'static str,
    /// Where it goes under the dataset's directory.
    pub local: &'static str,
    /// Its sha256 (hex); `None` where upstream is not pinned to a commit.
    pub sha256: Option<&'static str>,
}

/// One dataset of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogDataset {
    /// The name given to `techne data fetch`.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// The upstream repository and revision.
    pub source: &'static str,
    /// The license.
    pub license: &'static str,
    /// The `format` to set in `[dataset]` for its files.
    pub format: &'static str,
    /// The URL the files' `remote` paths are relative to.
    pub base_url: &'static str,
    /// The files.
    pub files: &'static [CatalogFile],
}

/// The dataset named `name`.
pub fn find(name: &str) -> Option<&'static CatalogDataset> {
    CATALOG.iter().find(|d| d.name == name)
}

/// Every dataset, by name.
pub const CATALOG: &[CatalogDataset] = &[
    CatalogDataset {
        name: "gsm8k",
        description: "GSM8K grade-school math word problems (test 1,319, train 7,473); the answer follows `####`",
        source: "https://github.com/openai/grade-school-math at 3101c7d5072418e28b9008a6636bde82a006892c",
        license: "MIT (Copyright (c) 2021 OpenAI)",
        format: "gsm8k",
        base_url: "https://raw.githubusercontent.com/openai/grade-school-math/3101c7d5072418e28b9008a6636bde82a006892c",
        files: &[
            CatalogFile {
                remote: "grade_school_math/data/test.jsonl",
                local: "test.jsonl",
                sha256: Some("3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"),
            },
            CatalogFile {
                remote: "grade_school_math/data/train.jsonl",
                local: "train.jsonl",
                sha256: Some("17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"),
            },
        ],
    },
    CatalogDataset {
        name: "bbh",
        description: "BIG-Bench Hard: 27 task files (6,511 examples), `{\"examples\": [{input, target}]}`",
        source: "https://github.com/suzgunmirac/BIG-Bench-Hard at 9ee07bd481feebf959a6b59d61ea57bdcf30964d",
        license: "MIT (Copyright (c) 2022 suzgunmirac)",
        format: "bbh",
        base_url: "https://raw.githubusercontent.com/suzgunmirac/BIG-Bench-Hard/9ee07bd481feebf959a6b59d61ea57bdcf30964d",
        files: BBH_FILES,
    },
    CatalogDataset {
        name: "k-qa",
        description: "K-QA medical questions with physician answers and must-have/nice-to-have statements, \
                      and the upstream LLM-judge prompts",
        source: "https://github.com/Itaymanes/K-QA at ef403d012e199fcfa0d8c02b38a96ff95164f4d0",
        license: "MIT (Copyright (c) 2023 Itay Manes)",
        format: "k-qa",
        base_url: "https://raw.githubusercontent.com/Itaymanes/K-QA/ef403d012e199fcfa0d8c02b38a96ff95164f4d0",
        files: &[
            CatalogFile {
                remote: "dataset/questions_w_answers.jsonl",
                local: "questions_w_answers.jsonl",
                sha256: Some("1d4204665e2c9e50c3c348b8ad1de2ddf5d90205c3efaea0eb38135192272c6f"),
            },
            CatalogFile {
                remote: "evaluation/prompts/is_entails.txt",
                local: "is_entails.txt",
                sha256: Some("3fb4f55f5bbe4ad31046cb9956ba2ab5c786ba501835d141b690d712d2463eb3"),
            },
            CatalogFile {
                remote: "evaluation/prompts/is_contradict.txt",
                local: "is_contradict.txt",
                sha256: Some("97befde88ba48ffc0ea577c87945e47d78511174f79ddb585a62a6c9f13c40bd"),
            },
        ],
    },
    CatalogDataset {
        name: "pubmedqa",
        description: "PubMedQA expert-labelled set (1,000, yes/no/maybe) and the 500-question test ground truth",
        source: "https://github.com/pubmedqa/pubmedqa at 1cbae8e92f72f20c8d3747cbb3bf5bc53554d997",
        license: "MIT (Copyright (c) 2019 pubmedqa); the contexts are PubMed abstracts",
        format: "pubmedqa",
        base_url: "https://raw.githubusercontent.com/pubmedqa/pubmedqa/1cbae8e92f72f20c8d3747cbb3bf5bc53554d997",
        files: &[
            CatalogFile {
                remote: "data/ori_pqal.json",
                local: "ori_pqal.json",
                sha256: Some("8b3276be8942ebbd77f3ddcda12c1749bf0e490045a736fd8438ee40cf37a41d"),
            },
            CatalogFile {
                remote: "data/test_ground_truth.json",
                local: "test_ground_truth.json",
                sha256: Some("939fe566f09017d13b1ca64d2ddfee0bc2374b366048152997669cccedc44d51"),
            },
        ],
    },
    CatalogDataset {
        name: "truthfulqa-mc",
        description: "TruthfulQA multiple choice (817 questions, MC1/MC2 targets), the canonical mc_task.json",
        source: "https://github.com/sylinrl/TruthfulQA (branch main; not pinned, so no checksum)",
        license: "Apache-2.0",
        format: "truthfulqa-mc",
        base_url: "https://raw.githubusercontent.com/sylinrl/TruthfulQA/main",
        files: &[CatalogFile { remote: "data/mc_task.json", local: "mc_task.json", sha256: None }],
    },
    CatalogDataset {
        name: "self-evolution",
        description: "Self-Evolution's knowledge fragments (4,000) and evaluation QA (100), in Chinese \
                      (telecom/cloud operations); `AIOps_eval_data.json` rows are {instruction, input, output}",
        source: "https://github.com/Zero-Pointer/Self-Evolution at e0a0160bfbaccf535b6402b9282c091704abe33b",
        license: "MIT (Copyright (c) 2024 Pengtian Zhu); the fragments come from the 2024 CCF AIOps Challenge \
                  dataset: check its terms before redistributing",
        format: "json",
        base_url: "https://raw.githubusercontent.com/Zero-Pointer/Self-Evolution/e0a0160bfbaccf535b6402b9282c091704abe33b",
        files: &[
            CatalogFile {
                remote: "data/AIOps_data.json",
                local: "AIOps_data.json",
                sha256: Some("93c27c87a2ea38a56f786adcb51b9a98875cde24cbaa43ef751df6782ffd130b"),
            },
            CatalogFile {
                remote: "data/AIOps_eval_data.json",
                local: "AIOps_eval_data.json",
                sha256: Some("959a42db3e87d3a02a092783c4018f96bad2cb75e3567c598f8077f9b142a7eb"),
            },
        ],
    },
];

const BBH_FILES: &[CatalogFile] = &[
    CatalogFile {
        remote: "bbh/boolean_expressions.json",
        local: "boolean_expressions.json",
        sha256: Some("ea6c754ec005e2d3f2d085d349a740f593b5764f32ea4638ffed4cfc0061b12a"),
    },
    CatalogFile {
        remote: "bbh/causal_judgement.json",
        local: "causal_judgement.json",
        sha256: Some("6e8bca44dd402008ed41c07a3d0a1d5e7b03db7001a7e002fcdf4c60985ea081"),
    },
    CatalogFile {
        remote: "bbh/date_understanding.json",
        local: "date_understanding.json",
        sha256: Some("0148d4ac5fca05b2f82373e5fef7208e15363b9c6079493034d77b3dab496bf5"),
    },
    CatalogFile {
        remote: "bbh/disambiguation_qa.json",
        local: "disambiguation_qa.json",
        sha256: Some("cf06df9ebf911b883671cb1b35d3fbd1a1c306b19b9e9a012407e596c85fe8c6"),
    },
    CatalogFile {
        remote: "bbh/dyck_languages.json",
        local: "dyck_languages.json",
        sha256: Some("3f9badedf15c2be1ce53d94fdf016299bb30ba231ef087ab9f51a7ed6d0bdc25"),
    },
    CatalogFile {
        remote: "bbh/formal_fallacies.json",
        local: "formal_fallacies.json",
        sha256: Some("4c1adb664821157faade1d4153685403afcc02648f3c180a608a18f17f589629"),
    },
    CatalogFile {
        remote: "bbh/geometric_shapes.json",
        local: "geometric_shapes.json",
        sha256: Some("07be68a124420caa2ebc0b2c858ad79fc55c5c8806170e496e1e17ebfb11f31c"),
    },
    CatalogFile {
        remote: "bbh/hyperbaton.json",
        local: "hyperbaton.json",
        sha256: Some("b6d7f55c75f5d02f2987a4f3123802dfa093872089a56a334144aae8a7264fdc"),
    },
    CatalogFile {
        remote: "bbh/logical_deduction_five_objects.json",
        local: "logical_deduction_five_objects.json",
        sha256: Some("d2df31394b903b7f0e085d42a69572a092987856eac076799017d70ef266fa8f"),
    },
    CatalogFile {
        remote: "bbh/logical_deduction_seven_objects.json",
        local: "logical_deduction_seven_objects.json",
        sha256: Some("2896c7e3482eea318dd37bcc370d24ec3cc91e8374c1784287b5dbd38a529e33"),
    },
    CatalogFile {
        remote: "bbh/logical_deduction_three_objects.json",
        local: "logical_deduction_three_objects.json",
        sha256: Some("e590fae72e3a6041fbd23bd8ff6b74baf44ca563f6ba40a041c55e7b867c1681"),
    },
    CatalogFile {
        remote: "bbh/movie_recommendation.json",
        local: "movie_recommendation.json",
        sha256: Some("a8b53a87ee21a865b7248e694f388a9b8f7cf6b839b11d44796a2dd3fc088983"),
    },
    CatalogFile {
        remote: "bbh/multistep_arithmetic_two.json",
        local: "multistep_arithmetic_two.json",
        sha256: Some("c9d5a6433c9b78256422a15c78463949c8bec8d85607aa28b52d7234ad4a8595"),
    },
    CatalogFile {
        remote: "bbh/navigate.json",
        local: "navigate.json",
        sha256: Some("b7944dfd3c81da5c4815bd75b00d6fa3c64140823498e78ed496f4c3d36f7f0d"),
    },
    CatalogFile {
        remote: "bbh/object_counting.json",
        local: "object_counting.json",
        sha256: Some("8acef14dbbdd40d2326ef7755750b6b5fe919fef06276af1bab3f1c297f022ff"),
    },
    CatalogFile {
        remote: "bbh/penguins_in_a_table.json",
        local: "penguins_in_a_table.json",
        sha256: Some("bb87ee449698eee51215e025a453b1bcb2f5e6589c2063b2c79e68b8f0655228"),
    },
    CatalogFile {
        remote: "bbh/reasoning_about_colored_objects.json",
        local: "reasoning_about_colored_objects.json",
        sha256: Some("0a8850cf95166020fce7a78244026ceedd7ea839302471512b4f8744e85a6a49"),
    },
    CatalogFile {
        remote: "bbh/ruin_names.json",
        local: "ruin_names.json",
        sha256: Some("b6f723aef2bafdd4c7bfc3c7e0329c7e8a8279391a609969c8ed76c9319f5f7f"),
    },
    CatalogFile {
        remote: "bbh/salient_translation_error_detection.json",
        local: "salient_translation_error_detection.json",
        sha256: Some("becf3eb8dd53c821a555ecd5c1334ecd93eb25f980e63be963c518e7138de5da"),
    },
    CatalogFile {
        remote: "bbh/snarks.json",
        local: "snarks.json",
        sha256: Some("54a0661fe2de06167645a4965e6bcf963c4ba307e76262a7c750998b0e3d0d0e"),
    },
    CatalogFile {
        remote: "bbh/sports_understanding.json",
        local: "sports_understanding.json",
        sha256: Some("63ca262858f6176864515cd8cf53cdaa40839ebecc155b726d77930855d167bf"),
    },
    CatalogFile {
        remote: "bbh/temporal_sequences.json",
        local: "temporal_sequences.json",
        sha256: Some("92a1189faaa84aacc4c405aaa13f13f48c2992eb884772eedb622505252baef5"),
    },
    CatalogFile {
        remote: "bbh/tracking_shuffled_objects_five_objects.json",
        local: "tracking_shuffled_objects_five_objects.json",
        sha256: Some("2063a46a4fb484236ed4310523606543a3e1dd4a4dc34eda65d407910ece25a5"),
    },
    CatalogFile {
        remote: "bbh/tracking_shuffled_objects_seven_objects.json",
        local: "tracking_shuffled_objects_seven_objects.json",
        sha256: Some("b59fd05b850c37cf57cb514ae1e6975c00b1638ade2291722056b2af3c54084d"),
    },
    CatalogFile {
        remote: "bbh/tracking_shuffled_objects_three_objects.json",
        local: "tracking_shuffled_objects_three_objects.json",
        sha256: Some("546cc7bf10c6a01a6a4c17ae28a4966485f21f29fd5d111f37858ec78e354f6b"),
    },
    CatalogFile {
        remote: "bbh/web_of_lies.json",
        local: "web_of_lies.json",
        sha256: Some("3e60323f8514a107fdb4edf35f8832a9171c5a09c0eaa47823559de905e8ab8b"),
    },
    CatalogFile {
        remote: "bbh/word_sorting.json",
        local: "word_sorting.json",
        sha256: Some("2a6132d2c99f00d0d2eb1113ac6b4a918bd969d863c48749210d969713db8d43"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_pins_are_sha256_hex() {
        let mut names: Vec<&str> = CATALOG.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len());
        for dataset in CATALOG {
            assert!(!dataset.files.is_empty(), "{}", dataset.name);
            assert!(dataset.base_url.starts_with("https://") && !dataset.base_url.ends_with('/'));
            for file in dataset.files {
                if let Some(sha) = file.sha256 {
                    assert!(sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()), "{}", file.remote);
                }
                assert!(!file.local.contains("..") && !file.local.starts_with('/'), "{}", file.local);
            }
        }
        assert_eq!(find("bbh").map(|d| d.files.len()), Some(27));
        assert!(find("nope").is_none());
    }
}
