//! A bounds-checked reader for GGUF (v2 and v3) model files.
//!
//! The reader parses the header, every metadata key/value (all scalar types,
//! strings and nested arrays), the tensor table, the alignment and the data
//! section. Tensor bytes are served from a memory map (or an owned buffer) and
//! can be dequantised to `f32` with [`GgufFile::dequantize`]. Every length,
//! count and offset read from the file is validated before it is used, so a
//! truncated or corrupt file yields a [`GgufError`], never a panic.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::quant::{self, GgmlType};

/// The four magic bytes at the start of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The most dimensions a GGUF tensor may have.
pub const MAX_DIMS: u32 = 4;

/// Errors raised while reading a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, read or mapped.
    #[error("cannot read GGUF file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the GGUF magic.
    #[error("not a GGUF file (magic bytes {0:02x?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    /// The GGUF version is not one this reader understands.
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    /// The file ends before a structure that it declares.
    #[error(
        "GGUF file is truncated: needed {needed} bytes at offset {offset} while reading {what}, but the file has {len} bytes"
    )]
    Truncated {
        /// What was being read.
        what: String,
        /// Where it starts.
        offset: u64,
        /// How many bytes it needed.
        needed: u64,
        /// The file length.
        len: u64,
    },
    /// A structural value in the file is invalid.
    #[error("corrupt GGUF file: {0}")]
    Corrupt(String),
    /// A metadata key is absent.
    #[error("GGUF metadata key `{0}` is missing")]
    MissingKey(String),
    /// A metadata key has an unexpected type.
    #[error("GGUF metadata key `{key}` has type {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// The expected type.
        expected: &'static str,
        /// The type found.
        found: String,
    },
    /// A tensor name is absent.
    #[error("GGUF tensor `{0}` is missing")]
    MissingTensor(String),
    /// A tensor uses a type the dequantiser does not support.
    #[error("tensor `{name}` has unsupported ggml type {ty}")]
    UnsupportedType {
        /// The tensor.
        name: String,
        /// The type, by name or number.
        ty: String,
    },
}

/// A result with a [`GgufError`].
pub type Result<T, E = GgufError> = std::result::Result<T, E>;

/// The type tag of a metadata value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaType {
    /// `u8`.
    U8,
    /// `i8`.
    I8,
    /// `u16`.
    U16,
    /// `i16`.
    I16,
    /// `u32`.
    U32,
    /// `i32`.
    I32,
    /// `f32`.
    F32,
    /// `bool` (one byte, 0 or 1).
    Bool,
    /// A length-prefixed UTF-8 string.
    String,
    /// A typed array.
    Array,
    /// `u64`.
    U64,
    /// `i64`.
    I64,
    /// `f64`.
    F64,
}

impl MetaType {
    /// Decodes the numeric tag used in the file.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::U8,
            1 => Self::I8,
            2 => Self::U16,
            3 => Self::I16,
            4 => Self::U32,
            5 => Self::I32,
            6 => Self::F32,
            7 => Self::Bool,
            8 => Self::String,
            9 => Self::Array,
            10 => Self::U64,
            11 => Self::I64,
            12 => Self::F64,
            _ => return None,
        })
    }

    /// The numeric tag used in the file.
    pub fn to_u32(self) -> u32 {
        match self {
            Self::U8 => 0,
            Self::I8 => 1,
            Self::U16 => 2,
            Self::I16 => 3,
            Self::U32 => 4,
            Self::I32 => 5,
            Self::F32 => 6,
            Self::Bool => 7,
            Self::String => 8,
            Self::Array => 9,
            Self::U64 => 10,
            Self::I64 => 11,
            Self::F64 => 12,
        }
    }

    /// The smallest number of bytes one value of this type occupies.
    fn min_size(self) -> u64 {
        match self {
            Self::U8 | Self::I8 | Self::Bool => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 | Self::String => 8,
            Self::Array => 12,
        }
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// A string.
    String(String),
    /// An array of values that all have the element type.
    Array(MetaType, Vec<MetaValue>),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
}

