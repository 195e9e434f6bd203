//! A safe interpreter for the pickles inside PyTorch checkpoints.
//!
//! It runs the pickle opcodes of protocols 0 to 5 that build plain data (numbers, strings, tuples, lists,
//! dicts, sets) and knows a short allow-list of globals: `collections.OrderedDict`, the
//! `torch._utils._rebuild_*` tensor constructors, the `torch.*Storage` types and `_codecs.encode`. Those
//! are interpreted here, never executed; any other global, and the opcodes that instantiate arbitrary
//! classes (`INST`, `OBJ`, extension registry), are refused with an error naming them. A checkpoint can
//! therefore never run code on load, which is the same guarantee as `torch.load(weights_only=True)`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::rc::Rc;

use candle_core::DType;

/// Why a pickle could not be interpreted. The caller adds the file name.
#[derive(Debug)]
pub(crate) enum PickleError {
    /// The stream ended early or holds bytes no pickle writer produces.
    Corrupt(String),
    /// A global outside the allow-list (`module.name`).
    Forbidden(String),
    /// A valid pickle feature this reader does not handle.
    Unsupported(String),
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
    pub key: String,
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
}

/// A shared, mutable list (Python lists and dicts are references: the memo may hand out the same one twice).
pub(crate) type Shared<T> = Rc<RefCell<T>>;

