//! Public datasets: the built-in catalog of canonical files ([`catalog`])
//! and `techne data fetch`, which downloads them ([`fetch`]).

pub mod catalog;
pub mod fetch;

pub use catalog::{CATALOG, CatalogDataset, CatalogFile, find};
pub use fetch::{FetchError, FetchOptions, FetchedFile, fetch};