impl MetaValue {
    /// The type tag of this value.
    pub fn meta_type(&self) -> MetaType {
        match self {
            Self::U8(_) => MetaType::U8,
            Self::I8(_) => MetaType::I8,
            Self::U16(_) => MetaType::U16,
            Self::I16(_) => MetaType::I16,
            Self::U32(_) => MetaType::U32,
            Self::I32(_) => MetaType::I32,
            Self::F32(_) => MetaType::F32,
            Self::Bool(_) => MetaType::Bool,
            Self::String(_) => MetaType::String,
            Self::Array(..) => MetaType::Array,
            Self::U64(_) => MetaType::U64,
            Self::I64(_) => MetaType::I64,
            Self::F64(_) => MetaType::F64,
        }
    }

    /// The value as a signed integer, if it is an integer of any width.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::I8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::U64(v) => i64::try_from(v).ok(),
            Self::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a float, if it is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool, if it is a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(_, v) => Some(v),
            _ => None,
        }
    }

    fn type_name(&self) -> String {
        match self {
            Self::Array(t, v) => format!("array<{t:?}>[{}]", v.len()),
            other => format!("{:?}", other.meta_type()),
        }
    }
}

impl fmt::Display for MetaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::U8(v) => write!(f, "{v}"),
            Self::I8(v) => write!(f, "{v}"),
            Self::U16(v) => write!(f, "{v}"),
            Self::I16(v) => write!(f, "{v}"),
            Self::U32(v) => write!(f, "{v}"),
            Self::I32(v) => write!(f, "{v}"),
            Self::F32(v) => write!(f, "{v}"),
            Self::Bool(v) => write!(f, "{v}"),
            Self::String(v) => write!(f, "{v:?}"),
            Self::Array(t, v) => write!(f, "[{t:?}; {}]", v.len()),
            Self::U64(v) => write!(f, "{v}"),
            Self::I64(v) => write!(f, "{v}"),
            Self::F64(v) => write!(f, "{v}"),
        }
    }
}

/// The description of one tensor in the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// The dimensions in ggml order: `dims[0]` is the innermost (contiguous) one.
    pub dims: Vec<u64>,
    /// The element type.
    pub ty: GgmlType,
    /// The offset of the data relative to the start of the data section.
    pub offset: u64,
    /// The size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// The number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The length of one row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// The number of rows (the product of all dimensions but the first).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file whose tensor data stays in the file mapping.
pub struct GgufFile {
    /// The GGUF version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    index: HashMap<String, usize>,
    /// Tensor descriptions in file order.
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// The alignment of the data section.
    pub alignment: u64,
    /// The absolute offset of the data section.
    pub data_offset: u64,
    storage: Storage,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let remaining = (self.buf.len() - self.pos) as u64;
        if n > remaining {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n,
                len: self.buf.len() as u64,
            });
        }
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a count: u64 in v2+, u32 in v1 (not supported but kept simple).
    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::Corrupt(format!("{what} is not valid UTF-8")))
    }
}

fn read_value(c: &mut Cursor<'_>, ty: MetaType, key: &str, depth: u32) -> Result<MetaValue> {
    Ok(match ty {
        MetaType::U8 => MetaValue::U8(c.u8(key)?),
        MetaType::I8 => MetaValue::I8(c.u8(key)? as i8),
        MetaType::U16 => MetaValue::U16(c.u16(key)?),
        MetaType::I16 => MetaValue::I16(c.u16(key)? as i16),
        MetaType::U32 => MetaValue::U32(c.u32(key)?),
        MetaType::I32 => MetaValue::I32(c.u32(key)? as i32),
        MetaType::F32 => MetaValue::F32(f32::from_bits(c.u32(key)?)),
        MetaType::Bool => match c.u8(key)? {
            0 => MetaValue::Bool(false),
            1 => MetaValue::Bool(true),
            v => return Err(GgufError::Corrupt(format!("bool value {v} for key `{key}`"))),
        },
        MetaType::String => MetaValue::String(c.string(key)?),
        MetaType::U64 => MetaValue::U64(c.u64(key)?),
        MetaType::I64 => MetaValue::I64(c.u64(key)? as i64),
        MetaType::F64 => MetaValue::F64(f64::from_bits(c.u64(key)?)),
        MetaType::Array => {
            if depth > 8 {
                return Err(GgufError::Corrupt(format!("arrays nested too deeply in key `{key}`")));
            }
            let raw = c.u32(key)?;
            let elem = MetaType::from_u32(raw)
                .ok_or_else(|| GgufError::Corrupt(format!("unknown array element type {raw} for key `{key}`")))?;
            let count = c.u64(key)?;
            // Every element takes at least `min_size` bytes: reject counts the
            // file cannot possibly hold before allocating anything.
            let needed = count.saturating_mul(elem.min_size());
            if needed > c.remaining() {
                return Err(GgufError::Truncated {
                    what: format!("array of {count} {elem:?} for key `{key}`"),
                    offset: c.pos as u64,
                    needed,
                    len: c.buf.len() as u64,
                });
            }
            let mut values = Vec::with_capacity(count as usize);
            for _ in 0..count {
                values.push(read_value(c, elem, key, depth + 1)?);
            }
            MetaValue::Array(elem, values)
        }
    })
}

