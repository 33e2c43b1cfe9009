//! A small unpickler for the subset of Python's pickle format (protocols 0–4, binary opcodes)
//! that legacy PyTorch checkpoints use.
//!
//! It never executes anything: `GLOBAL` only records a module/name pair and `REDUCE`/`BUILD`
//! only record their operands (except `collections.OrderedDict()`, which becomes a
//! [`Value::Dict`]). Memo entries are snapshots: a container mutated after it was memoized is
//! not updated in the memo, which is fine for the flat structures PyTorch writes.

use std::fmt;

/// A value produced by the unpickler.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Python `None`.
    None,
    /// Python `bool`.
    Bool(bool),
    /// Python `int` (up to 128 bits).
    Int(i128),
    /// Python `float`.
    Float(f64),
    /// Python `str`.
    Str(String),
    /// Python `bytes` (or a Python 2 `str`).
    Bytes(Vec<u8>),
    /// Python `tuple`.
    Tuple(Vec<Value>),
    /// Python `list`.
    List(Vec<Value>),
    /// Python `dict` or `collections.OrderedDict`, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A reference to a global (`module.name`), never resolved.
    Global {
        /// Module path, e.g. `torch._utils`.
        module: String,
        /// Attribute name, e.g. `_rebuild_tensor_v2`.
        name: String,
    },
    /// A persistent id (`BINPERSID`), as PyTorch uses for storages.
    PersId(Box<Value>),
    /// `func(*args)`, recorded, not called.
    Reduce {
        /// The callable (usually a [`Value::Global`]).
        func: Box<Value>,
        /// The argument tuple.
        args: Box<Value>,
    },
    /// `obj.__setstate__(state)`, recorded, not called.
    Build {
        /// The object.
        obj: Box<Value>,
        /// Its state.
        state: Box<Value>,
    },
}

impl Value {
    /// The string, if this is a `str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an `int`.
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The items, if this is a tuple or a list.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// Whether this is the global `module.name`.
    pub fn is_global(&self, m: &str, n: &str) -> bool {
        matches!(self, Value::Global { module, name } if module == m && name == n)
    }
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError {
    /// Byte offset in the input where the problem was found.
    pub pos: usize,
    /// What went wrong.
    pub msg: String,
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pickle error at byte {}: {}", self.pos, self.msg)
    }
}

impl std::error::Error for PickleError {}

/// Stack entries: values, or a `MARK`.
enum Slot {
    Mark,
    Val(Value),
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, msg: impl Into<String>) -> PickleError {
        PickleError {
            pos: self.pos,
            msg: msg.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.err(format!("unexpected end of data (wanted {n} bytes)")))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn len_u32(&mut self) -> Result<usize, PickleError> {
        usize::try_from(self.u32()?).map_err(|_| self.err("length does not fit"))
    }

    fn len_u64(&mut self) -> Result<usize, PickleError> {
        usize::try_from(u64::from_le_bytes(self.array()?)).map_err(|_| self.err("length too large"))
    }

    /// A newline-terminated line (text opcodes), without the newline.
    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("unterminated line"))?;
        let line = std::str::from_utf8(&rest[..n]).map_err(|_| self.err("line is not UTF-8"))?;
        self.pos += n + 1;
        Ok(line)
    }

    fn utf8(&mut self, n: usize) -> Result<String, PickleError> {
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }
}

