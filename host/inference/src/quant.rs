//! ggml tensor types and their dequantisation.
//!
//! Every quantised type handled here is decoded into one *affine block*
//! form: each group of `group` consecutive elements of a row has an unsigned
//! integer code per element, a scale and an optional offset, and
//! `x = scale * (code - zero_point) + min`. Dequantisation evaluates that
//! formula in the same order as ggml does, so it is bit-exact with ggml's
//! reference `dequantize_row_*`; the ONNX exporter reuses the same codes,
//! scales and mins to build `MatMulNBits` weights without requantising.

use half::{bf16, f16};

/// Errors raised while decoding tensor data.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// The type cannot be dequantised by this crate.
    #[error("{0} cannot be dequantised (not implemented)")]
    Unsupported(GgmlType),
    /// The byte length does not match the element count.
    #[error("{ty} data has {got} bytes, expected {expected} for {n} elements")]
    Length {
        /// The type.
        ty: GgmlType,
        /// The bytes given.
        got: usize,
        /// The bytes needed.
        expected: usize,
        /// The element count.
        n: usize,
    },
    /// The element count is not a whole number of blocks.
    #[error("{n} elements is not a multiple of the {ty} block size {block}")]
    Partial {
        /// The type.
        ty: GgmlType,
        /// The element count.
        n: usize,
        /// The block size.
        block: usize,
    },
}

