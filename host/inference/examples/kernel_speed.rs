//! Measures techne's `BlockQuantMatMul` kernel alone (no ONNX Runtime) on the
//! matrix shapes of one SmolLM2-135M decode step, for 1 to 16 rows: the
//! microseconds per step's worth of products and the weight bytes read per
//! second. With `KERNEL_SHAPES=1` it also prints each shape's time on one
//! thread (the same matrix again and again, so cache-warm).
//!
//! `cargo run --release -p techne-inference --example kernel_speed -- [threads] [repetitions] [avx512|avx2|portable|best] [int8]`
//!
//! With `int8` the products round their activations to int8 blocks
//! (`BlockQuantShape::int8`, the accuracy-level-4 export).

use std::time::Instant;

use techne_inference::kernels::block_quant_matmul::{BlockQuantShape, Isa, MatMulError, matmul_on, pack};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|t| t.parse().ok()).unwrap_or(2).max(1);
    let reps: usize = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(50).max(1);
    let isa = match args.get(3).map(String::as_str) {
        Some("avx512") => Isa::Avx512,
        Some("avx2") => Isa::Avx2,
        Some("portable") => Isa::Portable,
        _ => Isa::best(),
    };
    let int8 = args.get(4).is_some_and(|a| a == "int8");
    if !isa.runs(&BlockQuantShape { int8, ..BlockQuantShape::new(32, 32, 4) }) {
        return Err(format!("{isa:?} does not run these products on this CPU").into());
    }
    // (K, N, bits, layers): q‖k‖v, o, gate‖up, down in each of 30 layers, and the 8-bit head.
    let shapes = [(576, 960, 4, 30), (576, 576, 4, 30), (576, 3072, 4, 30), (1536, 576, 4, 30), (576, 49152, 8, 1)];
    let mut seed = 1u64;
    let mut next = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    // One matrix per layer, as in the model (the same matrix 30 times would
    // stay in cache and flatter the kernel).
    let mut mats = Vec::new();
    for &(k, n, bits, count) in &shapes {
        let shape = BlockQuantShape { int8, ..BlockQuantShape::new(k, n, bits) };
        let max = if bits == 4 { 16 } else { 256 };
        let mut layers = Vec::new();
        for _ in 0..count {
            let codes: Vec<u8> = (0..n * k).map(|_| (next() % max) as u8).collect();
            let blocks = n * k / 32;
            let scales = vec![0.0078125f32; blocks];
            let offsets = vec![-0.0625f32; blocks];
            layers.push(pack(shape, &codes, &scales, &offsets)?);
        }
        mats.push((shape, layers));
    }
    println!("{isa:?}{}, {threads} threads, {reps} repetitions (median)", if int8 { ", int8 activations" } else { "" });
    println!("{:>5} {:>12} {:>10} {:>10}", "rows", "µs/step", "GB/s", "GMAC/s");
    for rows in [1usize, 2, 4, 8, 16] {
        let x: Vec<f32> = (0..rows * 1536).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let mut times = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            // Each thread runs its contiguous share of every product, in the
            // model's order, and the threads meet once per step: the
            // kernel's throughput without the per-product synchronisation.
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|th| {
                        let (mats, x) = (&mats, &x);
                        scope.spawn(move || -> Result<(), MatMulError> {
                            for layer in 0..30 {
                                for (shape, layers) in mats {
                                    let Some(packed) = layers.get(layer) else { continue };
                                    let mut y = vec![0f32; rows * shape.outputs()];
                                    matmul_on(isa, shape, packed, &x[..rows * shape.k], rows, &mut y, |items, f| {
                                        (items * th / threads..items * (th + 1) / threads).for_each(f);
                                        Ok::<(), MatMulError>(())
                                    })?;
                                }
                            }
                            Ok(())
                        })
                    })
                    .collect();
                handles.into_iter().try_for_each(|h| h.join().unwrap_or(Ok(())))
            })?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let t = times[times.len() / 2];
        let bytes: usize = mats.iter().flat_map(|(_, l)| l.iter().map(Vec::len)).sum();
        let macs: usize = mats.iter().map(|(s, l)| s.k * s.n * l.len() * rows).sum();
        println!("{rows:>5} {:>12.0} {:>10.1} {:>10.1}", t * 1e6, bytes as f64 / t / 1e9, macs as f64 / t / 1e9);
        if std::env::var_os("KERNEL_SHAPES").is_some() {
            for (shape, layers) in &mats {
                let packed = &layers[0];
                let mut y = vec![0f32; rows * shape.outputs()];
                let mut ts = Vec::new();
                for _ in 0..reps {
                    let t = Instant::now();
                    matmul_on(isa, shape, packed, &x[..rows * shape.k], rows, &mut y, |items, f| {
                        (0..items).for_each(f);
                        Ok::<(), MatMulError>(())
                    })?;
                    ts.push(t.elapsed().as_secs_f64());
                }
                ts.sort_by(f64::total_cmp);
                println!("      {:>5}×{:<6} {:>8.1} µs", shape.k, shape.n, ts[ts.len() / 2] * 1e6);
            }
        }
    }
    Ok(())
}