/// A Python value built from a pickle.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in 64 bits, as little-endian two's-complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Shared<Vec<Value>>),
    Dict(Shared<Vec<(Value, Value)>>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Value {
    fn dict(items: Vec<(Value, Value)>) -> Self {
        Value::Dict(Rc::new(RefCell::new(items)))
    }

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

    fn as_usizes(&self, what: &str) -> PResult<Vec<usize>> {
        match self {
            Value::Tuple(items) => items.iter().map(|v| v.as_usize(what)).collect(),
            Value::List(items) => items.borrow().iter().map(|v| v.as_usize(what)).collect(),
            other => corrupt(format!(
                "{what}: expected a tuple of ints, found {}",
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
}

/// One stack slot: a value or the MARK sentinel.
enum Slot {
    Mark,
    Value(Value),
}

/// Resolves persistent ids (`BINPERSID`) into storages; the format (zip or legacy) decides the layout.
pub(crate) type PersistentLoad<'a> = dyn FnMut(Value) -> PResult<Value> + 'a;

/// Runs one pickle from `r` to its STOP opcode and returns the value it built.
pub(crate) fn load<R: Read>(r: &mut R, persistent_load: &mut PersistentLoad<'_>) -> PResult<Value> {
    let mut m = Machine {
        stack: Vec::new(),
        memo: HashMap::new(),
    };
    m.run(r, persistent_load)
}

struct Machine {
    stack: Vec<Slot>,
    memo: HashMap<u64, Value>,
}

fn read_exact<R: Read>(r: &mut R, n: usize) -> PResult<Vec<u8>> {
    // Grow as data arrives, so a corrupt length cannot make us allocate gigabytes up front.
    let mut buf = Vec::with_capacity(n.min(1 << 20));
    let got = r
        .take(n as u64)
        .read_to_end(&mut buf)
        .map_err(|e| PickleError::Corrupt(e.to_string()))?;
    if got != n {
        return corrupt(format!(
            "unexpected end of data (wanted {n} bytes, got {got})"
        ));
    }
    Ok(buf)
}

fn read_u8<R: Read>(r: &mut R) -> PResult<u8> {
    Ok(read_exact(r, 1)?[0])
}

fn read_le<R: Read, const N: usize>(r: &mut R) -> PResult<[u8; N]> {
    let v = read_exact(r, N)?;
    let mut a = [0u8; N];
    a.copy_from_slice(&v);
    Ok(a)
}

fn read_line<R: Read>(r: &mut R) -> PResult<String> {
    let mut out = Vec::new();
    loop {
        let b = read_u8(r)?;
        if b == b'\n' {
            break;
        }
        out.push(b);
        if out.len() > 1 << 16 {
            return corrupt("text line longer than 64 KiB");
        }
    }
    if out.last() == Some(&b'\r') {
        out.pop();
    }
    String::from_utf8(out).or_else(|_| corrupt("text opcode argument is not UTF-8"))
}

/// Python 2 `str` objects arrive as bytes; torch.load decodes them as UTF-8 (falling back to Latin-1 here).
fn py2_str(bytes: Vec<u8>) -> Value {
    match String::from_utf8(bytes) {
        Ok(s) => Value::Str(s),
        Err(e) => Value::Str(e.into_bytes().iter().map(|&b| b as char).collect()),
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
        Value::BigInt(bytes)
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
        self.stack.push(Slot::Value(v));
    }

    fn pop(&mut self) -> PResult<Value> {
        match self.stack.pop() {
            Some(Slot::Value(v)) => Ok(v),
            Some(Slot::Mark) => corrupt("unexpected MARK on the stack"),
            None => corrupt("pop from an empty stack"),
        }
    }

    fn top(&mut self) -> PResult<&mut Value> {
        match self.stack.last_mut() {
            Some(Slot::Value(v)) => Ok(v),
            _ => corrupt("no value on top of the stack"),
        }
    }

    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let Some(pos) = self.stack.iter().rposition(|s| matches!(s, Slot::Mark)) else {
            return corrupt("MARK not found");
        };
        let items = self
            .stack
            .split_off(pos + 1)
            .into_iter()
            .map(|s| match s {
                Slot::Value(v) => v,
                Slot::Mark => unreachable!("rposition found the last mark"),
            })
            .collect();
        self.stack.pop();
        Ok(items)
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
            // Python semantics: a repeated key overwrites in place.
            if let Some(slot) = d.iter_mut().find(|(old, _)| same_key(old, &k)) {
                slot.1 = v;
            } else {
                d.push((k, v));
            }
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> PResult<()> {
        match self.top()? {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            other => corrupt(format!("APPEND(S) on a {}", other.kind())),
        }
    }

    fn run<R: Read>(
        &mut self,
        r: &mut R,
        persistent_load: &mut PersistentLoad<'_>,
    ) -> PResult<Value> {
        loop {
            let op = read_u8(r)?;
            match op {
                // Framing and protocol.
                0x80 => {
                    let proto = read_u8(r)?;
                    if proto > 5 {
                        return Err(PickleError::Unsupported(format!("pickle protocol {proto}")));
                    }
                }
                0x95 => {
                    read_le::<R, 8>(r)?;
                }
                b'.' => return self.pop(),
                // Stack manipulation.
                b'(' => self.stack.push(Slot::Mark),
                b'0' => {
                    self.stack
                        .pop()
                        .ok_or(PickleError::Corrupt("POP on an empty stack".into()))?;
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
                    let line = read_line(r)?;
                    let v = match line.as_str() {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => Value::Int(s.parse().or_else(|_| corrupt(format!("bad INT `{s}`")))?),
                    };
                    self.push(v);
                }
                b'J' => self.push(Value::Int(i32::from_le_bytes(read_le(r)?) as i64)),
                b'K' => self.push(Value::Int(read_u8(r)? as i64)),
                b'M' => self.push(Value::Int(u16::from_le_bytes(read_le(r)?) as i64)),
                b'L' => {
                    let line = read_line(r)?;
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
                    let n = read_u8(r)? as usize;
                    let bytes = read_exact(r, n)?;
                    self.push(long_from_bytes(bytes));
                }
                0x8b => {
                    let n = i32::from_le_bytes(read_le(r)?);
                    if n < 0 {
                        return corrupt("LONG4 with a negative length");
                    }
                    let bytes = read_exact(r, n as usize)?;
                    self.push(long_from_bytes(bytes));
                }
                b'F' => {
                    let line = read_line(r)?;
                    self.push(Value::Float(
                        line.parse()
                            .or_else(|_| corrupt(format!("bad FLOAT `{line}`")))?,
                    ));
                }
                b'G' => self.push(Value::Float(f64::from_be_bytes(read_le(r)?))),
                // Strings and bytes.
                b'S' => {
                    let line = read_line(r)?;
                    let bytes = unquote(&line)?;
                    self.push(py2_str(bytes));
                }
                b'T' => {
                    let n = i32::from_le_bytes(read_le(r)?);
                    if n < 0 {
                        return corrupt("BINSTRING with a negative length");
                    }
                    let bytes = read_exact(r, n as usize)?;
                    self.push(py2_str(bytes));
                }
                b'U' => {
                    let n = read_u8(r)? as usize;
                    let bytes = read_exact(r, n)?;
                    self.push(py2_str(bytes));
                }
                b'V' => {
                    let line = read_line(r)?;
                    self.push(Value::Str(line));
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => u32::from_le_bytes(read_le(r)?) as usize,
                        0x8c => read_u8(r)? as usize,
                        _ => u64::from_le_bytes(read_le(r)?) as usize,
                    };
                    let bytes = read_exact(r, n)?;
                    let s = String::from_utf8(bytes)
                        .or_else(|_| corrupt("unicode string is not UTF-8"))?;
                    self.push(Value::Str(s));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => u32::from_le_bytes(read_le(r)?) as usize,
                        b'C' => read_u8(r)? as usize,
                        _ => u64::from_le_bytes(read_le(r)?) as usize,
                    };
                    let bytes = read_exact(r, n)?;
                    self.push(Value::Bytes(bytes));
                }
                // Containers.
                b')' => self.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return corrupt("TUPLE1/2/3 on a short stack");
                    }
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(items));
                }
                b']' => self.push(Value::List(Rc::new(RefCell::new(Vec::new())))),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'}' => self.push(Value::dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Value::dict(Vec::new()));
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
                0x8f => self.push(Value::List(Rc::new(RefCell::new(Vec::new())))),
                0x90 => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(Rc::new(RefCell::new(items))));
                }
                // Memo.
                b'p' => {
                    let line = read_line(r)?;
                    let id = line
                        .parse()
                        .or_else(|_| corrupt(format!("bad PUT id `{line}`")))?;
                    self.memo_put(id)?;
                }
                b'q' => {
                    let id = read_u8(r)? as u64;
                    self.memo_put(id)?;
                }
                b'r' => {
                    let id = u32::from_le_bytes(read_le(r)?) as u64;
                    self.memo_put(id)?;
                }
                0x94 => {
                    let id = self.memo.len() as u64;
                    self.memo_put(id)?;
                }
                b'g' => {
                    let line = read_line(r)?;
                    let id = line
                        .parse()
                        .or_else(|_| corrupt(format!("bad GET id `{line}`")))?;
                    self.memo_get(id)?;
                }
                b'h' => {
                    let id = read_u8(r)? as u64;
                    self.memo_get(id)?;
                }
                b'j' => {
                    let id = u32::from_le_bytes(read_le(r)?) as u64;
                    self.memo_get(id)?;
                }
                // Globals and calls: only the allow-list, interpreted, never executed.
                b'c' => {
                    let module = read_line(r)?;
                    let name = read_line(r)?;
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
                    let v = call(callable, args)?;
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
                    let v = call(callable, args)?;
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
}

fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        _ => false,
    }
}