macro_rules! ggml_types {
    ($( $(#[$doc:meta])* $name:ident = $id:literal, $block:literal, $size:literal; )*) => {
        /// A ggml tensor element type, with its numeric id in GGUF files.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum GgmlType {
            $( $(#[$doc])* $name, )*
        }

        impl GgmlType {
            /// Decodes a GGUF type id.
            pub fn from_u32(v: u32) -> Option<Self> {
                match v { $( $id => Some(Self::$name), )* _ => None }
            }
            /// The GGUF type id.
            pub fn to_u32(self) -> u32 {
                match self { $( Self::$name => $id, )* }
            }
            /// Elements per block.
            pub fn block_size(self) -> usize {
                match self { $( Self::$name => $block, )* }
            }
            /// Bytes per block.
            pub fn type_size(self) -> usize {
                match self { $( Self::$name => $size, )* }
            }
            /// The ggml name, e.g. `Q4_1`.
            pub fn name(self) -> &'static str {
                match self { $( Self::$name => stringify!($name), )* }
            }
        }
    };
}

ggml_types! {
    /// 32-bit float.
    F32 = 0, 1, 4;
    /// 16-bit IEEE float.
    F16 = 1, 1, 2;
    /// 4-bit, block of 32, scale only.
    Q4_0 = 2, 32, 18;
    /// 4-bit, block of 32, scale and min.
    Q4_1 = 3, 32, 20;
    /// 5-bit, block of 32, scale only.
    Q5_0 = 6, 32, 22;
    /// 5-bit, block of 32, scale and min.
    Q5_1 = 7, 32, 24;
    /// 8-bit, block of 32, scale only.
    Q8_0 = 8, 32, 34;
    /// 8-bit, block of 32, scale and sum.
    Q8_1 = 9, 32, 36;
    /// 2-bit k-quant.
    Q2_K = 10, 256, 84;
    /// 3-bit k-quant.
    Q3_K = 11, 256, 110;
    /// 4-bit k-quant.
    Q4_K = 12, 256, 144;
    /// 5-bit k-quant.
    Q5_K = 13, 256, 176;
    /// 6-bit k-quant.
    Q6_K = 14, 256, 210;
    /// 8-bit k-quant (intermediate type).
    Q8_K = 15, 256, 292;
    /// i-quant 2.06 bpw.
    IQ2_XXS = 16, 256, 66;
    /// i-quant 2.31 bpw.
    IQ2_XS = 17, 256, 74;
    /// i-quant 3.06 bpw.
    IQ3_XXS = 18, 256, 98;
    /// i-quant 1.56 bpw.
    IQ1_S = 19, 256, 50;
    /// 4-bit non-linear.
    IQ4_NL = 20, 32, 18;
    /// i-quant 3.44 bpw.
    IQ3_S = 21, 256, 110;
    /// i-quant 2.5 bpw.
    IQ2_S = 22, 256, 82;
    /// 4-bit non-linear, super-blocks.
    IQ4_XS = 23, 256, 136;
    /// 8-bit integer.
    I8 = 24, 1, 1;
    /// 16-bit integer.
    I16 = 25, 1, 2;
    /// 32-bit integer.
    I32 = 26, 1, 4;
    /// 64-bit integer.
    I64 = 27, 1, 8;
    /// 64-bit float.
    F64 = 28, 1, 8;
    /// i-quant 1.75 bpw.
    IQ1_M = 29, 256, 56;
    /// bfloat16.
    BF16 = 30, 1, 2;
    /// ternary 1.69 bpw.
    TQ1_0 = 34, 256, 54;
    /// ternary 2.06 bpw.
    TQ2_0 = 35, 256, 66;
    /// MX 4-bit float.
    MXFP4 = 39, 32, 17;
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The affine-block description of a quantised type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffineFormat {
    /// Bits needed for a code (4 or 8).
    pub bits: u8,
    /// Elements sharing one scale (and min).
    pub group: usize,
    /// The zero point subtracted from every code.
    pub zero_point: u8,
    /// Whether groups carry an additive min.
    pub has_min: bool,
}

impl GgmlType {
    /// The affine-block form of this type, or `None` for float and
    /// unsupported types.
    pub fn affine_format(self) -> Option<AffineFormat> {
        let f = |bits, group, zero_point, has_min| Some(AffineFormat { bits, group, zero_point, has_min });
        match self {
            Self::Q4_0 => f(4, 32, 8, false),
            Self::Q4_1 => f(4, 32, 0, true),
            Self::Q5_0 => f(8, 32, 128, false),
            Self::Q5_1 => f(8, 32, 0, true),
            Self::Q8_0 => f(8, 32, 128, false),
            Self::Q2_K => f(4, 16, 0, true),
            Self::Q3_K => f(4, 16, 8, false),
            Self::Q4_K => f(4, 32, 0, true),
            Self::Q5_K => f(8, 32, 0, true),
            Self::Q6_K => f(8, 16, 128, false),
            _ => None,
        }
    }

    /// Whether [`dequantize`] supports this type.
    pub fn can_dequantize(self) -> bool {
        matches!(self, Self::F32 | Self::F16 | Self::BF16 | Self::F64 | Self::Q8_1 | Self::Q8_K)
            || self.affine_format().is_some()
    }

    /// Bytes needed for `n` elements, if `n` is a whole number of blocks.
    pub fn bytes_for(self, n: usize) -> Result<usize, QuantError> {
        let block = self.block_size();
        if !n.is_multiple_of(block) {
            return Err(QuantError::Partial { ty: self, n, block });
        }
        Ok(n / block * self.type_size())
    }
}

/// Codes, scales and mins of a run of affine blocks (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct AffineBlocks {
    /// The format.
    pub format: AffineFormat,
    /// One unsigned code per element, in element order.
    pub codes: Vec<u8>,
    /// One scale per group.
    pub scales: Vec<f32>,
    /// One min per group (empty when the format has none).
    pub mins: Vec<f32>,
}

impl AffineBlocks {
    /// Evaluates every element (`scale * (code - zp) + min`).
    pub fn to_f32(&self) -> Vec<f32> {
        let g = self.format.group;
        let zp = i32::from(self.format.zero_point);
        let mut out = Vec::with_capacity(self.codes.len());
        for (i, chunk) in self.codes.chunks(g).enumerate() {
            let s = self.scales[i];
            if self.format.has_min {
                let m = self.mins[i];
                out.extend(chunk.iter().map(|&c| s * (i32::from(c) - zp) as f32 + m));
            } else {
                out.extend(chunk.iter().map(|&c| s * (i32::from(c) - zp) as f32));
            }
        }
        out
    }
}

#[inline]
fn h(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Q4_K / Q5_K 6-bit scale and min unpacking (`get_scale_min_k4`).
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Decodes one ggml block into codes (`block_size` entries), scales and mins
/// (`block_size / group` entries each).
fn decode_block(ty: GgmlType, b: &[u8], codes: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (qs, hdr) = if ty == GgmlType::Q4_0 { (&b[2..18], 2) } else { (&b[4..20], 4) };
            scales[0] = h(b, 0);
            if hdr == 4 {
                mins[0] = h(b, 2);
            }
            for j in 0..16 {
                codes[j] = qs[j] & 0xF;
                codes[j + 16] = qs[j] >> 4;
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let off = if ty == GgmlType::Q5_0 { 2 } else { 4 };
            scales[0] = h(b, 0);
            if off == 4 {
                mins[0] = h(b, 2);
            }
            let qh = u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]);
            let qs = &b[off + 4..off + 20];
            // Q5_0 codes are stored as q + 112 so that `code - 128 == q - 16`.
            let bias = if ty == GgmlType::Q5_0 { 112 } else { 0 };
            for j in 0..16 {
                let xh0 = (((qh >> j) << 4) & 0x10) as u8;
                let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
                codes[j] = ((qs[j] & 0xF) | xh0) + bias;
                codes[j + 16] = ((qs[j] >> 4) | xh1) + bias;
            }
        }
        GgmlType::Q8_0 => {
            scales[0] = h(b, 0);
            for j in 0..32 {
                codes[j] = b[2 + j] ^ 0x80; // int8 q -> q + 128
            }
        }
        GgmlType::Q2_K => {
            let sc = &b[0..16];
            let qs = &b[16..80];
            let d = h(b, 80);
            let dmin = h(b, 82);
            let mut is = 0;
            let mut y = 0;
            for n in 0..2 {
                let q = &qs[n * 32..n * 32 + 32];
                for j in 0..4 {
                    let shift = 2 * j;
                    for half in 0..2 {
                        let s = sc[is];
                        scales[is] = d * f32::from(s & 0xF);
                        mins[is] = -(dmin * f32::from(s >> 4));
                        is += 1;
                        for l in 0..16 {
                            codes[y] = (q[l + 16 * half] >> shift) & 3;
                            y += 1;
                        }
                    }
                }
            }
        }
        GgmlType::Q3_K => {
            let hm = &b[0..32];
            let qs = &b[32..96];
            let raw = &b[96..108];
            let d_all = h(b, 108);
            let mut aux = [0u32; 4];
            for (i, a) in aux.iter_mut().take(3).enumerate() {
                *a = u32::from_le_bytes([raw[4 * i], raw[4 * i + 1], raw[4 * i + 2], raw[4 * i + 3]]);
            }
            const KMASK1: u32 = 0x0303_0303;
            const KMASK2: u32 = 0x0f0f_0f0f;
            let tmp = aux[2];
            aux[2] = ((aux[0] >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4);
            aux[3] = ((aux[1] >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4);
            aux[0] = (aux[0] & KMASK2) | ((tmp & KMASK1) << 4);
            aux[1] = (aux[1] & KMASK2) | (((tmp >> 2) & KMASK1) << 4);
            let mut sc = [0i8; 16];
            for (i, a) in aux.iter().enumerate() {
                for (k, byte) in a.to_le_bytes().iter().enumerate() {
                    sc[4 * i + k] = *byte as i8;
                }
            }
            let mut is = 0;
            let mut y = 0;
            let mut m = 1u8;
            for n in 0..2 {
                let q = &qs[n * 32..n * 32 + 32];
                for j in 0..4 {
                    let shift = 2 * j;
                    for half in 0..2 {
                        scales[is] = d_all * f32::from(i16::from(sc[is]) - 32);
                        is += 1;
                        for l in 0..16 {
                            let idx = l + 16 * half;
                            let v = ((q[idx] >> shift) & 3) as i8 - if hm[idx] & m != 0 { 0 } else { 4 };
                            codes[y] = (v + 8) as u8;
                            y += 1;
                        }
                    }
                    m <<= 1;
                }
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let d = h(b, 0);
            let dmin = h(b, 2);
            let sc = &b[4..16];
            let (qh, ql) = if ty == GgmlType::Q5_K { (Some(&b[16..48]), &b[48..176]) } else { (None, &b[16..144]) };
            let mut y = 0;
            for j in 0..4 {
                for half in 0..2 {
                    let is = 2 * j + half;
                    let (s, m) = scale_min_k4(is, sc);
                    scales[is] = d * f32::from(s);
                    mins[is] = -(dmin * f32::from(m));
                    let q = &ql[32 * j..32 * j + 32];
                    for l in 0..32 {
                        let lo = if half == 0 { q[l] & 0xF } else { q[l] >> 4 };
                        let hi = match qh {
                            Some(qh) if qh[l] & (1u8 << (2 * j + half)) != 0 => 16,
                            _ => 0,
                        };
                        codes[y] = lo + hi;
                        y += 1;
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            let ql = &b[0..128];
            let qh = &b[128..192];
            let sc = &b[192..208];
            let d = h(b, 208);
            for (i, s) in sc.iter().enumerate() {
                scales[i] = d * f32::from(*s as i8);
            }
            for n in 0..2 {
                let ql = &ql[64 * n..64 * n + 64];
                let qh = &qh[32 * n..32 * n + 32];
                let y = &mut codes[128 * n..128 * n + 128];
                for l in 0..32 {
                    // codes are q + 96 so that `code - 128 == q - 32`.
                    y[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) + 96;
                    y[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) + 96;
                    y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) + 96;
                    y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) + 96;
                }
            }
        }
        _ => {}
    }
}

/// Decodes `n` elements of a quantised type into affine blocks.
pub fn to_affine(ty: GgmlType, data: &[u8], n: usize) -> Result<AffineBlocks, QuantError> {
    let format = ty.affine_format().ok_or(QuantError::Unsupported(ty))?;
    let expected = ty.bytes_for(n)?;
    if data.len() != expected {
        return Err(QuantError::Length { ty, got: data.len(), expected, n });
    }
    let bs = ty.block_size();
    let groups_per_block = bs / format.group;
    let n_groups = n / format.group;
    let mut codes = vec![0u8; n];
    let mut scales = vec![0f32; n_groups];
    let mut mins = if format.has_min { vec![0f32; n_groups] } else { Vec::new() };
    let mut scratch_mins = vec![0f32; groups_per_block];
    for (i, block) in data.chunks_exact(ty.type_size()).enumerate() {
        let c = &mut codes[i * bs..(i + 1) * bs];
        let s = &mut scales[i * groups_per_block..(i + 1) * groups_per_block];
        let m = if format.has_min {
            &mut mins[i * groups_per_block..(i + 1) * groups_per_block]
        } else {
            &mut scratch_mins[..]
        };
        decode_block(ty, block, c, s, m);
    }
    Ok(AffineBlocks { format, codes, scales, mins })
}

/// Dequantises `n` elements of type `ty` to `f32`.
pub fn dequantize(ty: GgmlType, data: &[u8], n: usize) -> Result<Vec<f32>, QuantError> {
    let expected = ty.bytes_for(n)?;
    if data.len() != expected {
        return Err(QuantError::Length { ty, got: data.len(), expected, n });
    }
    Ok(match ty {
        GgmlType::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        GgmlType::F16 => data.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        GgmlType::BF16 => data.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        GgmlType::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        GgmlType::Q8_1 => {
            let mut out = Vec::with_capacity(n);
            for b in data.chunks_exact(36) {
                let d = h(b, 0);
                out.extend(b[4..36].iter().map(|&q| f32::from(q as i8) * d));
            }
            out
        }
        GgmlType::Q8_K => {
            let mut out = Vec::with_capacity(n);
            for b in data.chunks_exact(292) {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                out.extend(b[4..260].iter().map(|&q| d * f32::from(q as i8)));
            }
            out
        }
        _ => to_affine(ty, data, n)?.to_f32(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16b(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_0_block() {
        let mut b = Vec::new();
        b.extend_from_slice(&f16b(0.5));
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let v = dequantize(GgmlType::Q4_0, &b, 32).expect("dequantize");
        for j in 0..16 {
            assert_eq!(v[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(v[j + 16], ((15 - j) as f32 - 8.0) * 0.5);
        }
    }

    #[test]
    fn q4_1_block() {
        let mut b = Vec::new();
        b.extend_from_slice(&f16b(0.25));
        b.extend_from_slice(&f16b(-1.0));
        for j in 0..16u8 {
            b.push(j | (3 << 4));
        }
        let v = dequantize(GgmlType::Q4_1, &b, 32).expect("dequantize");
        assert_eq!(v[5], 0.25 * 5.0 - 1.0);
        assert_eq!(v[20], 0.25 * 3.0 - 1.0);
    }

    #[test]
    fn q8_0_block() {
        let mut b = Vec::new();
        b.extend_from_slice(&f16b(2.0));
        for j in 0..32i8 {
            b.push((j - 16) as u8);
        }
        let v = dequantize(GgmlType::Q8_0, &b, 32).expect("dequantize");
        for (j, x) in v.iter().enumerate() {
            assert_eq!(*x, (j as f32 - 16.0) * 2.0);
        }
    }

    #[test]
    fn floats() {
        let b: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(dequantize(GgmlType::F32, &b, 2).expect("f32"), vec![1.5, -2.0]);
        let b: Vec<u8> = [f16b(1.5), f16b(-2.0)].concat();
        assert_eq!(dequantize(GgmlType::F16, &b, 2).expect("f16"), vec![1.5, -2.0]);
        let b: Vec<u8> = [bf16::from_f32(3.0).to_le_bytes(), bf16::from_f32(-0.5).to_le_bytes()].concat();
        assert_eq!(dequantize(GgmlType::BF16, &b, 2).expect("bf16"), vec![3.0, -0.5]);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        assert!(matches!(dequantize(GgmlType::Q4_0, &[0; 17], 32), Err(QuantError::Length { .. })));
        assert!(matches!(dequantize(GgmlType::Q4_0, &[0; 18], 31), Err(QuantError::Partial { .. })));
        assert!(matches!(dequantize(GgmlType::IQ2_XS, &[0; 74], 256), Err(QuantError::Unsupported(_))));
    }
}
