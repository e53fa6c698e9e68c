//! Exports a GGUF model to `<out>/model.onnx` and `<out>/tokenizer.json`.
//!
//! `cargo run -p techne-inference --example export -- <model.gguf> <out-dir>`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(src), Some(out)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: export <model.gguf> <out-dir>");
        std::process::exit(2);
    };
    let g = techne_inference::gguf::GgufFile::open(src)?;
    let t = std::time::Instant::now();
    let m = techne_inference::onnx_export::export_llama(&g, &Default::default())?;
    std::fs::create_dir_all(out)?;
    let files = m.save(&std::path::Path::new(out).join("model.onnx"))?;
    let tok = techne_inference::tokenizer::tokenizer_json_from_gguf(&g)?;
    std::fs::write(std::path::Path::new(out).join("tokenizer.json"), serde_json::to_vec(&tok.json)?)?;
    println!("wrote {files:?} in {:?}", t.elapsed());
    Ok(())
}