fn tuple_args(args: Value, what: &str) -> PResult<Vec<Value>> {
    match args {
        Value::Tuple(items) => Ok(items),
        other => corrupt(format!(
            "{what}: arguments are a {}, not a tuple",
            other.kind()
        )),
    }
}

/// `_rebuild_tensor(storage, storage_offset, size, stride, ...)`.
fn rebuild_tensor(args: &[Value]) -> PResult<Value> {
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
    let size = args[2].as_usizes("tensor size")?;
    let stride = args[3].as_usizes("tensor stride")?;
    if size.len() != stride.len() {
        return corrupt(format!(
            "tensor size {size:?} and stride {stride:?} differ in rank"
        ));
    }
    Ok(Value::Tensor(TensorRef {
        storage: storage.clone(),
        offset,
        size,
        stride,
    }))
}

/// Interprets a call of an allow-listed global.
fn call(callable: Value, args: Value) -> PResult<Value> {
    let Value::Global(g) = callable else {
        return corrupt(format!(
            "call of a {}, not a class or function",
            callable.kind()
        ));
    };
    match g {
        Global::OrderedDict => {
            let args = tuple_args(args, "OrderedDict")?;
            let mut items = Vec::new();
            // Python 2 pickles `OrderedDict([[k, v], ...])`; Python 3 an empty call plus SETITEMS.
            if let Some(first) = args.first() {
                let pairs: Vec<Value> = match first {
                    Value::List(l) => l.borrow().clone(),
                    Value::Tuple(t) => t.clone(),
                    other => return corrupt(format!("OrderedDict({})", other.kind())),
                };
                for pair in pairs {
                    let kv: Vec<Value> = match pair {
                        Value::List(l) => l.borrow().clone(),
                        Value::Tuple(t) => t,
                        other => return corrupt(format!("OrderedDict item is a {}", other.kind())),
                    };
                    let [k, v]: [Value; 2] = kv
                        .try_into()
                        .or_else(|_| corrupt("OrderedDict item is not a pair"))?;
                    items.push((k, v));
                }
            }
            Ok(Value::dict(items))
        }
        Global::RebuildTensor | Global::RebuildTensorV2 => {
            rebuild_tensor(&tuple_args(args, "_rebuild_tensor")?)
        }
        Global::RebuildParameter | Global::RebuildParameterWithState => {
            let args = tuple_args(args, "_rebuild_parameter")?;
            match args.into_iter().next() {
                Some(t @ Value::Tensor(_)) => Ok(t),
                _ => corrupt("_rebuild_parameter without a tensor"),
            }
        }
        Global::RebuildFromTypeV2 => {
            // (func, new_type, args, state): only the plain tensor/parameter types are accepted.
            let mut args = tuple_args(args, "_rebuild_from_type_v2")?.into_iter();
            let (Some(func), Some(ty), Some(inner)) = (args.next(), args.next(), args.next())
            else {
                return corrupt("_rebuild_from_type_v2 with too few arguments");
            };
            if !matches!(ty, Value::Global(Global::TensorType)) {
                return Err(PickleError::Unsupported("tensor subclasses".into()));
            }
            call(func, inner)
        }
        Global::CodecsEncode => {
            let args = tuple_args(args, "_codecs.encode")?;
            match args.first() {
                // Python 3 pickles `bytes` at protocol 2 as encode(latin-1 text, "latin1").
                Some(Value::Str(s)) => {
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

/// Parses a persistent id `('storage', StorageType, key, location, numel[, view_metadata])`; the zip
/// format has five fields, the legacy format six (the last `None` or `(view_key, offset, size)`).
pub(crate) fn storage_from_pid(pid: Value) -> PResult<(StorageRef, usize)> {
    let Value::Tuple(items) = pid else {
        return corrupt(format!("persistent id is a {}, not a tuple", pid.kind()));
    };
    if items.first().and_then(Value::as_str) != Some("storage") {
        return Err(PickleError::Unsupported(format!(
            "persistent id `{:?}` (only storages are supported)",
            items.first().and_then(Value::as_str).unwrap_or("?")
        )));
    }
    if items.len() != 5 && items.len() != 6 {
        return corrupt(format!("storage persistent id with {} fields", items.len()));
    }
    let Value::Global(Global::Storage(kind)) = &items[1] else {
        return corrupt("storage persistent id without a storage type");
    };
    let Some(key) = items[2].as_str() else {
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
                key: key.to_string(),
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

    fn run(bytes: &[u8]) -> PResult<Value> {
        load(&mut &bytes[..], &mut |pid| {
            Ok(Value::Storage(storage_from_pid(pid)?.0))
        })
    }

    #[test]
    fn refuses_unknown_globals() {
        let err = run(b"cos\nsystem\nX\x04\x00\x00\x00echo\x85R.").unwrap_err();
        assert!(
            matches!(err, PickleError::Forbidden(ref g) if g == "os.system"),
            "{err:?}"
        );
        let err = run(b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.").unwrap_err();
        assert!(
            matches!(err, PickleError::Forbidden(ref g) if g == "builtins.eval"),
            "{err:?}"
        );
    }

    #[test]
    fn reads_big_longs_and_py2_ordered_dicts() {
        // The legacy magic number is a 10-byte LONG1.
        let v = run(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.").unwrap();
        assert!(matches!(v, Value::BigInt(ref b) if b.len() == 10));
        let v = run(b"\x80\x02\x8a\x02\xe9\x03.").unwrap();
        assert!(matches!(v, Value::Int(1001)));
        // Python 2: OrderedDict([['a', 1]]) with a SHORT_BINSTRING key.
        let v = run(b"ccollections\nOrderedDict\n]](U\x01aK\x01ea\x85R.").unwrap();
        let Value::Dict(d) = v else {
            panic!("not a dict")
        };
        assert_eq!(d.borrow()[0].0.as_str(), Some("a"));
    }

    #[test]
    fn truncated_stream_is_corrupt() {
        assert!(matches!(
            run(b"\x80\x02X\x10\x00\x00\x00abc"),
            Err(PickleError::Corrupt(_))
        ));
        assert!(matches!(run(b"\x80\x02}"), Err(PickleError::Corrupt(_))));
    }
}
