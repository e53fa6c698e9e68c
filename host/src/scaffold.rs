//! `techne plugin new`: write a new, self-contained plugin project that
//! builds with `cargo build --target wasm32-wasip2 --release` and loads in
//! techne unchanged. The SDK and the WIT package are vendored into the
//! project's `sdk/`, so it builds anywhere, with no path back to techne.

use std::path::{Path, PathBuf};

use crate::sandbox::Role;

include!(concat!(env!("OUT_DIR"), "/embedded_plugin_files.rs"));

/// Why a plugin project could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not kebab-case.
    #[error(
        "plugin name `{0}` is invalid: use lowercase letters, digits and dashes, starting with a letter (e.g. `my-rewriter`)"
    )]
    InvalidName(String),
    /// The target directory already has files.
    #[error("`{0}` already exists and is not empty: choose another name or --dir")]
    NotEmpty(PathBuf),
    /// Writing failed.
    #[error("cannot write `{path}`: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Whether `name` is a valid plugin (and crate) name.
pub fn valid_plugin_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Create the project for plugin `name` of `role` in `dir`.
pub fn create_plugin(dir: &Path, name: &str, role: Role) -> Result<Vec<PathBuf>, ScaffoldError> {
    if !valid_plugin_name(name) {
        return Err(ScaffoldError::InvalidName(name.to_string()));
    }
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(ScaffoldError::NotEmpty(dir.to_path_buf()));
    }
    let crate_name = name.replace('-', "_");
    let fill = |text: &str| {
        text.replace("{{name}}", name).replace("{{crate_name}}", &crate_name).replace("{{role}}", role.interface())
    };
    let lib_template = format!("src/lib.rs.{}.tmpl", role.interface());
    let mut files: Vec<(String, String)> = Vec::new();
    for (template, contents) in TEMPLATE_FILES {
        let target = if *template == lib_template {
            "src/lib.rs".to_string()
        } else if template.starts_with("src/lib.rs.") {
            continue;
        } else {
            template.trim_end_matches(".tmpl").to_string()
        };
        files.push((target, fill(contents)));
    }
    for (path, contents) in SDK_FILES {
        files.push((path.to_string(), contents.to_string()));
    }
    let mut written = Vec::new();
    for (relative, contents) in files {
        let path = dir.join(&relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|source| ScaffoldError::Write { path: parent.to_path_buf(), source })?;
        }
        std::fs::write(&path, contents).map_err(|source| ScaffoldError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_plugin_name("my-rewriter2"));
        for bad in ["", "My", "2x", "a_b", "a-", "a--b", "a b"] {
            assert!(!valid_plugin_name(bad), "{bad}");
        }
    }

    #[test]
    fn writes_a_complete_project_for_each_role() {
        for role in Role::ALL {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("p");
            let files = create_plugin(&target, "my-plugin", role).unwrap();
            let lib = std::fs::read_to_string(target.join("src/lib.rs")).unwrap();
            assert!(!lib.contains("{{"), "unfilled placeholder in {role} template");
            let manifest = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
            assert!(manifest.contains("name = \"my-plugin\""));
            assert!(target.join("sdk/wit/techne-plugin.wit").is_file());
            assert!(target.join("sdk/src/lib.rs").is_file());
            assert!(files.len() > 6);
            assert!(matches!(create_plugin(&target, "my-plugin", role), Err(ScaffoldError::NotEmpty(_))));
        }
    }
}
