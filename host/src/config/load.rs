//! Reading a run configuration: TOML parsing with file:line:column and key
//! path in every error, semantic validation, and the environment and flag
//! layers on top of the file.

use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::model::RunConfig;

/// Why a run configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the run configuration `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A syntax, type or value error at a known place in the file.
    #[error("{path}:{line}:{column}: {}{message}", key_prefix(key))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The key path, e.g. `plugins.rewriter.limits.memory-mib`; empty for syntax errors.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// An environment variable holds an invalid value.
    #[error("environment variable {var}={value:?}: {message}")]
    Environment {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        message: String,
    },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() { String::new() } else { format!("`{key}`: ") }
}

/// Settings from the environment and the command line that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `TECHNE_OUTPUT_DIR` / `--output-dir`.
    pub output_dir: Option<PathBuf>,
    /// `TECHNE_SEED` / `--seed`.
    pub seed: Option<u64>,
    /// `TECHNE_CONCURRENCY` / `--concurrency`.
    pub concurrency: Option<usize>,
    /// `TECHNE_LIMIT` / `--limit`.
    pub limit: Option<usize>,
    /// `TECHNE_CACHE_DIR` / `--cache-dir` (the compiled-component cache's root).
    pub cache_dir: Option<PathBuf>,
}

impl Overrides {
    /// The overrides set in the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// The overrides found through `lookup` (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        fn number<T: std::str::FromStr>(var: &'static str, value: Option<String>) -> Result<Option<T>, ConfigError> {
            value
                .map(|v| {
                    v.trim().parse::<T>().map_err(|_| ConfigError::Environment {
                        var,
                        value: v.clone(),
                        message: "expected a non-negative integer".into(),
                    })
                })
                .transpose()
        }
        Ok(Self {
            output_dir: lookup("TECHNE_OUTPUT_DIR").filter(|v| !v.is_empty()).map(PathBuf::from),
            seed: number("TECHNE_SEED", lookup("TECHNE_SEED"))?,
            concurrency: number("TECHNE_CONCURRENCY", lookup("TECHNE_CONCURRENCY"))?,
            limit: number("TECHNE_LIMIT", lookup("TECHNE_LIMIT"))?,
            cache_dir: lookup("TECHNE_CACHE_DIR").filter(|v| !v.is_empty()).map(PathBuf::from),
        })
    }

    /// `self` with every value that `over` sets replaced (flags over environment).
    pub fn then(self, over: Overrides) -> Overrides {
        Overrides {
            output_dir: over.output_dir.or(self.output_dir),
            seed: over.seed.or(self.seed),
            concurrency: over.concurrency.or(self.concurrency),
            limit: over.limit.or(self.limit),
            cache_dir: over.cache_dir.or(self.cache_dir),
        }
    }
}

/// Read, parse and validate a run configuration file, then apply `overrides`.
/// Relative paths in the file are resolved against the file's directory.
pub fn load_run_config(path: &Path, overrides: &Overrides) -> Result<RunConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    resolve_run_config(path, &text, overrides)
}

/// Parse and validate configuration `text` as if read from `path` (relative
/// paths resolve against `path`'s directory), then apply `overrides`.
pub fn resolve_run_config(path: &Path, text: &str, overrides: &Overrides) -> Result<RunConfig, ConfigError> {
    let mut config = parse_run_config(path, text)?;
    let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    resolve_paths(&mut config, base, path);
    read_param_files(&mut config, path, text)?;
    apply_overrides(&mut config, overrides);
    if config.run.concurrency == 0 {
        return Err(ConfigError::Environment {
            var: "TECHNE_CONCURRENCY",
            value: "0".into(),
            message: "concurrency must be at least 1".into(),
        });
    }
    Ok(config)
}

/// Parse and validate configuration `text` (from `path`, used in messages).
pub fn parse_run_config(path: &Path, text: &str) -> Result<RunConfig, ConfigError> {
    let at = |span: Option<std::ops::Range<usize>>, key: String, message: String| {
        let (line, column) = line_column(text, span.map(|s| s.start).unwrap_or(0));
        ConfigError::Invalid { path: path.to_path_buf(), line, column, key, message }
    };
    let deserializer =
        toml::de::Deserializer::parse(text).map_err(|e| at(e.span(), String::new(), e.message().to_string()))?;
    let config: RunConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = toml_key_path(e.path());
        let inner = e.into_inner();
        let span = inner.span().or_else(|| locate(text, &key));
        at(span, key, improve_message(inner.message()))
    })?;
    if let Err((key, message)) = super::model::validate(&config) {
        return Err(at(locate(text, &key), key, message));
    }
    Ok(config)
}