/// Reads one pickle starting at the beginning of `data`.
///
/// Returns the value and the number of bytes consumed (up to and including `STOP`), so that
/// several pickles written back to back can be read in turn.
pub fn load(data: &[u8]) -> Result<(Value, usize), PickleError> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Slot> = Vec::new();
    let mut memo: Vec<Option<Value>> = Vec::new();

    fn pop(r: &Reader<'_>, stack: &mut Vec<Slot>) -> Result<Value, PickleError> {
        match stack.pop() {
            Some(Slot::Val(v)) => Ok(v),
            Some(Slot::Mark) => Err(r.err("unexpected MARK on the stack")),
            None => Err(r.err("stack underflow")),
        }
    }

    /// Pops everything above the topmost MARK (and the MARK itself).
    fn pop_mark(r: &Reader<'_>, stack: &mut Vec<Slot>) -> Result<Vec<Value>, PickleError> {
        let m = stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or_else(|| r.err("no MARK on the stack"))?;
        let items = stack
            .drain(m + 1..)
            .map(|s| match s {
                Slot::Val(v) => v,
                Slot::Mark => Value::None, // unreachable: m is the topmost mark
            })
            .collect();
        stack.truncate(m);
        Ok(items)
    }

    fn top<'s>(r: &Reader<'_>, stack: &'s mut [Slot]) -> Result<&'s mut Value, PickleError> {
        match stack.last_mut() {
            Some(Slot::Val(v)) => Ok(v),
            _ => Err(r.err("expected a value on top of the stack")),
        }
    }

    fn put(memo: &mut Vec<Option<Value>>, idx: usize, v: Value) {
        if memo.len() <= idx {
            memo.resize(idx + 1, None);
        }
        memo[idx] = Some(v);
    }

    fn get(r: &Reader<'_>, memo: &[Option<Value>], idx: usize) -> Result<Value, PickleError> {
        memo.get(idx)
            .and_then(|v| v.clone())
            .ok_or_else(|| r.err(format!("memo key {idx} not found")))
    }

    fn set_items(r: &Reader<'_>, target: &mut Value, items: Vec<Value>) -> Result<(), PickleError> {
        let Value::Dict(entries) = target else {
            return Err(r.err("SETITEM(S) on a non-dict"));
        };
        if !items.len().is_multiple_of(2) {
            return Err(r.err("SETITEMS with an odd number of items"));
        }
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let Some(slot) = entries.iter_mut().find(|(ek, _)| *ek == k) {
                slot.1 = v;
            } else {
                entries.push((k, v));
            }
        }
        Ok(())
    }

    // The stack is bounded by the input (every opcode consumes a byte); the memo by this.
    const MAX_MEMO: usize = 1 << 20;

    loop {
        let op_pos = r.pos;
        let op = r.u8()?;
        match op {
            0x80 => {
                // PROTO
                let p = r.u8()?;
                if p > 5 {
                    return Err(r.err(format!("unsupported pickle protocol {p}")));
                }
            }
            0x95 => {
                // FRAME: a length hint only
                r.take(8)?;
            }
            b'.' => {
                // STOP
                let v = pop(&r, &mut stack)?;
                return Ok((v, r.pos));
            }
            b'(' => stack.push(Slot::Mark),
            b')' => stack.push(Slot::Val(Value::Tuple(Vec::new()))),
            b't' => {
                let items = pop_mark(&r, &mut stack)?;
                stack.push(Slot::Val(Value::Tuple(items)));
            }
            0x85..=0x87 => {
                // TUPLE1, TUPLE2, TUPLE3
                let n = usize::from(op - 0x84);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop(&r, &mut stack)?);
                }
                items.reverse();
                stack.push(Slot::Val(Value::Tuple(items)));
            }
            b']' => stack.push(Slot::Val(Value::List(Vec::new()))),
            b'l' => {
                let items = pop_mark(&r, &mut stack)?;
                stack.push(Slot::Val(Value::List(items)));
            }
            b'a' => {
                let v = pop(&r, &mut stack)?;
                match top(&r, &mut stack)? {
                    Value::List(l) => l.push(v),
                    _ => return Err(r.err("APPEND to a non-list")),
                }
            }
            b'e' => {
                let items = pop_mark(&r, &mut stack)?;
                match top(&r, &mut stack)? {
                    Value::List(l) => l.extend(items),
                    _ => return Err(r.err("APPENDS to a non-list")),
                }
            }
            b'}' => stack.push(Slot::Val(Value::Dict(Vec::new()))),
            b'd' => {
                let items = pop_mark(&r, &mut stack)?;
                let mut d = Value::Dict(Vec::new());
                set_items(&r, &mut d, items)?;
                stack.push(Slot::Val(d));
            }
            b's' => {
                let v = pop(&r, &mut stack)?;
                let k = pop(&r, &mut stack)?;
                let t = top(&r, &mut stack)?;
                set_items(&r, t, vec![k, v])?;
            }
            b'u' => {
                let items = pop_mark(&r, &mut stack)?;
                let t = top(&r, &mut stack)?;
                set_items(&r, t, items)?;
            }
            b'N' => stack.push(Slot::Val(Value::None)),
            0x88 => stack.push(Slot::Val(Value::Bool(true))),
            0x89 => stack.push(Slot::Val(Value::Bool(false))),
            b'J' => {
                let v = i32::from_le_bytes(r.array()?);
                stack.push(Slot::Val(Value::Int(i128::from(v))));
            }
            b'K' => {
                let v = r.u8()?;
                stack.push(Slot::Val(Value::Int(i128::from(v))));
            }
            b'M' => {
                let v = r.u16()?;
                stack.push(Slot::Val(Value::Int(i128::from(v))));
            }
            0x8a | 0x8b => {
                // LONG1 / LONG4: little-endian two's complement
                let n = if op == 0x8a {
                    usize::from(r.u8()?)
                } else {
                    r.len_u32()?
                };
                if n > 16 {
                    return Err(r.err(format!("integer of {n} bytes is too large")));
                }
                let bytes = r.take(n)?;
                let mut buf = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                    [0xffu8; 16]
                } else {
                    [0u8; 16]
                };
                buf[..n].copy_from_slice(bytes);
                stack.push(Slot::Val(Value::Int(i128::from_le_bytes(buf))));
            }
            b'I' | b'L' => {
                // INT / LONG (text)
                let line = r.line()?;
                let t = line.trim_end_matches('L');
                let v = match t {
                    "00" => Value::Bool(false),
                    "01" => Value::Bool(true),
                    _ => Value::Int(
                        t.parse::<i128>()
                            .map_err(|_| r.err(format!("bad integer {line:?}")))?,
                    ),
                };
                stack.push(Slot::Val(v));
            }
            b'G' => {
                let v = f64::from_be_bytes(r.array()?);
                stack.push(Slot::Val(Value::Float(v)));
            }
            b'X' => {
                let n = r.len_u32()?;
                let s = r.utf8(n)?;
                stack.push(Slot::Val(Value::Str(s)));
            }
            0x8c => {
                // SHORT_BINUNICODE
                let n = usize::from(r.u8()?);
                let s = r.utf8(n)?;
                stack.push(Slot::Val(Value::Str(s)));
            }
            0x8d => {
                // BINUNICODE8
                let n = r.len_u64()?;
                let s = r.utf8(n)?;
                stack.push(Slot::Val(Value::Str(s)));
            }
            b'U' | b'C' => {
                // SHORT_BINSTRING / SHORT_BINBYTES
                let n = usize::from(r.u8()?);
                let b = r.take(n)?.to_vec();
                stack.push(Slot::Val(Value::Bytes(b)));
            }
            b'T' | b'B' => {
                // BINSTRING / BINBYTES
                let n = r.len_u32()?;
                let b = r.take(n)?.to_vec();
                stack.push(Slot::Val(Value::Bytes(b)));
            }
            0x8e => {
                // BINBYTES8
                let n = r.len_u64()?;
                let b = r.take(n)?.to_vec();
                stack.push(Slot::Val(Value::Bytes(b)));
            }
            b'c' => {
                let module = r.line()?.to_string();
                let name = r.line()?.to_string();
                stack.push(Slot::Val(Value::Global { module, name }));
            }
            0x93 => {
                // STACK_GLOBAL
                let name = pop(&r, &mut stack)?;
                let module = pop(&r, &mut stack)?;
                match (module, name) {
                    (Value::Str(module), Value::Str(name)) => {
                        stack.push(Slot::Val(Value::Global { module, name }))
                    }
                    _ => return Err(r.err("STACK_GLOBAL needs two strings")),
                }
            }
            b'R' | 0x81 => {
                // REDUCE / NEWOBJ
                let args = pop(&r, &mut stack)?;
                let func = pop(&r, &mut stack)?;
                let is_empty_args = matches!(&args, Value::Tuple(a) if a.is_empty());
                let v = if func.is_global("collections", "OrderedDict") && is_empty_args {
                    Value::Dict(Vec::new())
                } else {
                    Value::Reduce {
                        func: Box::new(func),
                        args: Box::new(args),
                    }
                };
                stack.push(Slot::Val(v));
            }
            b'b' => {
                let state = pop(&r, &mut stack)?;
                let obj = pop(&r, &mut stack)?;
                // A dict subclass with attributes (OrderedDict's `_metadata`): keep the dict.
                let v = match obj {
                    Value::Dict(_) => obj,
                    _ => Value::Build {
                        obj: Box::new(obj),
                        state: Box::new(state),
                    },
                };
                stack.push(Slot::Val(v));
            }
            b'Q' => {
                let pid = pop(&r, &mut stack)?;
                stack.push(Slot::Val(Value::PersId(Box::new(pid))));
            }
            b'q' | b'r' | b'p' | 0x94 => {
                // BINPUT / LONG_BINPUT / PUT / MEMOIZE
                let idx = match op {
                    b'q' => usize::from(r.u8()?),
                    b'r' => r.len_u32()?,
                    b'p' => r
                        .line()?
                        .parse::<usize>()
                        .map_err(|_| r.err("bad PUT index"))?,
                    _ => memo.len(),
                };
                if idx >= MAX_MEMO {
                    return Err(r.err(format!("memo index {idx} too large")));
                }
                let v = match stack.last() {
                    Some(Slot::Val(v)) => v.clone(),
                    _ => return Err(r.err("PUT with no value on the stack")),
                };
                put(&mut memo, idx, v);
            }
            b'h' | b'j' | b'g' => {
                // BINGET / LONG_BINGET / GET
                let idx = match op {
                    b'h' => usize::from(r.u8()?),
                    b'j' => r.len_u32()?,
                    _ => r
                        .line()?
                        .parse::<usize>()
                        .map_err(|_| r.err("bad GET index"))?,
                };
                let v = get(&r, &memo, idx)?;
                stack.push(Slot::Val(v));
            }
            b'0' => {
                pop(&r, &mut stack)?;
            }
            b'2' => {
                let v = match stack.last() {
                    Some(Slot::Val(v)) => v.clone(),
                    _ => return Err(r.err("DUP with no value on the stack")),
                };
                stack.push(Slot::Val(v));
            }
            _ => {
                return Err(PickleError {
                    pos: op_pos,
                    msg: format!("unsupported opcode 0x{op:02x}"),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::Str(x.to_string())
    }

    #[test]
    fn reads_scalars_and_reports_length() {
        // pickle.dumps(1001, protocol=2) followed by trailing bytes
        let data = b"\x80\x02M\xe9\x03.TRAILING";
        let (v, n) = load(data).unwrap();
        assert_eq!(v, Value::Int(1001));
        assert_eq!(n, 6);
    }

    #[test]
    fn reads_torch_magic_number_long1() {
        // pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)
        let data = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
        let (v, _) = load(data).unwrap();
        assert_eq!(v, Value::Int(0x1950a86a20f9469cfc6c));
        // negative LONG1: -2
        let (v, _) = load(b"\x8a\x01\xfe.").unwrap();
        assert_eq!(v, Value::Int(-2));
    }

    #[test]
    fn reads_dict_with_memo_and_nested_tuple() {
        // pickle.dumps({'a': (1, True, None), 'b': 'a'}, protocol=2) with the key memoized
        let data = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01\x88N\x87q\x02X\x01\x00\x00\x00bq\x03h\x01u.";
        let (v, _) = load(data).unwrap();
        assert_eq!(
            v,
            Value::Dict(vec![
                (
                    s("a"),
                    Value::Tuple(vec![Value::Int(1), Value::Bool(true), Value::None])
                ),
                (s("b"), s("a")),
            ])
        );
    }

    #[test]
    fn reads_lists_floats_and_globals() {
        // [1.5, -7, b'xy'] then a GLOBAL reduced with an empty tuple
        let data = b"\x80\x02](G?\xf8\x00\x00\x00\x00\x00\x00J\xf9\xff\xff\xffC\x02xye.";
        let (v, _) = load(data).unwrap();
        assert_eq!(
            v,
            Value::List(vec![
                Value::Float(1.5),
                Value::Int(-7),
                Value::Bytes(b"xy".to_vec())
            ])
        );
        let data = b"ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00kK\x02s}bh\x00.";
        // The BUILD leaves the dict; h0 (the class) is then on top, so STOP returns the class.
        let (v, _) = load(data).unwrap();
        assert!(v.is_global("collections", "OrderedDict"));
        let data = b"ccollections\nOrderedDict\n)RX\x01\x00\x00\x00kK\x02s}b.";
        let (v, _) = load(data).unwrap();
        assert_eq!(v, Value::Dict(vec![(s("k"), Value::Int(2))]));
    }

    #[test]
    fn records_reduce_and_persistent_ids() {
        let data = b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagetQK\x00tR.";
        let (v, _) = load(data).unwrap();
        match v {
            Value::Reduce { func, args } => {
                assert!(func.is_global("torch._utils", "_rebuild_tensor_v2"));
                assert_eq!(
                    *args,
                    Value::Tuple(vec![
                        Value::PersId(Box::new(Value::Tuple(vec![s("storage")]))),
                        Value::Int(0)
                    ])
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(load(b"").is_err());
        assert!(load(b"\x80\x02").is_err()); // no STOP
        assert!(load(b"X\xff\xff\xff\x7fabc.").is_err()); // length past the end
        assert!(load(b"h\x05.").is_err()); // unknown memo key
        assert!(load(b".").is_err()); // empty stack
        assert!(load(b"K\x01K\x02s.").is_err()); // SETITEM on an int
        let e = load(b"\x80\x02\xff.").unwrap_err();
        assert_eq!(e.pos, 2);
        assert!(e.msg.contains("0xff"));
        assert!(load(b"\x8a\x20\x00.").is_err()); // 32-byte integer
    }
}
