//! Prints the embedding of each argument as JSON (first 8 values and the norm).
//!
//! `cargo run -p techne-inference --example embed -- "some text" "more text"`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let texts: Vec<String> = std::env::args().skip(1).collect();
    let rt = techne_inference::Runtime::load(None)?;
    let e = techne_inference::Embedder::load_default(&rt, 0)?;
    for (t, v) in texts.iter().zip(e.embed(&texts)?) {
        println!("{t:?}: {:?}", &v[..8]);
    }
    Ok(())
}
