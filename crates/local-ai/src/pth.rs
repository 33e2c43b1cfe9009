//! Reader for PyTorch's legacy (pre-1.6, non-zip) `torch.save` format, enough for a state dict.
//!
//! Layout: five pickles back to back — the magic number, the protocol version, a sys-info dict,
//! the main object (here an `OrderedDict` of tensors whose storages are persistent ids), the list
//! of storage keys — and then, for each key in that order, the storage's element count as a
//! little-endian `u64` followed by its raw little-endian elements.

use std::collections::HashMap;
use std::fmt;

use crate::pickle::{self, Value};

/// The magic number that starts a legacy PyTorch file.
pub const MAGIC: i128 = 0x1950a86a20f9469cfc6c;
/// The protocol version legacy PyTorch files carry.
pub const PROTOCOL_VERSION: i128 = 1001;
/// Largest tensor accepted, in elements (a view may repeat storage elements via zero strides).
const MAX_ELEMENTS: usize = 1 << 28;

/// A dense tensor, converted to `f32`, in row-major (contiguous) order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first (empty for a scalar).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

/// An ordered map of parameter names to tensors.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    entries: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
}

impl StateDict {
    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Names and tensors in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    fn insert(&mut self, name: String, t: Tensor) {
        if let Some(&i) = self.index.get(&name) {
            self.entries[i].1 = t;
        } else {
            self.index.insert(name.clone(), self.entries.len());
            self.entries.push((name, t));
        }
    }
}

/// Why a `.pth` file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PthError {
    /// One of the pickles is malformed.
    Pickle(pickle::PickleError),
    /// The pickles are valid but do not describe what a legacy state dict should.
    Format(String),
}

impl fmt::Display for PthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PthError::Pickle(e) => write!(f, "{e}"),
            PthError::Format(m) => write!(f, "not a legacy PyTorch state dict: {m}"),
        }
    }
}

impl std::error::Error for PthError {}

fn bad(msg: impl Into<String>) -> PthError {
    PthError::Format(msg.into())
}

/// Element types of PyTorch storages that can be converted to `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DType {
    F32,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    fn from_storage_class(name: &str) -> Option<DType> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    fn decode(self, b: &[u8]) -> f32 {
        let mut a8 = [0u8; 8];
        a8[..b.len()].copy_from_slice(b);
        let mut a4 = [0u8; 4];
        a4.copy_from_slice(&a8[..4]);
        match self {
            DType::F32 => f32::from_le_bytes(a4),
            DType::F64 => f64::from_le_bytes(a8) as f32,
            DType::I64 => i64::from_le_bytes(a8) as f32,
            DType::I32 => i32::from_le_bytes(a4) as f32,
            DType::I16 => f32::from(i16::from_le_bytes([a8[0], a8[1]])),
            DType::I8 => f32::from(a8[0] as i8),
            DType::U8 | DType::Bool => f32::from(a8[0]),
        }
    }
}

/// A tensor as described by the main pickle, before the storages are read.
struct TensorRef {
    name: String,
    key: String,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn to_usize(v: &Value, what: &str) -> Result<usize, PthError> {
    v.as_int()
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| bad(format!("{what} is not a non-negative integer")))
}

fn usize_seq(v: &Value, what: &str) -> Result<Vec<usize>, PthError> {
    v.as_seq()
        .ok_or_else(|| bad(format!("{what} is not a tuple")))?
        .iter()
        .map(|x| to_usize(x, what))
        .collect()
}

