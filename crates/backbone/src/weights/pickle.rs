//! A safe interpreter for the pickles inside PyTorch checkpoints.
//!
//! It runs the pickle opcodes of protocols 0 to 5 that build plain data (numbers, strings, tuples, lists,
//! dicts, sets) and knows a short allow-list of globals: `collections.OrderedDict`, the
//! `torch._utils._rebuild_*` tensor constructors, the `torch.*Storage` types and `_codecs.encode`. Those
//! are interpreted here, never executed; any other global, and the opcodes that instantiate arbitrary
//! classes (`INST`, `OBJ`, extension registry), are refused with an error naming them. A checkpoint can
//! therefore never run code on load, which is the same guarantee as `torch.load(weights_only=True)`.
//!
//! It is also bounded for any input, in memory and in time:
//! - every length a pickle declares is checked against the bytes left in the input before anything is
//!   allocated, and large buffers are allocated fallibly;
//! - values are shared, not copied, when a pickle duplicates them (`DUP`, memo `GET`), so a few bytes
//!   cannot double a structure again and again;
//! - the copies an interpretation does make draw on a work budget proportional to the pickle's size;
//! - dicts index their keys (a repeated key is found in constant time), marks are a stack of positions;
//! - nested values are dropped with a loop, not recursion (a pickle can nest a million tuples), and every
//!   list and dict is emptied when the result is dropped, so a list that contains itself does not leak.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::ops::Deref;
use std::rc::Rc;

use candle_core::DType;

use super::bounds::{self, Budget, WORK_PER_BYTE, WORK_SLACK};

/// Why a pickle could not be interpreted. The caller adds the file name.
#[derive(Debug)]
pub(crate) enum PickleError {
    /// The stream ended early or holds bytes no pickle writer produces.
    Corrupt(String),
    /// A global outside the allow-list (`module.name`).
    Forbidden(String),
    /// A valid pickle feature this reader does not handle.
    Unsupported(String),
    /// The pickle asks for more memory or work than its size allows, or an allocation failed.
    TooLarge(String),
}

type PResult<T> = Result<T, PickleError>;

fn corrupt<T>(msg: impl Into<String>) -> PResult<T> {
    Err(PickleError::Corrupt(msg.into()))
}

/// The element type of a `torch.*Storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StorageKind {
    /// A candle dtype with the same byte layout.
    Dtype(DType),
    /// `BoolStorage`: one byte per element, read as `U8`.
    Bool,
    /// `CharStorage` (int8): no candle dtype holds it.
    I8,
}

impl StorageKind {
    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::Dtype(DType::F32),
            "DoubleStorage" => Self::Dtype(DType::F64),
            "HalfStorage" => Self::Dtype(DType::F16),
            "BFloat16Storage" => Self::Dtype(DType::BF16),
            "LongStorage" => Self::Dtype(DType::I64),
            "IntStorage" => Self::Dtype(DType::I32),
            "ShortStorage" => Self::Dtype(DType::I16),
            "ByteStorage" => Self::Dtype(DType::U8),
            "BoolStorage" => Self::Bool,
            "CharStorage" => Self::I8,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub(crate) fn element_size(self) -> usize {
        match self {
            Self::Dtype(d) => d.size_in_bytes(),
            Self::Bool | Self::I8 => 1,
        }
    }
}

/// The storage a tensor views, as the persistent id names it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StorageRef {
    /// The key of the storage's bytes (zip: `data/<key>`; legacy: its entry in the trailing data).
    pub key: Rc<str>,
    /// Element type.
    pub kind: StorageKind,
    /// Legacy storage views: offset in elements into the root storage.
    pub view_offset: usize,
}

/// A tensor as the pickle describes it: a strided view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorRef {
    pub storage: StorageRef,
    /// Offset in elements into the storage.
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

/// The allow-listed globals.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    RebuildFromTypeV2,
    /// `torch.Tensor` / `torch.nn.parameter.Parameter`, only as the type argument of `_rebuild_from_type_v2`.
    TensorType,
    Storage(StorageKind),
    CodecsEncode,
}

impl Global {
    fn resolve(module: &str, name: &str) -> PResult<Self> {
        let g = match (module, name) {
            ("collections", "OrderedDict") => Self::OrderedDict,
            ("torch._utils", "_rebuild_tensor") => Self::RebuildTensor,
            ("torch._utils", "_rebuild_tensor_v2") => Self::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter") => Self::RebuildParameter,
            ("torch._utils", "_rebuild_parameter_with_state") => Self::RebuildParameterWithState,
            ("torch._tensor", "_rebuild_from_type_v2") => Self::RebuildFromTypeV2,
            ("torch", "Tensor") | ("torch.nn.parameter", "Parameter") => Self::TensorType,
            ("_codecs", "encode") => Self::CodecsEncode,
            ("torch", storage) => match StorageKind::from_class(storage) {
                Some(kind) => Self::Storage(kind),
                None => return Err(PickleError::Forbidden(format!("{module}.{name}"))),
            },
            _ => return Err(PickleError::Forbidden(format!("{module}.{name}"))),
        };
        Ok(g)
    }

