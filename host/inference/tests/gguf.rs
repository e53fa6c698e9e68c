//! GGUF reader and dequantisation tests on synthetic files.

use techne_inference::gguf::{GgufError, GgufFile, GgufWriter, MetaType, MetaValue};
use techne_inference::quant::{self, GgmlType};

fn sample() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.kv("general.architecture", MetaValue::String("llama".into()))
        .kv("u8", MetaValue::U8(7))
        .kv("i8", MetaValue::I8(-7))
        .kv("u16", MetaValue::U16(700))
        .kv("i16", MetaValue::I16(-700))
        .kv("u32", MetaValue::U32(70000))
        .kv("i32", MetaValue::I32(-70000))
        .kv("f32", MetaValue::F32(1.25))
        .kv("bool", MetaValue::Bool(true))
        .kv("u64", MetaValue::U64(1 << 40))
        .kv("i64", MetaValue::I64(-(1 << 40)))
        .kv("f64", MetaValue::F64(-2.5))
        .kv(
            "strings",
            MetaValue::Array(MetaType::String, vec![MetaValue::String("a".into()), MetaValue::String("b c".into())]),
        )
        .kv(
            "nested",
            MetaValue::Array(
                MetaType::Array,
                vec![MetaValue::Array(MetaType::I32, vec![MetaValue::I32(1), MetaValue::I32(-2)])],
            ),
        );
    w.tensor_f32("a", &[4, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    let mut q = vec![0u8; 18];
    q[..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
    for (j, b) in q[2..].iter_mut().enumerate() {
        *b = (j as u8) | (((j as u8) ^ 0xF) << 4);
    }
    w.tensor("b", &[32], GgmlType::Q4_0, q);
    w
}

#[test]
fn parses_all_metadata_types_and_tensors() {
    for version in [2, 3] {
        let mut w = sample();
        w.version = version;
        let f = GgufFile::from_bytes(w.to_bytes()).expect("parse");
        assert_eq!(f.version, version);
        assert_eq!(f.architecture().expect("arch"), "llama");
        assert_eq!(f.get("u8"), Some(&MetaValue::U8(7)));
        assert_eq!(f.get("i8"), Some(&MetaValue::I8(-7)));
        assert_eq!(f.get("u16"), Some(&MetaValue::U16(700)));
        assert_eq!(f.get("i16"), Some(&MetaValue::I16(-700)));
        assert_eq!(f.get_u64("u32").expect("u32"), 70000);
        assert_eq!(f.get("i32"), Some(&MetaValue::I32(-70000)));
        assert_eq!(f.get_f64("f32").expect("f32"), 1.25);
        assert_eq!(f.get_bool("bool").expect("bool"), Some(true));
        assert_eq!(f.get_u64("u64").expect("u64"), 1 << 40);
        assert_eq!(f.get("i64"), Some(&MetaValue::I64(-(1 << 40))));
        assert_eq!(f.get_f64("f64").expect("f64"), -2.5);
        assert_eq!(f.get_str_array("strings").expect("strings"), vec!["a", "b c"]);
        let nested = f.get("nested").and_then(|v| v.as_array()).expect("nested");
        assert_eq!(nested[0].as_array().map(|a| a.len()), Some(2));
        assert!(matches!(f.get_str("u8"), Err(GgufError::WrongType { .. })));
        assert!(matches!(f.get_str("absent"), Err(GgufError::MissingKey(_))));
        assert_eq!(f.alignment, 32);
        assert_eq!(f.data_offset % 32, 0);
        let a = f.require_tensor("a").expect("a");
        assert_eq!(a.dims, vec![4, 2]);
        assert_eq!(a.row_len(), 4);
        assert_eq!(a.n_rows(), 2);
        assert_eq!(f.dequantize(a).expect("deq"), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        let b = f.require_tensor("b").expect("b");
        assert_eq!(b.offset % 32, 0);
        let v = f.dequantize(b).expect("deq b");
        assert_eq!(v[3], -5.0);
        assert_eq!(v[16], 15.0 - 8.0);
        assert!(matches!(f.require_tensor("zzz"), Err(GgufError::MissingTensor(_))));
    }
}

#[test]
fn custom_alignment() {
    let mut w = sample();
    w.alignment = 64;
    w.kv("general.alignment", MetaValue::U32(64));
    let f = GgufFile::from_bytes(w.to_bytes()).expect("parse");
    assert_eq!(f.alignment, 64);
    assert_eq!(f.data_offset % 64, 0);
    let b = f.require_tensor("b").expect("b");
    assert_eq!(f.dequantize(b).expect("deq")[0], -8.0);
}

#[test]
fn opens_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, sample().to_bytes()).expect("write");
    let f = GgufFile::open(&path).expect("open");
    assert_eq!(f.tensors.len(), 2);
    assert!(matches!(GgufFile::open(dir.path().join("none.gguf")), Err(GgufError::Io { .. })));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let bytes = sample().to_bytes();
    for len in 0..bytes.len() {
        let r = GgufFile::from_bytes(bytes[..len].to_vec());
        assert!(r.is_err(), "prefix of {len} bytes parsed");
    }
}

#[test]
fn corrupt_inputs_are_errors_not_panics() {
    let bytes = sample().to_bytes();
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(matches!(GgufFile::from_bytes(bad), Err(GgufError::BadMagic(_))));
    let mut bad = bytes.clone();
    bad[4] = 9;
    assert!(matches!(GgufFile::from_bytes(bad), Err(GgufError::UnsupportedVersion(9))));
    // Huge counts.
    let mut bad = bytes.clone();
    bad[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(GgufFile::from_bytes(bad).is_err());
    let mut bad = bytes.clone();
    bad[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(GgufFile::from_bytes(bad).is_err());
    // Flip every byte of the header region one at a time: never a panic.
    for i in 0..bytes.len().min(2048) {
        for v in [0x00u8, 0xFF, 0x7F] {
            let mut bad = bytes.clone();
            bad[i] = v;
            let _ = GgufFile::from_bytes(bad);
        }
    }
    // A hostile array length.
    let mut w = GgufWriter::new();
    w.kv("x", MetaValue::Array(MetaType::U8, vec![MetaValue::U8(1)]));
    let mut b = w.to_bytes();
    // key "x": 8 len + 1, then type u32, then elem type u32, then count u64
    let count_at = 24 + 9 + 4 + 4;
    b[count_at..count_at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(GgufFile::from_bytes(b).is_err());
}

#[test]
fn dequantisation_matches_reference_fixture() {
    // Generated with the gguf Python package's reference dequantisers on
    // random blocks (3 blocks per type).
    let fixture = include_bytes!("fixtures/dequant_reference.bin");
    let mut pos = 0;
    let mut seen = 0;
    let rd = |p: &mut usize| {
        let v = u32::from_le_bytes([fixture[*p], fixture[*p + 1], fixture[*p + 2], fixture[*p + 3]]);
        *p += 4;
        v as usize
    };
    while pos < fixture.len() {
        let ty = GgmlType::from_u32(rd(&mut pos) as u32).expect("type");
        let n = rd(&mut pos);
        let nbytes = rd(&mut pos);
        let raw = &fixture[pos..pos + nbytes];
        pos += nbytes;
        let expected: Vec<f32> =
            fixture[pos..pos + 4 * n].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        pos += 4 * n;
        let got = quant::dequantize(ty, raw, n).expect("dequantize");
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!((g - e).abs() <= 1e-6 * e.abs().max(1e-3), "{ty} element {i}: got {g}, expected {e}");
        }
        seen += 1;
    }
    assert_eq!(seen, 10);
}
