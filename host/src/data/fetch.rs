//! Downloading a catalog dataset: every file into `DIR/NAME/`, resumable
//! and atomic. A file streams into `FILE.part`; an interrupted download
//! continues from the part's length with an HTTP range request (a server
//! that ignores the range sends the whole file, which then replaces the
//! part). The finished part is checked against the catalog's sha256 and only
//! then renamed into place, so a file under its final name is always
//! complete and verified. A file already in place with the right checksum is
//! not downloaded again. `SOURCE.md` beside the files records the source,
//! license, URLs and checksums.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;

use super::catalog::{CATALOG, CatalogDataset, CatalogFile};

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The directory the dataset's directory goes into (files land in `dir/NAME/`).
    pub dir: PathBuf,
    /// A mirror to use instead of the catalog's base URL (same file layout).
    pub base_url: Option<String>,
    /// Give up on a connection that sends nothing for this long.
    pub read_timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self { dir: PathBuf::from("datasets"), base_url: None, read_timeout: Duration::from_secs(60) }
    }
}

/// One file after a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its sha256.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// False when it was already in place and verified.
    pub downloaded: bool,
}

/// Why a dataset could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The name is not in the catalog.
    #[error("no dataset named `{name}` in the catalog; known: {known} (`techne data list` describes them)")]
    UnknownDataset {
        /// The name asked for.
        name: String,
        /// The catalog's names.
        known: String,
    },
    /// The server has no such file.
    #[error("{url}: not found (HTTP 404); if you gave --base-url, check that the mirror has the upstream layout")]
    NotFound {
        /// The URL.
        url: String,
    },
    /// The server answered with another error status.
    #[error("{url}: the server answered HTTP {status}; try again later or use a mirror with --base-url")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The connection failed or broke off.
    #[error(
        "{url}: {message}; run the same command again to continue the download (no network here? copy the files \
         into the directory by hand)"
    )]
    Network {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The file's content is not what the catalog pins.
    #[error(
        "{url}: sha256 {actual} does not match the catalog's {expected}; the file was not kept. The mirror or \
         upstream serves other content: use the canonical source, or check the mirror"
    )]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// The catalog's sha256.
        expected: String,
        /// The downloaded file's sha256.
        actual: String,
    },
    /// A local file could not be read or written.
    #[error("cannot write `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Download every file of catalog dataset `name` into `options.dir/name/`.
pub async fn fetch(name: &str, options: &FetchOptions) -> Result<Vec<FetchedFile>, FetchError> {
    let dataset = super::catalog::find(name).ok_or_else(|| FetchError::UnknownDataset {
        name: name.to_string(),
        known: CATALOG.iter().map(|d| d.name).collect::<Vec<_>>().join(", "),
    })?;
    let target = options.dir.join(dataset.name);
    std::fs::create_dir_all(&target).map_err(io(&target))?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(options.read_timeout)
        .user_agent(concat!("techne/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| FetchError::Network { url: dataset.base_url.to_string(), message: e.to_string() })?;
    let base = options.base_url.as_deref().unwrap_or(dataset.base_url).trim_end_matches('/');
    let mut fetched = Vec::new();
    for file in dataset.files {
        let url = format!("{base}/{}", file.remote);
        fetched.push(fetch_file(&client, &url, file, &target.join(file.local)).await?);
    }
    write_source_note(dataset, base, &fetched, &target.join("SOURCE.md"))?;
    Ok(fetched)
}

async fn fetch_file(
    client: &reqwest::Client,
    url: &str,
    file: &CatalogFile,
    path: &Path,
) -> Result<FetchedFile, FetchError> {
    if path.is_file() {
        let (sha256, bytes) = hash_file(path)?;
        if file.sha256.is_none_or(|expected| expected == sha256) {
            return Ok(FetchedFile { path: path.to_path_buf(), sha256, bytes, downloaded: false });
        }
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let part = part_path(path);
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let mut request = client.get(url);
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let network = |e: reqwest::Error| FetchError::Network { url: url.to_string(), message: describe(&e) };
    let mut response = request.send().await.map_err(network)?;
    let status = response.status();
    let append = match status.as_u16() {
        206 if have > 0 => true,
        200..=299 => false,
        // The part already holds the whole file.
        416 if have > 0 => return finish(url, file, &part, path),
        404 => return Err(FetchError::NotFound { url: url.to_string() }),
        other => return Err(FetchError::Status { url: url.to_string(), status: other }),
    };
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&part)
        .map_err(io(&part))?;
    while let Some(chunk) = response.chunk().await.map_err(network)? {
        out.write_all(&chunk).map_err(io(&part))?;
    }
    out.sync_all().map_err(io(&part))?;
    drop(out);
    finish(url, file, &part, path)
}

/// Check the complete part against the pin and move it into place.
fn finish(url: &str, file: &CatalogFile, part: &Path, path: &Path) -> Result<FetchedFile, FetchError> {
    let (sha256, bytes) = hash_file(part)?;
    if let Some(expected) = file.sha256
        && expected != sha256
    {
        // Neither keep nor resume bad bytes.
        let _ = std::fs::remove_file(part);
        return Err(FetchError::ChecksumMismatch { url: url.to_string(), expected: expected.into(), actual: sha256 });
    }
    std::fs::rename(part, path).map_err(io(path))?;
    Ok(FetchedFile { path: path.to_path_buf(), sha256, bytes, downloaded: true })
}

fn write_source_note(
    dataset: &CatalogDataset,
    base: &str,
    files: &[FetchedFile],
    path: &Path,
) -> Result<(), FetchError> {
    let mut note = format!(
        "# {}\n\n{}\n\n- Source: {}\n- License: {}\n- Downloaded from: {base}\n- Read with: `[dataset] format = \"{}\"`\n\n\
         | file | bytes | sha256 | url |\n| --- | --- | --- | --- |\n",
        dataset.name, dataset.description, dataset.source, dataset.license, dataset.format
    );
    for (file, fetched) in dataset.files.iter().zip(files) {
        note.push_str(&format!(
            "| {} | {} | `{}` | {base}/{} |\n",
            file.local, fetched.bytes, fetched.sha256, file.remote
        ));
    }
    crate::sandbox::component_cache::write_atomically(path, note.as_bytes()).map_err(io(path))
}

fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    path.with_file_name(name)
}

fn hash_file(path: &Path) -> Result<(String, u64), FetchError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = sha2::Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher).map_err(io(path))?;
    Ok((hex::encode(hasher.finalize()), bytes))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + use<> {
    let path = path.to_path_buf();
    move |source| FetchError::Io { path, source }
}

/// The error with its causes (reqwest's own message is often just "error sending request").
fn describe(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_files_sit_beside_their_target() {
        assert_eq!(part_path(Path::new("d/gsm8k/test.jsonl")), PathBuf::from("d/gsm8k/test.jsonl.part"));
    }

    #[tokio::test]
    async fn unknown_names_list_the_catalog() {
        let err = fetch("nope", &FetchOptions::default()).await.unwrap_err().to_string();
        assert!(err.contains("gsm8k") && err.contains("truthfulqa-mc"), "{err}");
    }
}