impl GgufFile {
    /// Opens and parses a GGUF file, memory-mapping its contents.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| GgufError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only; like every mmap-based model loader we
        // rely on the file not being truncated by another process while open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(Storage::Mapped(map))
    }

    /// Parses a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Storage::Owned(bytes))
    }

    fn parse(storage: Storage) -> Result<Self> {
        let buf = storage.bytes();
        let mut c = Cursor { buf, pos: 0 };
        let magic: [u8; 4] = c.array("magic")?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = c.u32("version")?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        // A key/value takes at least 8 (key length) + 4 (type) + 1 bytes, a tensor info at least 8 + 4 + 4 + 8.
        if n_kv.saturating_mul(13) > c.remaining() {
            return Err(GgufError::Corrupt(format!("metadata count {n_kv} exceeds the file size")));
        }
        if n_tensors.saturating_mul(24) > c.remaining() {
            return Err(GgufError::Corrupt(format!("tensor count {n_tensors} exceeds the file size")));
        }
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut index = HashMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let raw = c.u32(&key)?;
            let ty = MetaType::from_u32(raw)
                .ok_or_else(|| GgufError::Corrupt(format!("unknown value type {raw} for key `{key}`")))?;
            let value = read_value(&mut c, ty, &key, 0)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::Corrupt(format!("duplicate metadata key `{key}`")));
            }
            metadata.push((key, value));
        }
        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => {
                let a = v.as_i64().ok_or_else(|| GgufError::WrongType {
                    key: "general.alignment".into(),
                    expected: "integer",
                    found: v.type_name(),
                })?;
                if a <= 0 || (a as u64).count_ones() != 1 {
                    return Err(GgufError::Corrupt(format!("alignment {a} is not a power of two")));
                }
                a as u64
            }
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor name #{i}"))?;
            let n_dims = c.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::Corrupt(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            let mut n_elements: u64 = 1;
            for _ in 0..n_dims {
                let d = c.u64(&name)?;
                n_elements = n_elements
                    .checked_mul(d)
                    .ok_or_else(|| GgufError::Corrupt(format!("tensor `{name}` has too many elements")))?;
                dims.push(d);
            }
            let raw_ty = c.u32(&name)?;
            let ty = GgmlType::from_u32(raw_ty)
                .ok_or_else(|| GgufError::UnsupportedType { name: name.clone(), ty: format!("#{raw_ty}") })?;
            let offset = c.u64(&name)?;
            if offset % alignment != 0 {
                return Err(GgufError::Corrupt(format!(
                    "tensor `{name}` offset {offset} is not aligned to {alignment}"
                )));
            }
            let block = ty.block_size() as u64;
            if dims[0] % block != 0 {
                return Err(GgufError::Corrupt(format!(
                    "tensor `{name}` row length {} is not a multiple of the {ty} block size {block}",
                    dims[0]
                )));
            }
            let size = (n_elements / block)
                .checked_mul(ty.type_size() as u64)
                .ok_or_else(|| GgufError::Corrupt(format!("tensor `{name}` is too large")))?;
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::Corrupt(format!("duplicate tensor `{name}`")));
            }
            tensors.push(TensorInfo { name, dims, ty, offset, size });
        }
        let pos = c.pos as u64;
        let data_offset = pos.div_ceil(alignment) * alignment;
        let file_len = buf.len() as u64;
        for t in &tensors {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.size))
                .ok_or_else(|| GgufError::Corrupt(format!("tensor `{}` offset overflows", t.name)))?;
            if end > file_len {
                return Err(GgufError::Truncated {
                    what: format!("data of tensor `{}`", t.name),
                    offset: data_offset + t.offset,
                    needed: t.size,
                    len: file_len,
                });
            }
        }
        Ok(Self { version, metadata, index, tensors, tensor_index, alignment, data_offset, storage })
    }

    /// Looks up a metadata value.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&MetaValue> {
        self.get(key).ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    /// A required string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| GgufError::WrongType { key: key.into(), expected: "string", found: v.type_name() })
    }

    /// A required integer value of any width, as `u64` (negative values are an error).
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_i64().and_then(|i| u64::try_from(i).ok()).ok_or_else(|| GgufError::WrongType {
            key: key.into(),
            expected: "non-negative integer",
            found: v.type_name(),
        })
    }

    /// A required numeric value as `f64`.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| GgufError::WrongType { key: key.into(), expected: "number", found: v.type_name() })
    }

    /// An optional bool value (`None` when absent).
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| GgufError::WrongType {
                key: key.into(),
                expected: "bool",
                found: v.type_name(),
            }),
        }
    }

    /// A required array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.require(key)?;
        let wrong = || GgufError::WrongType { key: key.into(), expected: "array of strings", found: v.type_name() };
        v.as_array().ok_or_else(wrong)?.iter().map(|e| e.as_str().ok_or_else(wrong)).collect()
    }

    /// A required array of integers (any width) as `i64`.
    pub fn get_int_array(&self, key: &str) -> Result<Vec<i64>> {
        let v = self.require(key)?;
        let wrong = || GgufError::WrongType { key: key.into(), expected: "array of integers", found: v.type_name() };
        v.as_array().ok_or_else(wrong)?.iter().map(|e| e.as_i64().ok_or_else(wrong)).collect()
    }

    /// The model architecture (`general.architecture`).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// Looks up a tensor description by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Looks up a tensor that must exist.
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name).ok_or_else(|| GgufError::MissingTensor(name.to_string()))
    }

    /// The raw bytes of a tensor (bounds were checked when the file was parsed).
    pub fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8]> {
        let start = self.data_offset + info.offset;
        let end = start + info.size;
        self.storage
            .bytes()
            .get(start as usize..end as usize)
            .ok_or_else(|| GgufError::Corrupt(format!("tensor `{}` lies outside the file", info.name)))
    }

    /// Dequantises a whole tensor to `f32`, in ggml element order.
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Vec<f32>> {
        let data = self.tensor_data(info)?;
        quant::dequantize(info.ty, data, info.n_elements() as usize)
            .map_err(|e| GgufError::UnsupportedType { name: info.name.clone(), ty: e.to_string() })
    }
}