/// serde's messages, with the fix spelled out where serde leaves it implicit.
fn improve_message(message: &str) -> String {
    let message = message.trim();
    if message.starts_with("unknown variant") && message.contains("expected") {
        return format!("{message} (the `backend` key picks the model backend)");
    }
    if message.starts_with("unknown field") {
        return format!("{message}; remove it or fix its spelling");
    }
    message.to_string()
}

/// The dotted key path of a serde path (`plugins.a.limits.memory-mib`, `inputs[2]`).
fn toml_key_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } | serde_path_to_error::Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// The span of the value at a dotted key path (as far as it exists).
fn locate(text: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let root = DeTable::parse(text).ok()?;
    let mut span = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    for segment in split_key(key) {
        match segment {
            KeySegment::Name(name) => {
                let current = table.or(match value {
                    Some(DeValue::Table(t)) => Some(t),
                    _ => None,
                })?;
                let (k, v) = current.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
                span = Some(k.span());
                value = Some(v.get_ref());
                table = None;
            }
            KeySegment::Index(i) => {
                let Some(DeValue::Array(items)) = value else { return span };
                let item = items.get(i)?;
                span = Some(item.span());
                value = Some(item.get_ref());
            }
        }
    }
    span
}

enum KeySegment<'a> {
    Name(&'a str),
    Index(usize),
}

fn split_key(key: &str) -> Vec<KeySegment<'_>> {
    let mut out = Vec::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(bracket) = rest.find('[') {
            out.push(KeySegment::Name(&rest[..bracket]));
            rest = &rest[bracket..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(end) = stripped.find(']') else { break };
                if let Ok(i) = stripped[..end].parse() {
                    out.push(KeySegment::Index(i));
                }
                rest = &stripped[end + 1..];
            }
        } else {
            out.push(KeySegment::Name(rest));
        }
    }
    out
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

fn resolve_paths(config: &mut RunConfig, base: &Path, file: &Path) {
    config.base_dir = base.to_path_buf();
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    for plugin in config.plugins.values_mut() {
        resolve(&mut plugin.path);
        for file in plugin.param_files.values_mut() {
            resolve(file);
        }
    }
    if let Some(dataset) = &mut config.dataset {
        resolve(&mut dataset.path);
    }
    if let Some(dir) = &mut config.engine.cache_dir {
        resolve(dir);
    }
    let name =
        config.run.name.clone().unwrap_or_else(|| {
            file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into())
        });
    config.run.name = Some(name.clone());
    match &mut config.run.output_dir {
        Some(dir) => resolve(dir),
        None => config.run.output_dir = Some(base.join("runs").join(name)),
    }
}

/// Reads every `[plugins.NAME.param-files]` entry (paths already resolved)
/// into the plugin's `params` as text.
fn read_param_files(config: &mut RunConfig, path: &Path, text: &str) -> Result<(), ConfigError> {
    for (plugin_name, plugin) in config.plugins.iter_mut() {
        for (name, file) in &plugin.param_files {
            let key = format!("plugins.{plugin_name}.param-files.{name}");
            let at = |message: String| {
                let (line, column) = line_column(text, locate(text, &key).map(|s| s.start).unwrap_or(0));
                ConfigError::Invalid { path: path.to_path_buf(), line, column, key: key.clone(), message }
            };
            if plugin.params.contains_key(name) {
                return Err(at(format!(
                    "parameter `{name}` is set both here and in [plugins.{plugin_name}.params]: keep one of the two"
                )));
            }
            let contents = std::fs::read_to_string(file).map_err(|e| {
                at(format!("cannot read `{}` ({e}): give an existing text file, relative to this file", file.display()))
            })?;
            plugin.params.insert(name.clone(), super::model::ParamValue::Text(contents));
        }
    }
    Ok(())
}