    /// Whether this global rebuilds a tensor or parameter from its arguments.
    fn rebuilds_a_tensor(&self) -> bool {
        matches!(
            self,
            Self::RebuildTensor
                | Self::RebuildTensorV2
                | Self::RebuildParameter
                | Self::RebuildParameterWithState
        )
    }
}

/// A vector of values that is dropped with a loop instead of recursion: a pickle can nest containers a
/// million deep, and a recursive drop would overflow the stack.
#[derive(Debug, Default)]
pub(crate) struct Values(Vec<Value>);

impl Drop for Values {
    fn drop(&mut self) {
        let mut pending = std::mem::take(&mut self.0);
        while let Some(v) = pending.pop() {
            v.release_into(&mut pending);
        }
    }
}

impl Deref for Values {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        &self.0
    }
}

/// A dict key this reader can compare: Python compares other keys (tuples, floats) too, but no checkpoint
/// this reader loads repeats one, so they are kept in order without merging.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum DictKey {
    Str(Rc<str>),
    Int(i64),
}

/// An insertion-ordered dict whose string and int keys are indexed, so a repeated key overwrites its entry
/// in constant time (Python semantics) and a pickle of n items costs O(n), not O(n²).
#[derive(Debug, Default)]
pub(crate) struct Dict {
    /// Keys and values alternating: `k0, v0, k1, v1, ...`.
    entries: Values,
    index: HashMap<DictKey, usize>,
}

impl Dict {
    fn insert(&mut self, k: Value, v: Value) {
        let key = match &k {
            Value::Str(s) => Some(DictKey::Str(s.clone())),
            Value::Int(i) => Some(DictKey::Int(*i)),
            _ => None,
        };
        if let Some(key) = key {
            if let Some(&at) = self.index.get(&key) {
                self.entries.0[2 * at + 1] = v;
                return;
            }
            self.index.insert(key, self.entries.0.len() / 2);
        }
        self.entries.0.push(k);
        self.entries.0.push(v);
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.0.len() / 2
    }

    /// True when the dict has no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.0.is_empty()
    }

    /// The `(key, value)` pairs in insertion order.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&Value, &Value)> {
        self.entries.0.chunks_exact(2).map(|p| (&p[0], &p[1]))
    }

    /// The value under the string key `key`.
    pub(crate) fn get_str(&self, key: &str) -> Option<&Value> {
        let at = *self.index.get(&DictKey::Str(Rc::from(key)))?;
        Some(&self.entries.0[2 * at + 1])
    }
}

/// A shared, mutable container (Python lists and dicts are references: the memo may hand out the same one
/// twice).
pub(crate) type Shared<T> = Rc<RefCell<T>>;

/// A Python value built from a pickle. Cloning is cheap: everything larger than a number is shared.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in 64 bits, as little-endian two's-complement bytes.
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Values>),
    List(Shared<Values>),
    Dict(Shared<Dict>),
    Global(Global),
    Storage(StorageRef),
    Tensor(Rc<TensorRef>),
}

impl Value {
    /// A short description for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "class",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }

    fn as_usize(&self, what: &str) -> PResult<usize> {
        match self {
            Value::Int(i) if *i >= 0 => Ok(*i as usize),
            other => corrupt(format!(
                "{what}: expected a non-negative int, found {}",
                other.kind()
            )),
        }
    }

    /// The string of a `str` (or Python-2 `str` read as bytes).
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Moves the children of a container nobody else holds into `pending`, so that dropping `self`
    /// afterwards is shallow.
    fn release_into(self, pending: &mut Vec<Value>) {
        match self {
            Value::Tuple(t) => {
                if let Ok(mut t) = Rc::try_unwrap(t) {
                    pending.append(&mut t.0);
                }
            }
            Value::List(l) => {
                if let Ok(l) = Rc::try_unwrap(l) {
                    pending.append(&mut l.into_inner().0);
                }
            }
            Value::Dict(d) => {
                if let Ok(d) = Rc::try_unwrap(d) {
                    pending.append(&mut d.into_inner().entries.0);
                }
            }
            _ => {}
        }
    }
}

/// Every list and dict a pickle built. Dropping it empties them all: a pickle can make a list contain
/// itself, a cycle that reference counting alone would never free.
#[derive(Default)]
struct Containers(Vec<Value>);

impl Drop for Containers {
    fn drop(&mut self) {
        for c in &self.0 {
            match c {
                Value::List(l) => {
                    let items = std::mem::take(&mut *l.borrow_mut());
                    drop(items);
                }
                Value::Dict(d) => {
                    let dict = std::mem::take(&mut *d.borrow_mut());
                    drop(dict);
                }
                _ => {}
            }
        }
    }
}

/// What [`load`] built: the root value, valid while this lives (its lists and dicts are emptied when it
/// is dropped).
pub(crate) struct Pickled {
    /// The value the pickle returned.
    pub root: Value,
    _containers: Containers,
}

/// Resolves persistent ids (`BINPERSID`) into storages; the format (zip or legacy) decides the layout.
pub(crate) type PersistentLoad<'a> = dyn FnMut(Value) -> PResult<Value> + 'a;

/// The bytes a pickle is read from, and how many of them are left: every length the pickle declares is
/// checked against that count before anything is allocated.
pub(crate) struct Input<R> {
    r: R,
    left: u64,
}