/// Writes GGUF files; used by tests and tools to make small synthetic models.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
    /// The GGUF version to write (default 3).
    pub version: u32,
    /// The alignment to use (default 32).
    pub alignment: u64,
}

impl GgufWriter {
    /// A writer for a version 3 file with 32-byte alignment.
    pub fn new() -> Self {
        Self { version: 3, alignment: DEFAULT_ALIGNMENT, ..Default::default() }
    }

    /// Adds a metadata key/value.
    pub fn kv(&mut self, key: &str, value: MetaValue) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Adds a tensor with raw (already encoded) data; `dims` in ggml order.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.to_string(), dims.to_vec(), ty, data));
        self
    }

    /// Adds an `f32` tensor.
    pub fn tensor_f32(&mut self, name: &str, dims: &[u64], data: &[f32]) -> &mut Self {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, dims, GgmlType::F32, bytes)
    }

    /// Serialises the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        fn put_str(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
            match v {
                MetaValue::U8(x) => out.push(*x),
                MetaValue::I8(x) => out.push(*x as u8),
                MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
                MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
                MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
                MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
                MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
                MetaValue::Bool(x) => out.push(u8::from(*x)),
                MetaValue::String(s) => put_str(out, s),
                MetaValue::Array(t, items) => {
                    out.extend_from_slice(&t.to_u32().to_le_bytes());
                    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                    for i in items {
                        put_value(out, i);
                    }
                }
                MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
                MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
                MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
            }
        }
        let align = self.alignment.max(1);
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&v.meta_type().to_u32().to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in &self.tensors {
            put_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_u32().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).div_ceil(align) * align;
        }
        let data_start = (out.len() as u64).div_ceil(align) * align;
        out.resize(data_start as usize, 0);
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + off) as usize, 0);
            out.extend_from_slice(data);
        }
        out
    }
}