fn apply_overrides(config: &mut RunConfig, overrides: &Overrides) {
    if let Some(dir) = &overrides.output_dir {
        config.run.output_dir = Some(dir.clone());
    }
    if let Some(seed) = overrides.seed {
        config.run.seed = seed;
    }
    if let Some(concurrency) = overrides.concurrency {
        config.run.concurrency = concurrency;
    }
    if let Some(limit) = overrides.limit {
        config.run.limit = Some(limit);
    }
    if let Some(dir) = &overrides.cache_dir {
        config.engine.cache_dir = Some(dir.join("components"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
inputs = ["What is 2 + 2?"]

[plugins.s]
path = "s.wasm"

[pipeline]
solver = "s"
"#;

    fn parse(text: &str) -> Result<RunConfig, ConfigError> {
        parse_run_config(Path::new("run.toml"), text)
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = parse("[run]\nseed = = 3\n").unwrap_err().to_string();
        assert!(err.starts_with("run.toml:2:"), "{err}");
    }

    #[test]
    fn unknown_key_names_path_and_place() {
        let text = "[run]\nseed = 1\ncolour = \"blue\"\n\n[pipeline]\n";
        let err = parse(text).unwrap_err();
        let ConfigError::Invalid { line, key, message, .. } = &err else { panic!("{err}") };
        assert_eq!(*line, 3, "{err}");
        assert!(key.starts_with("run"), "{err}");
        assert!(message.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_path() {
        let text = "[run]\nseed = \"forty-two\"\n\n[pipeline]\n";
        let err = parse(text).unwrap_err();
        let ConfigError::Invalid { line, column, key, .. } = &err else { panic!("{err}") };
        assert_eq!((*line, key.as_str()), (2, "run.seed"), "{err}");
        assert_eq!(*column, 8, "{err}");
    }

    #[test]
    fn nested_limit_type_error_points_at_value() {
        let text = "[pipeline]\n\n[plugins.p]\npath = \"p.wasm\"\n[plugins.p.limits]\nmemory-mib = \"lots\"\n";
        let err = parse(text).unwrap_err();
        let ConfigError::Invalid { line, key, .. } = &err else { panic!("{err}") };
        assert_eq!(*line, 6, "{err}");
        assert_eq!(key, "plugins.p.limits.memory-mib", "{err}");
    }

    #[test]
    fn key_paths_locate_array_items() {
        let text = "inputs = [\"a\",\n  \"b\"]\n";
        let span = locate(text, "inputs[1]").unwrap();
        assert_eq!(line_column(text, span.start), (2, 3));
    }

    #[test]
    fn dangling_reference_is_located() {
        let text = "inputs = [\"q\"]\n[pipeline]\nanswer-model = \"gpt\"\n";
        let err = parse(text).unwrap_err();
        let ConfigError::Invalid { line, key, message, .. } = &err else { panic!("{err}") };
        assert_eq!((*line, key.as_str()), (3, "pipeline.answer-model"), "{err}");
        assert!(message.contains("add a [models.gpt] table"), "{err}");
    }

    #[test]
    fn out_of_range_limit_is_located() {
        let text = format!("{MINIMAL}\n[plugins.s.limits]\nmemory-mib = 0\n");
        let err = parse(&text).unwrap_err();
        let ConfigError::Invalid { key, message, .. } = &err else { panic!("{err}") };
        assert_eq!(key, "plugins.s.limits.memory-mib", "{err}");
        assert!(message.contains("between 1 and"), "{err}");
    }

    #[test]
    fn param_files_become_text_parameters() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.json"), "{\"w\": [1, 2]}\n").unwrap();
        let config_path = dir.path().join("run.toml");
        let text = format!("{MINIMAL}\n[plugins.s.param-files]\nreward-model = \"model.json\"\n");
        let config = resolve_run_config(&config_path, &text, &Overrides::default()).unwrap();
        let value = &config.plugins["s"].params["reward-model"];
        assert_eq!(value.to_text(), "{\"w\": [1, 2]}\n");

        let missing = format!("{MINIMAL}\n[plugins.s.param-files]\nreward-model = \"absent.json\"\n");
        let err = resolve_run_config(&config_path, &missing, &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("plugins.s.param-files.reward-model") && err.contains("absent.json"), "{err}");

        let both = format!(
            "{MINIMAL}\n[plugins.s.params]\nreward-model = \"x\"\n[plugins.s.param-files]\nreward-model = \"model.json\"\n"
        );
        let err = resolve_run_config(&config_path, &both, &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("keep one of the two"), "{err}");
    }

    #[test]
    fn minimal_config_parses() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.inputs.len(), 1);
        assert_eq!(config.run.concurrency, 4);
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        let mut config = parse(MINIMAL).unwrap();
        let env = Overrides::from_lookup(|v| match v {
            "TECHNE_SEED" => Some("7".into()),
            "TECHNE_CONCURRENCY" => Some("2".into()),
            _ => None,
        })
        .unwrap();
        let flags = Overrides { seed: Some(9), ..Overrides::default() };
        apply_overrides(&mut config, &env.then(flags));
        assert_eq!(config.run.seed, 9);
        assert_eq!(config.run.concurrency, 2);
    }

    #[test]
    fn bad_environment_value_is_an_error() {
        let err = Overrides::from_lookup(|v| (v == "TECHNE_SEED").then(|| "x".to_string())).unwrap_err();
        assert!(err.to_string().contains("TECHNE_SEED"), "{err}");
    }
}
