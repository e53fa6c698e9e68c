//! The run journal: an append-only file of finished items, one JSON line
//! each, flushed to disk (fsync) as each item finishes, so that a run killed
//! at any point loses no finished item. A torn last line (the process died
//! mid-write) is dropped when the journal is reopened.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::output::ItemResult;

/// The journal of one run directory.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Open (or create) the journal at `path`; returns it with the items it
    /// already holds, by [`ItemResult::key`]. A torn last line is cut off the file.
    pub fn open(path: &Path) -> std::io::Result<(Self, BTreeMap<String, ItemResult>)> {
        let mut finished = BTreeMap::new();
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut good_len = 0usize;
        let mut offset = 0usize;
        for line in text.split_inclusive(|&b| b == b'\n') {
            offset += line.len();
            if !line.ends_with(b"\n") {
                tracing::warn!("{}: dropping a torn last line ({} bytes)", path.display(), line.len());
                break;
            }
            match serde_json::from_slice::<ItemResult>(line) {
                Ok(result) => {
                    finished.insert(result.key(), result);
                    good_len = offset;
                }
                Err(e) => {
                    tracing::warn!("{}: dropping an unreadable line and what follows it ({e})", path.display());
                    break;
                }
            }
        }
        let file = OpenOptions::new().create(true).read(true).append(true).open(path)?;
        if good_len < text.len() {
            file.set_len(good_len as u64)?;
            file.sync_data()?;
        }
        Ok((Self { path: path.to_path_buf(), file: Mutex::new(file) }, finished))
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append a finished item and flush it to disk.
    pub fn record(&self, result: &ItemResult) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(result).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        file.write_all(&line)?;
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str) -> ItemResult {
        ItemResult::new(
            "pipeline",
            &super::super::dataset::Item { id: id.into(), input: format!("q{id}"), reference: None, statements: None },
        )
    }

    #[test]
    fn records_survive_reopening_and_a_torn_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (journal, finished) = Journal::open(&path).unwrap();
        assert!(finished.is_empty());
        journal.record(&result("a")).unwrap();
        journal.record(&result("b")).unwrap();
        drop(journal);
        // A crash in the middle of writing the third line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\":\"c\",\"inp").unwrap();
        drop(f);
        let (journal, finished) = Journal::open(&path).unwrap();
        assert_eq!(finished.values().map(|r| r.id.clone()).collect::<Vec<_>>(), ["a", "b"]);
        journal.record(&result("c")).unwrap();
        let (_, finished) = Journal::open(&path).unwrap();
        assert_eq!(finished.values().map(|r| r.id.clone()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(std::fs::read_to_string(&path).unwrap().lines().all(|l| l.starts_with('{') && l.ends_with('}')));
    }
}
