//! `techne data …`: the catalog of public datasets and their download.

use std::path::PathBuf;

use clap::Subcommand;

use super::{Failure, exit_codes};
use crate::data::{CATALOG, FetchError, FetchOptions};

/// `techne data …`.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// List the datasets `techne data fetch` knows.
    List,
    /// Download a dataset's canonical files (resumable; checked against pinned sha256s).
    Fetch {
        /// The dataset (`techne data list`).
        name: String,
        /// Where the dataset's directory goes (files land in DIR/NAME/).
        #[arg(long, default_value = "datasets")]
        dir: PathBuf,
        /// A mirror with the upstream file layout, instead of the canonical URL.
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
    },
}

/// Run a `techne data` command.
pub(crate) async fn data(command: DataCommand) -> Result<i32, Failure> {
    match command {
        DataCommand::List => {
            for dataset in CATALOG {
                println!("{:<16} format {:<14} {}", dataset.name, dataset.format, dataset.description);
                println!("{:<16} {} ({} files)", "", dataset.source, dataset.files.len());
            }
            Ok(exit_codes::SUCCESS)
        }
        DataCommand::Fetch { name, dir, base_url } => {
            let options = FetchOptions { dir, base_url, ..FetchOptions::default() };
            let files = crate::data::fetch(&name, &options).await.map_err(|e| {
                let code = match e {
                    FetchError::UnknownDataset { .. } => exit_codes::USAGE,
                    _ => exit_codes::IO,
                };
                Failure::new(code, e)
            })?;
            for file in &files {
                let state = if file.downloaded { "downloaded" } else { "already there" };
                println!("{state:<14} {} ({} bytes, sha256 {})", file.path.display(), file.bytes, file.sha256);
            }
            if let Some(dataset) = crate::data::find(&name) {
                println!("source and license: {}", options.dir.join(dataset.name).join("SOURCE.md").display());
                println!("read it with [dataset] format = \"{}\"", dataset.format);
            }
            Ok(exit_codes::SUCCESS)
        }
    }
}
