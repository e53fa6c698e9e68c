//! The model-call cache: every generation, scoring and embedding request is
//! stored under a content hash of the model's identity, the request
//! (messages or text, every sampling parameter, the seed and `n`) and the
//! calling plugin's sha256. A rerun with a warm cache makes no model calls;
//! `--cache-only` replays a run without any backend.
//!
//! Entries are JSON files `DIR/ab/abcdef….json`, written atomically
//! (temporary file + rename). A corrupt or unreadable entry is a miss,
//! never a crash.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::BackendError;

/// How the cache is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Read hits, call the backend on a miss and store the answer.
    ReadWrite,
    /// Read hits; a miss is an error and no backend is ever called.
    ReplayOnly,
}

/// The on-disk model-call cache.
#[derive(Debug)]
pub struct CallCache {
    dir: PathBuf,
    mode: CacheMode,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What a cache key is made of.
#[derive(Serialize)]
struct KeyParts<'a, R: Serialize> {
    format: u32,
    kind: &'a str,
    model: &'a str,
    caller: &'a str,
    request: &'a R,
}

impl CallCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>, mode: CacheMode) -> Self {
        Self { dir: dir.into(), mode, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    /// The default directory: `$TECHNE_CACHE_DIR/calls`, else
    /// `$XDG_CACHE_HOME/techne/calls`, else `~/.cache/techne/calls`.
    pub fn default_dir() -> Option<PathBuf> {
        crate::sandbox::engine::default_cache_dir().and_then(|d| d.parent().map(|p| p.join("calls")))
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Requests answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Requests not in the cache.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// The content hash of a request.
    pub fn key<R: Serialize>(kind: &str, model: &str, caller: &str, request: &R) -> String {
        let parts = KeyParts { format: 1, kind, model, caller, request };
        let bytes = serde_json::to_vec(&parts).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.json"))
    }

    /// The cached answer for `key`, if present and readable.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::warn!("model-call cache entry {key} is corrupt ({e}); treating it as a miss");
                None
            }
        }
    }

    /// Store an answer; failures are logged, never fatal.
    pub fn put<T: Serialize>(&self, key: &str, value: &T) {
        let path = self.path(key);
        let result = serde_json::to_vec(value).map_err(std::io::Error::other).and_then(|bytes| {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // Not fsynced: a torn entry after a crash is a miss, and the
            // call is simply made again.
            crate::sandbox::component_cache::write_replacing(&path, &bytes, false)
        });
        if let Err(e) = result {
            tracing::warn!("cannot write the model-call cache entry {}: {e}", path.display());
        }
    }

    /// Answer from the cache, or run `call` and remember its answer.
    pub async fn get_or_call<T, F>(&self, key: String, call: F) -> Result<T, BackendError>
    where
        T: Serialize + DeserializeOwned,
        F: std::future::Future<Output = Result<T, BackendError>>,
    {
        if let Some(value) = self.get::<T>(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(value);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        if self.mode == CacheMode::ReplayOnly {
            return Err(BackendError::Failed(format!(
                "request {key} is not in the model-call cache and --cache-only forbids calling the model; \
                 run once without --cache-only to fill the cache"
            )));
        }
        let value = call.await?;
        self.put(&key, &value);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hit_miss_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CallCache::new(dir.path(), CacheMode::ReadWrite);
        let key = CallCache::key("generate", "m", "plugin", &("hello", 1));
        let first: String = cache.get_or_call(key.clone(), async { Ok("answer".to_string()) }).await.unwrap();
        assert_eq!(first, "answer");
        let second: String = cache
            .get_or_call(key.clone(), async { Err(BackendError::Failed("must not be called".into())) })
            .await
            .unwrap();
        assert_eq!(second, "answer");
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
        std::fs::write(cache.path(&key), b"{torn").unwrap();
        let third: String = cache.get_or_call(key.clone(), async { Ok("fresh".to_string()) }).await.unwrap();
        assert_eq!(third, "fresh");
        let replay = CallCache::new(dir.path(), CacheMode::ReplayOnly);
        let other = CallCache::key("generate", "m", "plugin", &("other", 1));
        let miss = replay.get_or_call::<String, _>(other, async { Ok("x".to_string()) }).await.unwrap_err();
        assert!(miss.to_string().contains("--cache-only"), "{miss}");
    }

    #[test]
    fn keys_separate_every_part() {
        let base = CallCache::key("generate", "m", "p", &("q", 1u64));
        assert_ne!(base, CallCache::key("score", "m", "p", &("q", 1u64)));
        assert_ne!(base, CallCache::key("generate", "m2", "p", &("q", 1u64)));
        assert_ne!(base, CallCache::key("generate", "m", "p2", &("q", 1u64)));
        assert_ne!(base, CallCache::key("generate", "m", "p", &("q", 2u64)));
        assert_eq!(base, CallCache::key("generate", "m", "p", &("q", 1u64)));
    }
}