/// Interprets `_rebuild_tensor_v2(storage, offset, size, stride, ...)` (or `_rebuild_tensor`,
/// or `_rebuild_parameter(tensor, ...)`), recording the storage's type in `dtypes`.
fn tensor_ref(
    name: &str,
    v: &Value,
    dtypes: &mut HashMap<String, (DType, usize)>,
) -> Result<TensorRef, PthError> {
    let Value::Reduce { func, args } = v else {
        return Err(bad(format!("{name}: not a tensor")));
    };
    let args = args
        .as_seq()
        .ok_or_else(|| bad(format!("{name}: arguments are not a tuple")))?;
    if func.is_global("torch._utils", "_rebuild_parameter") {
        let inner = args
            .first()
            .ok_or_else(|| bad(format!("{name}: empty parameter")))?;
        return tensor_ref(name, inner, dtypes);
    }
    if !(func.is_global("torch._utils", "_rebuild_tensor_v2")
        || func.is_global("torch._utils", "_rebuild_tensor"))
    {
        return Err(bad(format!(
            "{name}: unsupported tensor constructor {func:?}"
        )));
    }
    if args.len() < 4 {
        return Err(bad(format!("{name}: too few tensor arguments")));
    }
    // Persistent id: ('storage', torch.FloatStorage, key, location, size[, view_metadata])
    let Value::PersId(pid) = &args[0] else {
        return Err(bad(format!("{name}: storage is not a persistent id")));
    };
    let pid = pid
        .as_seq()
        .ok_or_else(|| bad(format!("{name}: persistent id is not a tuple")))?;
    if pid.len() < 5 || pid[0].as_str() != Some("storage") {
        return Err(bad(format!("{name}: unexpected persistent id")));
    }
    let dtype = match &pid[1] {
        Value::Global { module, name: cls } if module == "torch" => DType::from_storage_class(cls)
            .ok_or_else(|| bad(format!("{name}: unsupported storage type {cls}")))?,
        other => return Err(bad(format!("{name}: unexpected storage type {other:?}"))),
    };
    let key = pid[2]
        .as_str()
        .ok_or_else(|| bad(format!("{name}: storage key is not a string")))?
        .to_string();
    let numel = to_usize(&pid[4], "storage size")?;
    if let Some(&(d, n)) = dtypes.get(&key) {
        if d != dtype || n != numel {
            return Err(bad(format!("storage {key} is described inconsistently")));
        }
    }
    dtypes.insert(key.clone(), (dtype, numel));
    let shape = usize_seq(&args[2], "tensor size")?;
    let stride = usize_seq(&args[3], "tensor stride")?;
    if shape.len() != stride.len() {
        return Err(bad(format!("{name}: size and stride differ in length")));
    }
    Ok(TensorRef {
        name: name.to_string(),
        key,
        offset: to_usize(&args[1], "storage offset")?,
        shape,
        stride,
    })
}