impl<R: Read> Input<R> {
    /// Reads from `r`, which holds at most `left` more bytes (the rest of a file or buffer).
    pub(crate) fn new(r: R, left: u64) -> Self {
        Input { r, left }
    }

    /// The bytes not read yet (as far as the input's length is known).
    pub(crate) fn left(&self) -> u64 {
        self.left
    }

    fn ended<T>(&self, wanted: u64, what: &str) -> PResult<T> {
        corrupt(format!(
            "unexpected end of data: {what} needs {wanted} bytes, {} are left",
            self.left
        ))
    }

    /// `n` bytes, refused before any allocation when the input cannot hold them.
    fn bytes(&mut self, n: u64, what: &str) -> PResult<Vec<u8>> {
        if n > self.left {
            return self.ended(n, what);
        }
        let mut buf = bounds::try_with_capacity(n as usize).map_err(|e| {
            PickleError::TooLarge(format!("cannot allocate {n} bytes for {what}: {e}"))
        })?;
        let got = (&mut self.r)
            .take(n)
            .read_to_end(&mut buf)
            .map_err(|e| PickleError::Corrupt(e.to_string()))?;
        self.left -= got as u64;
        if got as u64 != n {
            return self.ended(n, what);
        }
        Ok(buf)
    }

    fn array<const N: usize>(&mut self, what: &str) -> PResult<[u8; N]> {
        if (N as u64) > self.left {
            return self.ended(N as u64, what);
        }
        let mut a = [0u8; N];
        match self.r.read_exact(&mut a) {
            Ok(()) => {
                self.left -= N as u64;
                Ok(a)
            }
            Err(_) => {
                self.left = 0;
                self.ended(N as u64, what)
            }
        }
    }

    fn u8(&mut self, what: &str) -> PResult<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A length field of `N` bytes (little-endian), as the number of bytes that follow.
    fn len<const N: usize>(&mut self, what: &str) -> PResult<u64> {
        let a = self.array::<N>(what)?;
        let mut wide = [0u8; 8];
        wide[..N].copy_from_slice(&a);
        Ok(u64::from_le_bytes(wide))
    }

    /// A protocol-0 text argument, up to its newline.
    fn line(&mut self, what: &str) -> PResult<String> {
        let mut out = Vec::new();
        loop {
            let b = self.u8(what)?;
            if b == b'\n' {
                break;
            }
            out.push(b);
            if out.len() > 1 << 16 {
                return corrupt(format!("{what}: text line longer than 64 KiB"));
            }
        }
        if out.last() == Some(&b'\r') {
            out.pop();
        }
        String::from_utf8(out).or_else(|_| corrupt(format!("{what}: text is not UTF-8")))
    }
}

/// Runs one pickle from `input` to its STOP opcode and returns the value it built.
pub(crate) fn load<R: Read>(
    input: &mut Input<R>,
    persistent_load: &mut PersistentLoad<'_>,
) -> PResult<Pickled> {
    let mut m = Machine {
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        containers: Containers::default(),
        work: Budget::new(
            input
                .left()
                .saturating_mul(WORK_PER_BYTE)
                .saturating_add(WORK_SLACK),
        ),
    };
    let root = m.run(input, persistent_load)?;
    Ok(Pickled {
        root,
        _containers: std::mem::take(&mut m.containers),
    })
}

struct Machine {
    stack: Vec<Value>,
    /// Stack positions of the MARKs, innermost last.
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    containers: Containers,
    /// Values copied so far may not exceed a multiple of the pickle's size.
    work: Budget,
}

/// Python 2 `str` objects arrive as bytes; torch.load decodes them as UTF-8 (falling back to Latin-1 here).
fn py2_str(bytes: Vec<u8>) -> Value {
    match String::from_utf8(bytes) {
        Ok(s) => Value::Str(s.into()),
        Err(e) => Value::Str(
            e.into_bytes()
                .iter()
                .map(|&b| b as char)
                .collect::<String>()
                .into(),
        ),
    }
}

/// Little-endian two's-complement bytes to an int (BigInt when it does not fit in i64).
fn long_from_bytes(bytes: Vec<u8>) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() <= 8 {
        let negative = bytes[bytes.len() - 1] & 0x80 != 0;
        let mut a = [if negative { 0xff } else { 0 }; 8];
        a[..bytes.len()].copy_from_slice(&bytes);
        Value::Int(i64::from_le_bytes(a))
    } else {
        Value::BigInt(bytes.into())
    }
}

/// The body of a protocol-0 `STRING` argument: a quoted Python literal with backslash escapes.
fn unquote(line: &str) -> PResult<Vec<u8>> {
    let bytes = line.as_bytes();
    if bytes.len() < 2
        || bytes[0] != bytes[bytes.len() - 1]
        || !(bytes[0] == b'\'' || bytes[0] == b'"')
    {
        return corrupt("STRING argument is not quoted");
    }
    let body = &bytes[1..bytes.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'\\' || i + 1 == body.len() {
            out.push(body[i]);
            i += 1;
            continue;
        }
        let c = body[i + 1];
        i += 2;
        match c {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'\\' | b'\'' | b'"' => out.push(c),
            b'x' if i + 2 <= body.len() => {
                let hex = std::str::from_utf8(&body[i..i + 2]).unwrap_or("zz");
                out.push(
                    u8::from_str_radix(hex, 16).or_else(|_| corrupt("bad \\x escape in STRING"))?,
                );
                i += 2;
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

impl Machine {
    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    /// The stack position where the innermost MARK's frame starts.
    fn frame_start(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> PResult<Value> {
        if self.stack.len() <= self.frame_start() {
            return if self.marks.is_empty() {
                corrupt("pop from an empty stack")
            } else {
                corrupt("unexpected MARK on the stack")
            };
        }
        Ok(self.stack.pop().expect("checked length"))
    }

    fn top(&mut self) -> PResult<&mut Value> {
        if self.stack.len() <= self.frame_start() {
            return corrupt("no value on top of the stack");
        }
        Ok(self.stack.last_mut().expect("checked length"))
    }

    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let Some(pos) = self.marks.pop() else {
            return corrupt("MARK not found");
        };
        Ok(self.stack.split_off(pos))
    }

    /// Charges `n` copied values to the work budget.
    fn spend(&mut self, n: usize, what: &str) -> PResult<()> {
        if self.work.take(n as u64) {
            Ok(())
        } else {
            Err(PickleError::TooLarge(format!(
                "{what}: the pickle copies more values than its size allows (a pickle bomb)"
            )))
        }
    }

    fn new_list(&mut self, items: Vec<Value>) -> Value {
        let l = Value::List(Rc::new(RefCell::new(Values(items))));
        self.containers.0.push(l.clone());
        l
    }

    fn new_dict(&mut self) -> Value {
        let d = Value::Dict(Rc::new(RefCell::new(Dict::default())));
        self.containers.0.push(d.clone());
        d
    }

    fn memo_get(&mut self, id: u64) -> PResult<()> {
        match self.memo.get(&id) {
            Some(v) => {
                let v = v.clone();
                self.push(v);
                Ok(())
            }
            None => corrupt(format!("memo entry {id} read before it was written")),
        }
    }

    fn memo_put(&mut self, id: u64) -> PResult<()> {
        let v = self.top()?.clone();
        self.memo.insert(id, v);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> PResult<()> {
        if items.len() % 2 != 0 {
            return corrupt("SETITEMS with an odd number of values");
        }
        let Value::Dict(d) = self.top()? else {
            return corrupt("SETITEM(S) on something that is not a dict");
        };
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.insert(k, v);
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> PResult<()> {
        match self.top()? {
            Value::List(l) => {
                l.borrow_mut().0.extend(items);
                Ok(())
            }
            other => corrupt(format!("APPEND(S) on a {}", other.kind())),
        }
    }

    fn run<R: Read>(
        &mut self,
        r: &mut Input<R>,
        persistent_load: &mut PersistentLoad<'_>,
    ) -> PResult<Value> {
        loop {
            let op = r.u8("opcode")?;
            match op {
                // Framing and protocol.
                0x80 => {
                    let proto = r.u8("PROTO")?;
                    if proto > 5 {
                        return Err(PickleError::Unsupported(format!("pickle protocol {proto}")));
                    }
                }
                0x95 => {
                    r.array::<8>("FRAME")?;
                }
                b'.' => return self.pop(),
                // Stack manipulation.
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    if self.stack.len() > self.frame_start() {
                        self.stack.pop();
                    } else if self.marks.pop().is_none() {
                        return corrupt("POP on an empty stack");
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v);
                }
                // Constants and numbers.
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'I' => {
                    let line = r.line("INT")?;
                    let v = match line.as_str() {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => Value::Int(s.parse().or_else(|_| corrupt(format!("bad INT `{s}`")))?),
                    };
                    self.push(v);
                }
                b'J' => self.push(Value::Int(i32::from_le_bytes(r.array("BININT")?) as i64)),
                b'K' => self.push(Value::Int(r.u8("BININT1")? as i64)),
                b'M' => self.push(Value::Int(u16::from_le_bytes(r.array("BININT2")?) as i64)),
                b'L' => {
                    let line = r.line("LONG")?;
                    let s = line.trim_end_matches('L');
                    match s.parse::<i64>() {
                        Ok(i) => self.push(Value::Int(i)),
                        Err(_) => {
                            return Err(PickleError::Unsupported(format!(
                                "text LONG `{s}` beyond 64 bits"
                            )))
                        }
                    }
                }
                0x8a => {
                    let n = r.len::<1>("LONG1")?;
                    let bytes = r.bytes(n, "LONG1")?;
                    self.push(long_from_bytes(bytes));
                }
                0x8b => {
                    let n = i32::from_le_bytes(r.array("LONG4")?);
                    if n < 0 {
                        return corrupt("LONG4 with a negative length");
                    }
                    let bytes = r.bytes(n as u64, "LONG4")?;
                    self.push(long_from_bytes(bytes));
                }
                b'F' => {
                    let line = r.line("FLOAT")?;
                    self.push(Value::Float(
                        line.parse()
                            .or_else(|_| corrupt(format!("bad FLOAT `{line}`")))?,
                    ));
                }
                b'G' => self.push(Value::Float(f64::from_be_bytes(r.array("BINFLOAT")?))),
                // Strings and bytes.
                b'S' => {
                    let line = r.line("STRING")?;
                    let bytes = unquote(&line)?;
                    self.push(py2_str(bytes));
                }
                b'T' => {
                    let n = i32::from_le_bytes(r.array("BINSTRING")?);
                    if n < 0 {
                        return corrupt("BINSTRING with a negative length");
                    }
                    let bytes = r.bytes(n as u64, "BINSTRING")?;
                    self.push(py2_str(bytes));
                }
                b'U' => {
                    let n = r.len::<1>("SHORT_BINSTRING")?;
                    let bytes = r.bytes(n, "SHORT_BINSTRING")?;
                    self.push(py2_str(bytes));
                }
                b'V' => {
                    let line = r.line("UNICODE")?;
                    self.push(Value::Str(line.into()));
                }
                b'X' | 0x8c | 0x8d => {
                    let (n, what) = match op {
                        b'X' => (r.len::<4>("BINUNICODE")?, "BINUNICODE"),
                        0x8c => (r.len::<1>("SHORT_BINUNICODE")?, "SHORT_BINUNICODE"),
                        _ => (r.len::<8>("BINUNICODE8")?, "BINUNICODE8"),
                    };
                    let bytes = r.bytes(n, what)?;
                    let s = String::from_utf8(bytes)
                        .or_else(|_| corrupt(format!("{what} string is not UTF-8")))?;
                    self.push(Value::Str(s.into()));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let (n, what) = match op {
                        b'B' => (r.len::<4>("BINBYTES")?, "BINBYTES"),
                        b'C' => (r.len::<1>("SHORT_BINBYTES")?, "SHORT_BINBYTES"),
                        0x8e => (r.len::<8>("BINBYTES8")?, "BINBYTES8"),
                        _ => (r.len::<8>("BYTEARRAY8")?, "BYTEARRAY8"),
                    };
                    let bytes = r.bytes(n, what)?;
                    self.push(Value::Bytes(bytes.into()));
                }
                // Containers.
                b')' => self.push(Value::Tuple(Rc::default())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(Rc::new(Values(items))));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < self.frame_start() + n {
                        return corrupt("TUPLE1/2/3 on a short stack");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Value::Tuple(Rc::new(Values(items))));
                }
                b']' => {
                    let l = self.new_list(Vec::new());
                    self.push(l);
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let l = self.new_list(items);
                    self.push(l);
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'}' => {
                    let d = self.new_dict();
                    self.push(d);
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = self.new_dict();
                    self.push(d);
                    self.set_items(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                // Sets become lists: only their contents matter here.
                0x8f => {
                    let l = self.new_list(Vec::new());
                    self.push(l);
                }
                0x90 => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    let l = self.new_list(items);
                    self.push(l);
                }
                // Memo.
                b'p' => {
                    let line = r.line("PUT")?;
                    let id = line
                        .parse()
                        .or_else(|_| corrupt(format!("bad PUT id `{line}`")))?;
                    self.memo_put(id)?;
                }
                b'q' => {
                    let id = r.u8("BINPUT")? as u64;
                    self.memo_put(id)?;
                }
                b'r' => {
                    let id = u32::from_le_bytes(r.array("LONG_BINPUT")?) as u64;
                    self.memo_put(id)?;
                }
                0x94 => {
                    let id = self.memo.len() as u64;
                    self.memo_put(id)?;
                }
                b'g' => {
                    let line = r.line("GET")?;
                    let id = line
                        .parse()
                        .or_else(|_| corrupt(format!("bad GET id `{line}`")))?;
                    self.memo_get(id)?;
                }
                b'h' => {
                    let id = r.u8("BINGET")? as u64;
                    self.memo_get(id)?;
                }
                b'j' => {
                    let id = u32::from_le_bytes(r.array("LONG_BINGET")?) as u64;
                    self.memo_get(id)?;
                }
                // Globals and calls: only the allow-list, interpreted, never executed.
                b'c' => {
                    let module = r.line("GLOBAL module")?;
                    let name = r.line("GLOBAL name")?;
                    self.push(Value::Global(Global::resolve(&module, &name)?));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.as_str(), name.as_str()) {
                        (Some(m), Some(n)) => self.push(Value::Global(Global::resolve(m, n)?)),
                        _ => return corrupt("STACK_GLOBAL without string operands"),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.call(callable, args)?;
                    self.push(v);
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    if let Value::Dict(d) = &kwargs {
                        if !d.borrow().is_empty() {
                            return Err(PickleError::Unsupported(
                                "NEWOBJ_EX with keyword arguments".into(),
                            ));
                        }
                    }
                    let v = self.call(callable, args)?;
                    self.push(v);
                }
                b'b' => {
                    let _state = self.pop()?;
                    // BUILD sets attributes: on an OrderedDict (its `_metadata`) or a rebuilt tensor they do
                    // not change the values we read, so the state is dropped.
                    match self.top()? {
                        Value::Dict(_) | Value::Tensor(_) => {}
                        other => return corrupt(format!("BUILD on a {}", other.kind())),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_load(pid)?;
                    self.push(v);
                }
                b'P' => {
                    return Err(PickleError::Unsupported(
                        "text persistent ids (protocol 0)".into(),
                    ))
                }
                b'i' | b'o' => {
                    return Err(PickleError::Forbidden(
                        "INST/OBJ opcodes (instantiating an arbitrary class)".into(),
                    ))
                }
                0x82..=0x84 => {
                    return Err(PickleError::Forbidden(
                        "the copyreg extension registry".into(),
                    ))
                }
                0x97 | 0x98 => {
                    return Err(PickleError::Unsupported(
                        "out-of-band buffers (protocol 5)".into(),
                    ))
                }
                other => return corrupt(format!("unknown opcode 0x{other:02x}")),
            }
        }
    }

    /// The ints of a tuple or list (a tensor's size or stride), charged to the work budget.
    fn usizes(&mut self, v: &Value, what: &str) -> PResult<Vec<usize>> {
        match v {
            Value::Tuple(items) => {
                self.spend(items.len(), what)?;
                items.iter().map(|v| v.as_usize(what)).collect()
            }
            Value::List(items) => {
                let items = items.borrow();
                self.spend(items.len(), what)?;
                items.iter().map(|v| v.as_usize(what)).collect()
            }
            other => corrupt(format!(
                "{what}: expected a tuple of ints, found {}",
                other.kind()
            )),
        }
    }

    /// `_rebuild_tensor(storage, storage_offset, size, stride, ...)`.
    fn rebuild_tensor(&mut self, args: &[Value]) -> PResult<Value> {
        if args.len() < 4 {
            return corrupt(format!("_rebuild_tensor with {} arguments", args.len()));
        }
        let Value::Storage(storage) = &args[0] else {
            return corrupt(format!(
                "_rebuild_tensor on a {}, not a storage",
                args[0].kind()
            ));
        };
        let offset = args[1].as_usize("storage offset")?;
        let size = self.usizes(&args[2], "tensor size")?;
        let stride = self.usizes(&args[3], "tensor stride")?;
        if size.len() != stride.len() {
            return corrupt(format!(
                "tensor size {size:?} and stride {stride:?} differ in rank"
            ));
        }
        Ok(Value::Tensor(Rc::new(TensorRef {
            storage: storage.clone(),
            offset,
            size,
            stride,
        })))
    }

    /// Interprets a call of an allow-listed global.
    fn call(&mut self, callable: Value, args: Value) -> PResult<Value> {
        let Value::Global(g) = callable else {
            return corrupt(format!(
                "call of a {}, not a class or function",
                callable.kind()
            ));
        };
        match g {
            Global::OrderedDict => {
                let args = tuple_args(args, "OrderedDict")?;
                let dict = self.new_dict();
                // Python 2 pickles `OrderedDict([[k, v], ...])`; Python 3 an empty call plus SETITEMS.
                if let Some(first) = args.first() {
                    let pairs: Vec<Value> = match first {
                        Value::List(l) => l.borrow().to_vec(),
                        Value::Tuple(t) => t.to_vec(),
                        other => return corrupt(format!("OrderedDict({})", other.kind())),
                    };
                    self.spend(pairs.len(), "OrderedDict")?;
                    let Value::Dict(d) = &dict else {
                        unreachable!("new_dict makes a dict")
                    };
                    for pair in pairs {
                        let kv: Vec<Value> = match &pair {
                            Value::List(l) => l.borrow().to_vec(),
                            Value::Tuple(t) => t.to_vec(),
                            other => {
                                return corrupt(format!("OrderedDict item is a {}", other.kind()))
                            }
                        };
                        self.spend(kv.len(), "OrderedDict")?;
                        let [k, v]: [Value; 2] = kv
                            .try_into()
                            .or_else(|_| corrupt("OrderedDict item is not a pair"))?;
                        d.borrow_mut().insert(k, v);
                    }
                }
                Ok(dict)
            }
            Global::RebuildTensor | Global::RebuildTensorV2 => {
                let args = tuple_args(args, "_rebuild_tensor")?;
                self.rebuild_tensor(&args)
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                let args = tuple_args(args, "_rebuild_parameter")?;
                match args.first() {
                    Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                    _ => corrupt("_rebuild_parameter without a tensor"),
                }
            }
            Global::RebuildFromTypeV2 => {
                // (func, new_type, args, state): only the plain tensor/parameter types, and only a tensor
                // rebuild as func (never this function again, so the interpretation cannot recurse).
                let args = tuple_args(args, "_rebuild_from_type_v2")?;
                let (Some(func), Some(ty), Some(inner)) = (args.first(), args.get(1), args.get(2))
                else {
                    return corrupt("_rebuild_from_type_v2 with too few arguments");
                };
                if !matches!(ty, Value::Global(Global::TensorType)) {
                    return Err(PickleError::Unsupported("tensor subclasses".into()));
                }
                match func {
                    Value::Global(g) if g.rebuilds_a_tensor() => {
                        self.call(func.clone(), inner.clone())
                    }
                    other => corrupt(format!(
                        "_rebuild_from_type_v2 of a {}, not a tensor rebuild",
                        other.kind()
                    )),
                }
            }
            Global::CodecsEncode => {
                let args = tuple_args(args, "_codecs.encode")?;
                match args.first() {
                    // Python 3 pickles `bytes` at protocol 2 as encode(latin-1 text, "latin1").
                    Some(Value::Str(s)) => {
                        self.spend(s.len(), "_codecs.encode")?;
                        Ok(Value::Bytes(s.chars().map(|c| c as u32 as u8).collect()))
                    }
                    _ => corrupt("_codecs.encode without a string"),
                }
            }
            Global::TensorType => Err(PickleError::Unsupported(
                "constructing torch.Tensor directly".into(),
            )),
            Global::Storage(_) => Err(PickleError::Unsupported(
                "constructing a storage directly".into(),
            )),
        }
    }
}

fn tuple_args(args: Value, what: &str) -> PResult<Rc<Values>> {
    match args {
        Value::Tuple(items) => Ok(items),
        other => corrupt(format!(
            "{what}: arguments are a {}, not a tuple",
            other.kind()
        )),
    }
}

/// Parses a persistent id `('storage', StorageType, key, location, numel[, view_metadata])`; the zip
/// format has five fields, the legacy format six (the last `None` or `(view_key, offset, size)`).
pub(crate) fn storage_from_pid(pid: Value) -> PResult<(StorageRef, usize)> {
    let Value::Tuple(items) = pid else {
        return corrupt(format!("persistent id is a {}, not a tuple", pid.kind()));
    };
    if items.first().and_then(Value::as_str) != Some("storage") {
        let first = items.first().and_then(Value::as_str).unwrap_or("?");
        let shown: String = first.chars().take(40).collect();
        return Err(PickleError::Unsupported(format!(
            "persistent id `{shown:?}` (only storages are supported)"
        )));
    }
    if items.len() != 5 && items.len() != 6 {
        return corrupt(format!("storage persistent id with {} fields", items.len()));
    }
    let Value::Global(Global::Storage(kind)) = &items[1] else {
        return corrupt("storage persistent id without a storage type");
    };
    let Value::Str(key) = &items[2] else {
        return corrupt("storage key is not a string");
    };
    let numel = items[4].as_usize("storage size")?;
    let mut view_offset = 0;
    if let Some(Value::Tuple(view)) = items.get(5) {
        if view.len() != 3 {
            return corrupt("storage view metadata is not (key, offset, size)");
        }
        view_offset = view[1].as_usize("storage view offset")?;
    }
    match kind {
        StorageKind::I8 => Err(PickleError::Unsupported(
            "int8 (CharStorage) tensors".into(),
        )),
        _ => Ok((
            StorageRef {
                key: key.clone(),
                kind: *kind,
                view_offset,
            },
            numel,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> PResult<Pickled> {
        let mut input = Input::new(bytes, bytes.len() as u64);
        load(&mut input, &mut |pid| {
            Ok(Value::Storage(storage_from_pid(pid)?.0))
        })
    }

    fn detail(r: PResult<Pickled>) -> String {
        match r {
            Err(PickleError::Corrupt(d) | PickleError::TooLarge(d)) => d,
            Err(e) => panic!("not a corrupt/too-large error: {e:?}"),
            Ok(p) => panic!("read as {}", p.root.kind()),
        }
    }

    #[test]
    fn refuses_unknown_globals() {
        let err = run(b"cos\nsystem\nX\x04\x00\x00\x00echo\x85R.")
            .err()
            .unwrap();
        assert!(
            matches!(err, PickleError::Forbidden(ref g) if g == "os.system"),
            "{err:?}"
        );
        let err = run(b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.")
            .err()
            .unwrap();
        assert!(
            matches!(err, PickleError::Forbidden(ref g) if g == "builtins.eval"),
            "{err:?}"
        );
    }

    #[test]
    fn reads_big_longs_and_py2_ordered_dicts() {
        // The legacy magic number is a 10-byte LONG1.
        let v = run(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.").unwrap();
        assert!(matches!(v.root, Value::BigInt(ref b) if b.len() == 10));
        let v = run(b"\x80\x02\x8a\x02\xe9\x03.").unwrap();
        assert!(matches!(v.root, Value::Int(1001)));
        // Python 2: OrderedDict([['a', 1]]) with a SHORT_BINSTRING key.
        let v = run(b"ccollections\nOrderedDict\n]](U\x01aK\x01ea\x85R.").unwrap();
        let Value::Dict(d) = &v.root else {
            panic!("not a dict")
        };
        assert_eq!(d.borrow().pairs().next().unwrap().0.as_str(), Some("a"));
    }

    #[test]
    fn truncated_stream_is_corrupt() {
        assert!(matches!(
            run(b"\x80\x02X\x10\x00\x00\x00abc"),
            Err(PickleError::Corrupt(_))
        ));
        assert!(matches!(run(b"\x80\x02}"), Err(PickleError::Corrupt(_))));
    }

    #[test]
    fn a_declared_length_beyond_the_input_is_refused_before_allocating() {
        // BINUNICODE8 / BINBYTES8 / BYTEARRAY8 claiming 2^62 bytes, BINBYTES claiming 4 GiB - 1, LONG4 2 GiB - 1.
        for (op, len) in [
            (0x8d, &(1u64 << 62).to_le_bytes()[..]),
            (0x8e, &(1u64 << 62).to_le_bytes()[..]),
            (0x96, &u64::MAX.to_le_bytes()[..]),
            (b'B', &u32::MAX.to_le_bytes()[..]),
            (b'T', &i32::MAX.to_le_bytes()[..]),
            (0x8b, &i32::MAX.to_le_bytes()[..]),
        ] {
            let mut bytes = vec![0x80, 0x04, op];
            bytes.extend_from_slice(len);
            bytes.extend_from_slice(b"abc.");
            let d = detail(run(&bytes));
            assert!(
                d.starts_with("unexpected end of data:") && d.ends_with("bytes, 4 are left"),
                "opcode 0x{op:02x}: {d}"
            );
        }
    }

    #[test]
    fn duplicated_values_are_shared_not_copied() {
        // A tuple of two copies of the previous one, 60 times over: 2^60 leaves if copied.
        let mut bytes = b"\x80\x04K\x01".to_vec();
        for _ in 0..60 {
            bytes.extend_from_slice(b"2\x86");
        }
        bytes.push(b'.');
        let v = run(&bytes).unwrap();
        assert!(matches!(v.root, Value::Tuple(ref t) if t.len() == 2));
        // The same through the memo: PUT 0, then GET 0 twice and TUPLE2, 60 times.
        let mut bytes = b"\x80\x04K\x01".to_vec();
        for _ in 0..60 {
            bytes.extend_from_slice(b"q\x00h\x00\x86");
        }
        bytes.push(b'.');
        assert!(run(&bytes).is_ok());
    }

    #[test]
    fn a_million_nested_tuples_drop_without_overflowing_the_stack() {
        let mut bytes = b"\x80\x04)".to_vec();
        bytes.resize(bytes.len() + 1_000_000, 0x85);
        bytes.push(b'.');
        let v = run(&bytes).unwrap();
        drop(v);
        // The same left on the stack by an error, and a deep chain of lists.
        bytes.pop();
        assert!(run(&bytes).is_err());
        let mut lists = b"\x80\x04]".to_vec();
        for _ in 0..300_000 {
            lists.extend_from_slice(b"]q\x00a0h\x00");
        }
        lists.push(b'.');
        assert!(run(&lists).is_ok());
    }

    #[test]
    fn a_list_that_contains_itself_is_emptied_on_drop() {
        let v = run(b"\x80\x04]q\x00h\x00a.").unwrap();
        let Value::List(l) = v.root.clone() else {
            panic!("not a list")
        };
        assert_eq!(l.borrow().len(), 1);
        drop(v);
        assert_eq!(l.borrow().len(), 0, "the cycle was broken");
        assert_eq!(Rc::strong_count(&l), 1);
    }

    #[test]
    fn reusing_a_memoised_list_in_many_calls_runs_out_of_budget() {
        // OrderedDict(list of 2000 pairs) called 20000 times through the memo: 4e7 copies from 60 KB.
        let mut bytes = b"\x80\x04ccollections\nOrderedDict\nq\x00](".to_vec();
        for i in 0..2000u32 {
            bytes.push(b'J');
            bytes.extend_from_slice(&i.to_le_bytes());
            bytes.extend_from_slice(b"K\x00\x86");
        }
        bytes.extend_from_slice(b"eq\x01(");
        for _ in 0..20000 {
            bytes.extend_from_slice(b"h\x00h\x01\x85R0");
        }
        bytes.extend_from_slice(b"1N.");
        let d = detail(run(&bytes));
        assert!(d.contains("a pickle bomb"), "{d}");
    }

    #[test]
    fn many_repeated_keys_cost_linear_time() {
        // 200000 SETITEMs of 2000 distinct keys: quadratic with a scan per insert, instant with the index.
        let mut bytes = b"\x80\x04}".to_vec();
        for i in 0..200_000u32 {
            bytes.push(b'J');
            bytes.extend_from_slice(&(i % 2000).to_le_bytes());
            bytes.extend_from_slice(b"Ns");
        }
        bytes.push(b'.');
        let start = std::time::Instant::now();
        let v = run(&bytes).unwrap();
        let Value::Dict(d) = &v.root else {
            panic!("not a dict")
        };
        assert_eq!(d.borrow().len(), 2000);
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
    }

    #[test]
    fn marks_and_frames_are_respected() {
        // POP_MARK removes what follows the mark; POP with an empty frame removes the mark (Python).
        let v = run(b"\x80\x04K\x07(K\x01K\x021.").unwrap();
        assert!(matches!(v.root, Value::Int(7)));
        let v = run(b"\x80\x04K\x07(0.").unwrap();
        assert!(matches!(v.root, Value::Int(7)));
        // TUPLE2 may not reach below a mark.
        assert!(detail(run(b"\x80\x04K\x01(K\x02\x86.")).contains("short stack"));
        assert!(detail(run(b"\x80\x04(.")).contains("MARK"));
    }

    #[test]
    fn rebuild_from_type_does_not_recurse() {
        // _rebuild_from_type_v2(_rebuild_from_type_v2, Tensor, args, state) is refused, not interpreted.
        let bytes = b"\x80\x04\x8c\rtorch._tensor\x8c\x15_rebuild_from_type_v2\x93q\x00(h\x00\x8c\x05torch\x8c\x06Tensor\x93)NtR.";
        let d = detail(run(bytes));
        assert!(d.contains("not a tensor rebuild"), "{d}");
    }
}