/// Reads a legacy-format `torch.save(state_dict)` file held in memory.
pub fn read_state_dict(data: &[u8]) -> Result<StateDict, PthError> {
    let mut pos = 0usize;
    let mut next = || -> Result<Value, PthError> {
        let (v, n) = pickle::load(&data[pos..]).map_err(|mut e| {
            e.pos += pos;
            PthError::Pickle(e)
        })?;
        pos += n;
        Ok(v)
    };
    if next()?.as_int() != Some(MAGIC) {
        return Err(bad(
            "wrong magic number (a zip-format checkpoint or not a PyTorch file)",
        ));
    }
    if next()?.as_int() != Some(PROTOCOL_VERSION) {
        return Err(bad("unsupported protocol version"));
    }
    if let Value::Dict(info) = next()? {
        let little = info
            .iter()
            .find(|(k, _)| k.as_str() == Some("little_endian"))
            .map(|(_, v)| v);
        if matches!(little, Some(Value::Bool(false))) {
            return Err(bad("big-endian files are not supported"));
        }
    } else {
        return Err(bad("sys info is not a dict"));
    }
    let Value::Dict(main) = next()? else {
        return Err(bad("the saved object is not a dict of tensors"));
    };
    let keys = next()?;
    let keys = keys
        .as_seq()
        .ok_or_else(|| bad("storage keys are not a list"))?
        .iter()
        .map(|k| {
            k.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad("storage key is not a string"))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut dtypes = HashMap::new();
    let refs = main
        .iter()
        .map(|(k, v)| {
            let name = k
                .as_str()
                .ok_or_else(|| bad("parameter name is not a string"))?;
            tensor_ref(name, v, &mut dtypes)
        })
        .collect::<Result<Vec<_>, _>>()?;

    // The storages follow, in key order.
    let mut storages: HashMap<&str, (DType, &[u8])> = HashMap::new();
    for key in &keys {
        let &(dtype, numel) = dtypes
            .get(key)
            .ok_or_else(|| bad(format!("storage {key} is used by no tensor")))?;
        let head = data
            .get(pos..pos + 8)
            .ok_or_else(|| bad(format!("storage {key}: truncated file")))?;
        let mut n = [0u8; 8];
        n.copy_from_slice(head);
        let count = usize::try_from(u64::from_le_bytes(n))
            .map_err(|_| bad(format!("storage {key}: size too large")))?;
        if count != numel {
            return Err(bad(format!(
                "storage {key}: {count} elements on disk, {numel} expected"
            )));
        }
        pos += 8;
        let len = count
            .checked_mul(dtype.size())
            .ok_or_else(|| bad(format!("storage {key}: size too large")))?;
        let bytes = data
            .get(pos..pos.saturating_add(len))
            .ok_or_else(|| bad(format!("storage {key}: truncated file")))?;
        pos += len;
        storages.insert(key.as_str(), (dtype, bytes));
    }

    let mut out = StateDict::default();
    for r in refs {
        let &(dtype, bytes) = storages
            .get(r.key.as_str())
            .ok_or_else(|| bad(format!("{}: storage {} is missing", r.name, r.key)))?;
        let avail = bytes.len() / dtype.size();
        let numel = r
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| bad(format!("{}: tensor too large", r.name)))?;
        // Highest element index the view touches must lie inside the storage.
        if numel > 0 {
            let last = r
                .shape
                .iter()
                .zip(&r.stride)
                .try_fold(r.offset, |acc, (&d, &s)| {
                    (d - 1).checked_mul(s).and_then(|x| x.checked_add(acc))
                });
            if last.is_none_or(|l| l >= avail) {
                return Err(bad(format!("{}: view exceeds its storage", r.name)));
            }
        }
        let mut values = Vec::with_capacity(numel);
        let mut idx = vec![0usize; r.shape.len()];
        for _ in 0..numel {
            let e = r.offset + idx.iter().zip(&r.stride).map(|(i, s)| i * s).sum::<usize>();
            let sz = dtype.size();
            values.push(dtype.decode(&bytes[e * sz..(e + 1) * sz]));
            // Increment the multi-index, innermost dimension first.
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < r.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out.insert(
            r.name,
            Tensor {
                shape: r.shape,
                data: values,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny pickle writer for hand-made legacy files (protocol 2 opcodes only).
    #[derive(Default)]
    pub(crate) struct W(pub Vec<u8>);

    impl W {
        pub fn op(&mut self, b: &[u8]) -> &mut Self {
            self.0.extend_from_slice(b);
            self
        }
        pub fn str(&mut self, s: &str) -> &mut Self {
            self.0.push(b'X');
            self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
            self.0.extend_from_slice(s.as_bytes());
            self
        }
        pub fn int(&mut self, i: u32) -> &mut Self {
            self.0.push(b'J');
            self.0.extend_from_slice(&i.to_le_bytes());
            self
        }
        pub fn global(&mut self, m: &str, n: &str) -> &mut Self {
            self.0.push(b'c');
            self.0.extend_from_slice(format!("{m}\n{n}\n").as_bytes());
            self
        }
        pub fn tuple(&mut self, xs: &[usize]) -> &mut Self {
            self.op(b"(");
            for &x in xs {
                self.int(x as u32);
            }
            self.op(b"t")
        }
    }

    pub(crate) struct Spec<'a> {
        pub name: &'a str,
        pub key: &'a str,
        pub class: &'a str,
        pub storage_len: usize,
        pub offset: usize,
        pub shape: &'a [usize],
        pub stride: &'a [usize],
    }

    /// Writes a legacy file: the four header pickles, the storage keys, then the storages.
    pub(crate) fn legacy_file(
        tensors: &[Spec<'_>],
        storages: &[(&str, Vec<u8>, usize)],
    ) -> Vec<u8> {
        let mut w = W::default();
        w.op(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.");
        w.op(b"\x80\x02M\xe9\x03.");
        w.op(b"\x80\x02}(").str("little_endian").op(b"\x88u.");
        w.op(b"\x80\x02")
            .global("collections", "OrderedDict")
            .op(b"q\x00)R(");
        for t in tensors {
            w.str(t.name)
                .global("torch._utils", "_rebuild_tensor_v2")
                .op(b"((")
                .str("storage")
                .global("torch", t.class)
                .str(t.key)
                .str("cpu")
                .int(t.storage_len as u32)
                .op(b"NtQ")
                .int(t.offset as u32)
                .tuple(t.shape)
                .tuple(t.stride)
                .op(b"\x89h\x00)RtR");
        }
        // BUILD with a `_metadata`-like state dict leaves the OrderedDict on the stack.
        w.op(b"u}b.");
        w.op(b"\x80\x02](");
        for (k, _, _) in storages {
            w.str(k);
        }
        w.op(b"e.");
        for (_, bytes, count) in storages {
            w.0.extend_from_slice(&(*count as u64).to_le_bytes());
            w.0.extend_from_slice(bytes);
        }
        w.0
    }

    fn f32_bytes(xs: &[f32]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_shared_offset_and_strided_views() {
        let floats: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let file = legacy_file(
            &[
                // a 2x3 view at offset 2 of an 8-element storage
                Spec {
                    name: "a.weight",
                    key: "100",
                    class: "FloatStorage",
                    storage_len: 8,
                    offset: 2,
                    shape: &[2, 3],
                    stride: &[3, 1],
                },
                // the transposed first 2x3 block: shape (3, 2), stride (1, 3)
                Spec {
                    name: "a.t",
                    key: "100",
                    class: "FloatStorage",
                    storage_len: 8,
                    offset: 0,
                    shape: &[3, 2],
                    stride: &[1, 3],
                },
                Spec {
                    name: "bn.num_batches_tracked",
                    key: "7",
                    class: "LongStorage",
                    storage_len: 1,
                    offset: 0,
                    shape: &[],
                    stride: &[],
                },
            ],
            &[
                ("100", f32_bytes(&floats), 8),
                ("7", 42i64.to_le_bytes().to_vec(), 1),
            ],
        );
        let sd = read_state_dict(&file).unwrap();
        assert_eq!(sd.len(), 3);
        let a = sd.get("a.weight").unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        let t = sd.get("a.t").unwrap();
        assert_eq!(t.data, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let n = sd.get("bn.num_batches_tracked").unwrap();
        assert!(n.shape.is_empty());
        assert_eq!(n.data, vec![42.0]);
        let names: Vec<&str> = sd.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a.weight", "a.t", "bn.num_batches_tracked"]);
    }

    #[test]
    fn rejects_broken_files() {
        let spec = |offset, shape: &'static [usize]| Spec {
            name: "w",
            key: "1",
            class: "FloatStorage",
            storage_len: 4,
            offset,
            shape,
            stride: &[1],
        };
        let good = legacy_file(&[spec(0, &[4])], &[("1", f32_bytes(&[1.0; 4]), 4)]);
        assert!(read_state_dict(&good).is_ok());
        // truncated storage bytes
        assert!(read_state_dict(&good[..good.len() - 1]).is_err());
        // view past the end of the storage
        let over = legacy_file(&[spec(1, &[4])], &[("1", f32_bytes(&[1.0; 4]), 4)]);
        assert!(matches!(read_state_dict(&over), Err(PthError::Format(_))));
        // element count on disk disagrees with the pickle
        let wrong = legacy_file(&[spec(0, &[4])], &[("1", f32_bytes(&[1.0; 4]), 5)]);
        assert!(read_state_dict(&wrong).is_err());
        // not a PyTorch file at all (a zip)
        assert!(read_state_dict(b"PK\x03\x04rest").is_err());
        // wrong magic
        assert!(matches!(
            read_state_dict(b"\x80\x02K\x01."),
            Err(PthError::Format(_))
        ));
    }
}
