//! A minimal reader (and writer) of MATLAB Level-5 `.mat` files: enough for the annotation files of Stanford
//! Cars (`cars_train_annos.mat`, `cars_test_annos_withlabels.mat`, `cars_meta.mat`, `cars_annos.mat`) and
//! similar datasets.
//!
//! Supported: both byte orders; `miMATRIX` elements of numeric (all integer classes, single, double;
//! logical), char, cell, struct and object class; `miCOMPRESSED` (zlib) variables, as MATLAB writes by
//! default since v7; the small-data-element format. Not supported: sparse arrays, function handles and the
//! HDF5-based v7.3 format (a clear error says so). Complex arrays keep their real part only. Numbers are
//! held as `f64`, which is exact for every integer up to 2^53.
//!
//! The writer produces files that MATLAB, scipy and this reader load; it exists so that tests can build
//! Cars-shaped fixtures without shipping binary files.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;
const MI_UTF32: u32 = 18;

const MX_CELL: u8 = 1;
const MX_STRUCT: u8 = 2;
const MX_OBJECT: u8 = 3;
const MX_CHAR: u8 = 4;
const MX_SPARSE: u8 = 5;

/// Cells and structs nest at most this deep (dataset annotations nest two or three levels); deeper is
/// refused rather than recursed into.
const MAX_DEPTH: usize = 64;
/// A compressed variable may inflate to at most this many bytes (Stanford Cars' largest is a few MB).
const MAX_INFLATED: u64 = 256 << 20;

const FLAG_COMPLEX: u32 = 0x0800;
const FLAG_LOGICAL: u32 = 0x0200;

/// The MATLAB class of a numeric array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumericClass {
    /// `double`.
    Double,
    /// `single`.
    Single,
    /// `int8`.
    Int8,
    /// `uint8` (also the storage of `logical`).
    UInt8,
    /// `int16`.
    Int16,
    /// `uint16`.
    UInt16,
    /// `int32`.
    Int32,
    /// `uint32`.
    UInt32,
    /// `int64`.
    Int64,
    /// `uint64`.
    UInt64,
}

impl NumericClass {
    fn from_mx(class: u8) -> Option<Self> {
        Some(match class {
            6 => NumericClass::Double,
            7 => NumericClass::Single,
            8 => NumericClass::Int8,
            9 => NumericClass::UInt8,
            10 => NumericClass::Int16,
            11 => NumericClass::UInt16,
            12 => NumericClass::Int32,
            13 => NumericClass::UInt32,
            14 => NumericClass::Int64,
            15 => NumericClass::UInt64,
            _ => return None,
        })
    }

    fn mx(self) -> u8 {
        match self {
            NumericClass::Double => 6,
            NumericClass::Single => 7,
            NumericClass::Int8 => 8,
            NumericClass::UInt8 => 9,
            NumericClass::Int16 => 10,
            NumericClass::UInt16 => 11,
            NumericClass::Int32 => 12,
            NumericClass::UInt32 => 13,
            NumericClass::Int64 => 14,
            NumericClass::UInt64 => 15,
        }
    }

    fn mi(self) -> u32 {
        match self {
            NumericClass::Double => MI_DOUBLE,
            NumericClass::Single => MI_SINGLE,
            NumericClass::Int8 => MI_INT8,
            NumericClass::UInt8 => MI_UINT8,
            NumericClass::Int16 => MI_INT16,
            NumericClass::UInt16 => MI_UINT16,
            NumericClass::Int32 => MI_INT32,
            NumericClass::UInt32 => MI_UINT32,
            NumericClass::Int64 => MI_INT64,
            NumericClass::UInt64 => MI_UINT64,
        }
    }
}

/// A numeric (or logical) array, column-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NumericArray {
    /// Dimensions, e.g. `[1, 1]` for a scalar.
    pub dims: Vec<usize>,
    /// The MATLAB class.
    pub class: NumericClass,
    /// Whether the array is `logical`.
    pub logical: bool,
    /// The values (real part), column-major.
    pub data: Vec<f64>,
}

/// A char array, column-major, as Unicode scalar values.
#[derive(Debug, Clone, PartialEq)]
pub struct CharArray {
    /// Dimensions, `[rows, cols]` for text.
    pub dims: Vec<usize>,
    /// The characters, column-major.
    pub chars: Vec<char>,
}

impl CharArray {
    /// A `1 x n` char array holding `s`.
    pub fn from_text(s: &str) -> Self {
        let chars: Vec<char> = s.chars().collect();
        CharArray {
            dims: vec![if chars.is_empty() { 0 } else { 1 }, chars.len()],
            chars,
        }
    }

    /// The rows of the array as strings (a `1 x n` array has one row; MATLAB pads rows with spaces).
    pub fn rows(&self) -> Vec<String> {
        let rows = self.dims.first().copied().unwrap_or(0);
        if rows == 0 || self.chars.is_empty() {
            return Vec::new();
        }
        let cols = self.chars.len() / rows;
        (0..rows)
            .map(|r| (0..cols).map(|c| self.chars[r + c * rows]).collect())
            .collect()
    }
}

/// A cell array, column-major.
#[derive(Debug, Clone, PartialEq)]
pub struct CellArray {
    /// Dimensions.
    pub dims: Vec<usize>,
    /// The cells, column-major.
    pub items: Vec<MatValue>,
}

/// A struct array: `len()` elements, each with the same fields.
#[derive(Debug, Clone, PartialEq)]
pub struct StructArray {
    /// Dimensions, e.g. `[1, 8144]`.
    pub dims: Vec<usize>,
    /// Field names, in file order.
    pub fields: Vec<String>,
    /// Values, element-major: element `e`'s field `f` is at `e * fields.len() + f`.
    pub values: Vec<MatValue>,
}

impl StructArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the struct has a field of this name.
    pub fn has_field(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f == name)
    }

    /// Field `name` of element `index` (column-major linear index).
    pub fn get(&self, index: usize, name: &str) -> Option<&MatValue> {
        let f = self.fields.iter().position(|x| x == name)?;
        self.values.get(index * self.fields.len() + f)
    }
}

/// One MATLAB value.
#[derive(Debug, Clone, PartialEq)]
pub enum MatValue {
    /// Numeric or logical array.
    Numeric(NumericArray),
    /// Char array.
    Char(CharArray),
    /// Cell array.
    Cell(CellArray),
    /// Struct (or object) array.
    Struct(StructArray),
    /// An empty element (a zero-byte `miMATRIX`, as MATLAB writes for some empty cells).
    Empty,
    /// A class this reader does not decode (sparse, function handle, opaque); the number is the MATLAB
    /// class code.
    Unsupported(u8),
}

impl MatValue {
    /// A numeric scalar (or the single element of a 1-element array).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            MatValue::Numeric(a) if a.data.len() == 1 => Some(a.data[0]),
            _ => None,
        }
    }

    /// The text of a char array with one row (or no characters).
    pub fn as_string(&self) -> Option<String> {
        match self {
            MatValue::Char(c) => {
                let rows = c.rows();
                match rows.len() {
                    0 => Some(String::new()),
                    1 => Some(rows.into_iter().next().unwrap_or_default()),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The struct array, if this is one.
    pub fn as_struct(&self) -> Option<&StructArray> {
        match self {
            MatValue::Struct(s) => Some(s),
            _ => None,
        }
    }

    /// The cell array, if this is one.
    pub fn as_cell(&self) -> Option<&CellArray> {
        match self {
            MatValue::Cell(c) => Some(c),
            _ => None,
        }
    }

    /// A numeric array of `f64` values as a `1 x n` double array.
    pub fn row(values: &[f64]) -> Self {
        MatValue::Numeric(NumericArray {
            dims: vec![1, values.len()],
            class: NumericClass::Double,
            logical: false,
            data: values.to_vec(),
        })
    }

    /// A scalar of the given class.
    pub fn scalar(class: NumericClass, value: f64) -> Self {
        MatValue::Numeric(NumericArray {
            dims: vec![1, 1],
            class,
            logical: false,
            data: vec![value],
        })
    }

    /// A `1 x n` char array.
    pub fn text(s: &str) -> Self {
        MatValue::Char(CharArray::from_text(s))
    }

    /// A `1 x n` cell array of strings.
    pub fn cell_of_strings<S: AsRef<str>>(items: &[S]) -> Self {
        MatValue::Cell(CellArray {
            dims: vec![1, items.len()],
            items: items.iter().map(|s| MatValue::text(s.as_ref())).collect(),
        })
    }
}

/// The variables of a `.mat` file, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatFile {
    /// `(name, value)` pairs.
    pub vars: Vec<(String, MatValue)>,
}

impl MatFile {
    /// The variable called `name`.
    pub fn get(&self, name: &str) -> Option<&MatValue> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The names of all variables.
    pub fn names(&self) -> Vec<&str> {
        self.vars.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// Read a `.mat` file.
pub fn read_mat(path: &Path) -> Result<MatFile> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_mat(&bytes, path)
}

/// Parse the bytes of a `.mat` file; `path` is only used in errors.
pub fn parse_mat(bytes: &[u8], path: &Path) -> Result<MatFile> {
    let err = |m: String| DataError::mat(path, m);
    if bytes.len() < 128 {
        return Err(err(format!(
            "{} bytes is too short for a Level-5 MAT-file header (128 bytes)",
            bytes.len()
        )));
    }
    let text = String::from_utf8_lossy(&bytes[..116]);
    if text.starts_with("MATLAB 7.3") || bytes.starts_with(b"\x89HDF") {
        return Err(err(
            "MATLAB v7.3 (HDF5) files are not supported: re-save with `save -v7`".into(),
        ));
    }
    let big_endian = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        _ => return Err(err(
            "not a Level-5 MAT-file (no endian indicator at byte 126; v4 files are not supported)"
                .into(),
        )),
    };
    let mut vars = Vec::new();
    let mut pos = 128;
    while pos + 8 <= bytes.len() {
        let r = Reader {
            buf: bytes,
            big_endian,
            path,
        };
        let el = r.element(pos)?;
        pos = el.next;
        let (ty, data) = (el.ty, el.data);
        match ty {
            MI_COMPRESSED => {
                let mut inflated = Vec::new();
                flate2::read::ZlibDecoder::new(data)
                    .take(MAX_INFLATED + 1)
                    .read_to_end(&mut inflated)
                    .map_err(|e| err(format!("corrupt compressed variable: {e}")))?;
                if inflated.len() as u64 > MAX_INFLATED {
                    return Err(err(format!(
                        "a compressed variable inflates to more than {} MiB",
                        MAX_INFLATED >> 20
                    )));
                }
                let inner = Reader {
                    buf: &inflated,
                    big_endian,
                    path,
                };
                let el = inner.element(0)?;
                if el.ty != MI_MATRIX {
                    return Err(err(format!(
                        "compressed element holds data type {}, expected miMATRIX",
                        el.ty
                    )));
                }
                vars.push(inner.matrix(el.data, 0)?);
            }
            MI_MATRIX => vars.push(r.matrix(data, 0)?),
            _ => {} // other top-level elements carry no variable
        }
    }
    Ok(MatFile { vars })
}

struct Element<'a> {
    ty: u32,
    data: &'a [u8],
    next: usize,
}

struct Reader<'a> {
    buf: &'a [u8],
    big_endian: bool,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, m: impl Into<String>) -> DataError {
        DataError::mat(self.path, m)
    }

    fn u32_at(&self, buf: &[u8], pos: usize) -> Result<u32> {
        let b: [u8; 4] = buf
            .get(pos..pos + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| self.err(format!("truncated file: needs 4 bytes at offset {pos}")))?;
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    /// The data element whose tag starts at `pos` of `self.buf`.
    fn element(&self, pos: usize) -> Result<Element<'a>> {
        self.element_in(self.buf, pos)
    }

    fn element_in<'b>(&self, buf: &'b [u8], pos: usize) -> Result<Element<'b>> {
        let first = self.u32_at(buf, pos)?;
        if first >> 16 != 0 {
            // Small data element: type and size share the first word, data in the next four bytes.
            let ty = first & 0xFFFF;
            let n = (first >> 16) as usize;
            if n > 4 {
                return Err(self.err(format!("small data element of {n} bytes at offset {pos}")));
            }
            let data = buf
                .get(pos + 4..pos + 4 + n)
                .ok_or_else(|| self.err(format!("truncated small element at offset {pos}")))?;
            return Ok(Element {
                ty,
                data,
                next: pos + 8,
            });
        }
        let n = self.u32_at(buf, pos + 4)? as usize;
        let start = pos + 8;
        let data = buf.get(start..start + n).ok_or_else(|| {
            self.err(format!(
                "truncated file: element at offset {pos} claims {n} bytes, {} are left",
                buf.len().saturating_sub(start)
            ))
        })?;
        // Every element but a compressed one is padded to 8 bytes.
        let next = if first == MI_COMPRESSED {
            start + n
        } else {
            start + n.div_ceil(8) * 8
        };
        Ok(Element {
            ty: first,
            data,
            next,
        })
    }

    fn numbers(&self, ty: u32, data: &[u8]) -> Result<Vec<f64>> {
        macro_rules! conv {
            ($t:ty, $n:expr) => {
                data.chunks_exact($n)
                    .map(|c| {
                        let b: [u8; $n] = c.try_into().expect("chunk size");
                        (if self.big_endian {
                            <$t>::from_be_bytes(b)
                        } else {
                            <$t>::from_le_bytes(b)
                        }) as f64
                    })
                    .collect()
            };
        }
        Ok(match ty {
            MI_INT8 => data.iter().map(|&b| b as i8 as f64).collect(),
            MI_UINT8 | MI_UTF8 => data.iter().map(|&b| b as f64).collect(),
            MI_INT16 => conv!(i16, 2),
            MI_UINT16 | MI_UTF16 => conv!(u16, 2),
            MI_INT32 => conv!(i32, 4),
            MI_UINT32 | MI_UTF32 => conv!(u32, 4),
            MI_SINGLE => conv!(f32, 4),
            MI_DOUBLE => conv!(f64, 8),
            MI_INT64 => conv!(i64, 8),
            MI_UINT64 => conv!(u64, 8),
            other => return Err(self.err(format!("data type {other} where numbers were expected"))),
        })
    }

    fn text(&self, ty: u32, data: &[u8]) -> Result<Vec<char>> {
        Ok(match ty {
            MI_UTF8 => String::from_utf8_lossy(data).chars().collect(),
            MI_INT8 | MI_UINT8 => data.iter().map(|&b| b as char).collect(),
            MI_UTF16 | MI_UINT16 | MI_INT16 => {
                let units: Vec<u16> = self
                    .numbers(MI_UINT16, data)?
                    .into_iter()
                    .map(|x| x as u16)
                    .collect();
                char::decode_utf16(units)
                    .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                    .collect()
            }
            MI_UTF32 | MI_UINT32 | MI_INT32 => self
                .numbers(MI_UINT32, data)?
                .into_iter()
                .map(|x| char::from_u32(x as u32).unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect(),
            other => return Err(self.err(format!("data type {other} in a char array"))),
        })
    }

    /// Parse the content of a `miMATRIX` element into `(name, value)`; `depth` counts the cells and
    /// structs it is nested in.
    fn matrix(&self, data: &[u8], depth: usize) -> Result<(String, MatValue)> {
        if data.is_empty() {
            return Ok((String::new(), MatValue::Empty));
        }
        if depth > MAX_DEPTH {
            return Err(self.err(format!(
                "cells or structs nested more than {MAX_DEPTH} deep"
            )));
        }
        let flags_el = self.element_in(data, 0)?;
        if flags_el.ty != MI_UINT32 || flags_el.data.len() < 8 {
            return Err(self.err("array flags subelement missing"));
        }
        let flags = self.u32_at(flags_el.data, 0)?;
        let class = (flags & 0xFF) as u8;
        let dims_el = self.element_in(data, flags_el.next)?;
        let dims: Vec<usize> = self
            .numbers(dims_el.ty, dims_el.data)?
            .into_iter()
            .map(|d| d as usize)
            .collect();
        let numel = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| self.err(format!("array dimensions {dims:?} overflow")))?;
        // Every element of a cell or struct takes at least an 8-byte tag: no more can follow than that.
        let room = data.len() / 8;
        let name_el = self.element_in(data, dims_el.next)?;
        let name = String::from_utf8_lossy(name_el.data)
            .trim_end_matches('\0')
            .to_string();
        let mut pos = name_el.next;
        let value = match class {
            MX_CELL => {
                let mut items = Vec::with_capacity(numel.min(room));
                for _ in 0..numel {
                    let el = self.element_in(data, pos)?;
                    pos = el.next;
                    items.push(self.matrix(el.data, depth + 1)?.1);
                }
                MatValue::Cell(CellArray { dims, items })
            }
            MX_STRUCT | MX_OBJECT => {
                if class == MX_OBJECT {
                    pos = self.element_in(data, pos)?.next; // class name
                }
                let len_el = self.element_in(data, pos)?;
                let name_len = self.u32_at(len_el.data, 0)? as usize;
                let names_el = self.element_in(data, len_el.next)?;
                pos = names_el.next;
                let fields: Vec<String> = if name_len == 0 {
                    Vec::new()
                } else {
                    names_el
                        .data
                        .chunks(name_len)
                        .map(|c| {
                            String::from_utf8_lossy(c)
                                .trim_end_matches('\0')
                                .to_string()
                        })
                        .collect()
                };
                let count = numel.checked_mul(fields.len()).ok_or_else(|| {
                    self.err(format!(
                        "struct of dimensions {dims:?} with {} fields overflows",
                        fields.len()
                    ))
                })?;
                let mut values = Vec::with_capacity(count.min(room));
                for _ in 0..count {
                    let el = self.element_in(data, pos)?;
                    pos = el.next;
                    values.push(self.matrix(el.data, depth + 1)?.1);
                }
                MatValue::Struct(StructArray {
                    dims,
                    fields,
                    values,
                })
            }
            MX_CHAR => {
                let chars = if numel == 0 {
                    Vec::new()
                } else {
                    let el = self.element_in(data, pos)?;
                    self.text(el.ty, el.data)?
                };
                MatValue::Char(CharArray { dims, chars })
            }
            MX_SPARSE => MatValue::Unsupported(class),
            c => match NumericClass::from_mx(c) {
                Some(nc) => {
                    let values = if numel == 0 {
                        Vec::new()
                    } else {
                        let el = self.element_in(data, pos)?;
                        self.numbers(el.ty, el.data)?
                    };
                    if values.len() != numel {
                        return Err(self.err(format!(
                            "variable {name:?}: {} values for dimensions {dims:?}",
                            values.len()
                        )));
                    }
                    let _complex = flags & FLAG_COMPLEX != 0; // the imaginary part is ignored
                    MatValue::Numeric(NumericArray {
                        dims,
                        class: nc,
                        logical: flags & FLAG_LOGICAL != 0,
                        data: values,
                    })
                }
                None => MatValue::Unsupported(c),
            },
        };
        Ok((name, value))
    }
}

/// How [`write_mat`] writes a file.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Compress each variable (`miCOMPRESSED`), as MATLAB does by default.
    pub compress: bool,
    /// Write big-endian (MATLAB on old SPARC machines did).
    pub big_endian: bool,
}

/// Write `vars` as a Level-5 `.mat` file. Values of kind [`MatValue::Unsupported`] are rejected.
pub fn write_mat(path: &Path, vars: &[(&str, MatValue)], options: WriteOptions) -> Result<()> {
    let bytes = mat_bytes(vars, options).map_err(|m| DataError::mat(path, m))?;
    std::fs::write(path, bytes).map_err(|e| DataError::io(path, e))
}

/// The bytes of a Level-5 `.mat` file holding `vars` (see [`write_mat`]).
pub fn mat_bytes(
    vars: &[(&str, MatValue)],
    options: WriteOptions,
) -> std::result::Result<Vec<u8>, String> {
    let w = Writer {
        be: options.big_endian,
    };
    let mut out = Vec::new();
    let mut header = b"MATLAB 5.0 MAT-file, Platform: rust, Created by: fgvc-data mat5".to_vec();
    header.resize(116, b' ');
    out.extend_from_slice(&header);
    out.extend_from_slice(&[0u8; 8]); // subsystem data offset: none
    out.extend_from_slice(&w.u16(0x0100));
    out.extend_from_slice(if options.big_endian { b"MI" } else { b"IM" });
    for (name, value) in vars {
        let mut el = Vec::new();
        w.matrix(&mut el, name, value)?;
        if options.compress {
            let mut enc =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&el).map_err(|e| e.to_string())?;
            let z = enc.finish().map_err(|e| e.to_string())?;
            out.extend_from_slice(&w.u32(MI_COMPRESSED));
            out.extend_from_slice(&w.u32(z.len() as u32));
            out.extend_from_slice(&z);
        } else {
            out.extend_from_slice(&el);
        }
    }
    Ok(out)
}

struct Writer {
    be: bool,
}

impl Writer {
    fn u16(&self, v: u16) -> [u8; 2] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn u32(&self, v: u32) -> [u8; 4] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    /// A data element; data of at most 4 bytes uses the small format.
    fn element(&self, out: &mut Vec<u8>, ty: u32, data: &[u8]) {
        if data.len() <= 4 && !data.is_empty() {
            out.extend_from_slice(&self.u32(((data.len() as u32) << 16) | ty));
            let mut d = data.to_vec();
            d.resize(4, 0);
            out.extend_from_slice(&d);
            return;
        }
        out.extend_from_slice(&self.u32(ty));
        out.extend_from_slice(&self.u32(data.len() as u32));
        out.extend_from_slice(data);
        out.resize(out.len() + (8 - data.len() % 8) % 8, 0);
    }

    fn numbers(&self, class: NumericClass, data: &[f64]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() * 8);
        macro_rules! put {
            ($t:ty) => {
                for &x in data {
                    let v = x as $t;
                    out.extend_from_slice(&if self.be {
                        v.to_be_bytes()
                    } else {
                        v.to_le_bytes()
                    });
                }
            };
        }
        match class {
            NumericClass::Double => put!(f64),
            NumericClass::Single => put!(f32),
            NumericClass::Int8 => put!(i8),
            NumericClass::UInt8 => put!(u8),
            NumericClass::Int16 => put!(i16),
            NumericClass::UInt16 => put!(u16),
            NumericClass::Int32 => put!(i32),
            NumericClass::UInt32 => put!(u32),
            NumericClass::Int64 => put!(i64),
            NumericClass::UInt64 => put!(u64),
        }
        out
    }

    fn header(&self, body: &mut Vec<u8>, class: u8, flags: u32, dims: &[usize], name: &str) {
        let mut f = Vec::new();
        f.extend_from_slice(&self.u32(class as u32 | flags));
        f.extend_from_slice(&self.u32(0));
        // Array flags are never written in the small format.
        body.extend_from_slice(&self.u32(MI_UINT32));
        body.extend_from_slice(&self.u32(8));
        body.extend_from_slice(&f);
        let dims: Vec<f64> = dims.iter().map(|&d| d as f64).collect();
        self.element(body, MI_INT32, &self.numbers(NumericClass::Int32, &dims));
        if name.is_empty() {
            body.extend_from_slice(&self.u32(MI_INT8));
            body.extend_from_slice(&self.u32(0));
        } else {
            self.element(body, MI_INT8, name.as_bytes());
        }
    }

    fn matrix(
        &self,
        out: &mut Vec<u8>,
        name: &str,
        value: &MatValue,
    ) -> std::result::Result<(), String> {
        let mut body = Vec::new();
        match value {
            MatValue::Empty => {}
            MatValue::Unsupported(c) => {
                return Err(format!("cannot write a value of MATLAB class {c}"))
            }
            MatValue::Numeric(a) => {
                let flags = if a.logical { FLAG_LOGICAL } else { 0 };
                self.header(&mut body, a.class.mx(), flags, &a.dims, name);
                self.element(&mut body, a.class.mi(), &self.numbers(a.class, &a.data));
            }
            MatValue::Char(c) => {
                self.header(&mut body, MX_CHAR, 0, &c.dims, name);
                // UTF-8, as scipy writes (MATLAB itself writes UTF-16 units; the reader takes both).
                let text: String = c.chars.iter().collect();
                self.element(&mut body, MI_UTF8, text.as_bytes());
            }
            MatValue::Cell(c) => {
                self.header(&mut body, MX_CELL, 0, &c.dims, name);
                for item in &c.items {
                    self.matrix(&mut body, "", item)?;
                }
            }
            MatValue::Struct(s) => {
                self.header(&mut body, MX_STRUCT, 0, &s.dims, name);
                let name_len = s
                    .fields
                    .iter()
                    .map(|f| f.len() + 1)
                    .max()
                    .unwrap_or(1)
                    .div_ceil(8)
                    * 8;
                self.element(&mut body, MI_INT32, &self.u32(name_len as u32));
                let mut names = Vec::new();
                for f in &s.fields {
                    let mut b = f.as_bytes().to_vec();
                    b.resize(name_len, 0);
                    names.extend_from_slice(&b);
                }
                self.element(&mut body, MI_INT8, &names);
                for v in &s.values {
                    self.matrix(&mut body, "", v)?;
                }
            }
        }
        out.extend_from_slice(&self.u32(MI_MATRIX));
        out.extend_from_slice(&self.u32(body.len() as u32));
        out.extend_from_slice(&body);
        Ok(())
    }
}

/// The annotations struct array `annotations` (or another name) of a `.mat` file, with a helpful error when
/// it is missing.
pub(crate) fn struct_var<'m>(
    file: &'m MatFile,
    path: &Path,
    name: &str,
) -> Result<&'m StructArray> {
    file.get(name).and_then(MatValue::as_struct).ok_or_else(|| {
        DataError::mat(
            path,
            format!(
                "no struct array variable {name:?} (variables: {:?})",
                file.names()
            ),
        )
    })
}

/// Field `field` of element `index` as a number.
pub(crate) fn field_f64(s: &StructArray, index: usize, field: &str, path: &PathBuf) -> Result<f64> {
    s.get(index, field)
        .and_then(MatValue::as_f64)
        .ok_or_else(|| {
            DataError::mat(
                path,
                format!(
                    "element {}: field {field:?} is missing or not a number",
                    index + 1
                ),
            )
        })
}

/// Field `field` of element `index` as text.
pub(crate) fn field_string(
    s: &StructArray,
    index: usize,
    field: &str,
    path: &PathBuf,
) -> Result<String> {
    s.get(index, field)
        .and_then(MatValue::as_string)
        .ok_or_else(|| {
            DataError::mat(
                path,
                format!(
                    "element {}: field {field:?} is missing or not text",
                    index + 1
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_vars() -> Vec<(&'static str, MatValue)> {
        let s = StructArray {
            dims: vec![1, 2],
            fields: vec!["bbox_x1".into(), "class".into(), "fname".into()],
            values: vec![
                MatValue::scalar(NumericClass::UInt8, 39.0),
                MatValue::scalar(NumericClass::UInt8, 14.0),
                MatValue::text("00001.jpg"),
                MatValue::scalar(NumericClass::UInt16, 300.0),
                MatValue::scalar(NumericClass::Double, 196.0),
                MatValue::text("00002.jpg"),
            ],
        };
        vec![
            ("annotations", MatValue::Struct(s)),
            (
                "class_names",
                MatValue::cell_of_strings(&["AM General Hummer SUV 2000", "Škoda Octavia"]),
            ),
            ("x", MatValue::row(&[1.5, -2.0, 1e10])),
            (
                "i64",
                MatValue::scalar(NumericClass::Int64, -(1i64 << 40) as f64),
            ),
            (
                "e",
                MatValue::Cell(CellArray {
                    dims: vec![1, 1],
                    items: vec![MatValue::Empty],
                }),
            ),
        ]
    }

    #[test]
    fn roundtrip_all_encodings() {
        for compress in [false, true] {
            for big_endian in [false, true] {
                let bytes = mat_bytes(
                    &sample_vars(),
                    WriteOptions {
                        compress,
                        big_endian,
                    },
                )
                .unwrap();
                let f = parse_mat(&bytes, Path::new("mem.mat")).unwrap();
                let expected: Vec<(String, MatValue)> = sample_vars()
                    .into_iter()
                    .map(|(n, v)| (n.to_string(), v))
                    .collect();
                assert_eq!(f.vars, expected, "compress={compress} be={big_endian}");
                let a = f.get("annotations").unwrap().as_struct().unwrap();
                assert_eq!(a.len(), 2);
                assert_eq!(a.get(1, "fname").unwrap().as_string().unwrap(), "00002.jpg");
                assert_eq!(a.get(1, "bbox_x1").unwrap().as_f64(), Some(300.0));
            }
        }
    }

    #[test]
    fn reads_utf16_char_data_as_matlab_writes_it() {
        for be in [false, true] {
            let w = Writer { be };
            let mut body = Vec::new();
            w.header(&mut body, MX_CHAR, 0, &[1, 5], "s");
            let units: Vec<u8> = "Škoda".encode_utf16().flat_map(|u| w.u16(u)).collect();
            w.element(&mut body, MI_UINT16, &units);
            let mut bytes = mat_bytes(
                &[],
                WriteOptions {
                    compress: false,
                    big_endian: be,
                },
            )
            .unwrap();
            bytes.extend_from_slice(&w.u32(MI_MATRIX));
            bytes.extend_from_slice(&w.u32(body.len() as u32));
            bytes.extend_from_slice(&body);
            let f = parse_mat(&bytes, Path::new("m.mat")).unwrap();
            assert_eq!(f.get("s").unwrap().as_string().unwrap(), "Škoda");
        }
    }

    #[test]
    fn multi_row_char_arrays_are_column_major() {
        let c = CharArray {
            dims: vec![2, 3],
            chars: "adbecf".chars().collect(),
        };
        assert_eq!(c.rows(), vec!["abc".to_string(), "def".to_string()]);
        assert_eq!(MatValue::Char(c).as_string(), None);
    }

    #[test]
    fn rejects_bad_headers_and_truncation() {
        let p = Path::new("x.mat");
        assert!(parse_mat(b"short", p).is_err());
        let mut v73 = b"MATLAB 7.3 MAT-file".to_vec();
        v73.resize(200, b' ');
        let e = parse_mat(&v73, p).unwrap_err().to_string();
        assert!(e.contains("7.3") && e.contains("x.mat"), "{e}");
        let bytes = mat_bytes(&sample_vars(), WriteOptions::default()).unwrap();
        let e = parse_mat(&bytes[..bytes.len() - 20], p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
        let zbytes = mat_bytes(
            &sample_vars(),
            WriteOptions {
                compress: true,
                big_endian: false,
            },
        )
        .unwrap();
        assert!(parse_mat(&zbytes[..zbytes.len() - 5], p).is_err());
    }

    /// The error `vars` written as a file and parsed back give.
    fn parse_error(vars: &[(&str, MatValue)]) -> String {
        let bytes = mat_bytes(vars, WriteOptions::default()).unwrap();
        parse_mat(&bytes, Path::new("hostile.mat"))
            .expect_err("refused")
            .to_string()
    }

    fn cell(dims: &[usize], items: Vec<MatValue>) -> MatValue {
        MatValue::Cell(CellArray {
            dims: dims.to_vec(),
            items,
        })
    }

    #[test]
    fn dimensions_whose_product_overflows_are_an_error() {
        // Found by the mat5 fuzz target: `dims.iter().product()` overflowed (a panic in debug builds).
        let e = parse_error(&[("c", cell(&[65536, 65536, 65536, 65536], vec![]))]);
        assert!(
            e.contains("hostile.mat")
                && e.contains("array dimensions [65536, 65536, 65536, 65536] overflow"),
            "{e}"
        );
    }

    #[test]
    fn a_huge_declared_cell_allocates_only_what_the_file_can_hold() {
        // 2^30 cells declared, none present: once a 48 GiB allocation up front, now a truncation error.
        let start = std::time::Instant::now();
        let e = parse_error(&[("c", cell(&[1 << 30, 1], vec![]))]);
        assert!(e.contains("hostile.mat") && e.contains("truncated"), "{e}");
        assert!(start.elapsed().as_secs() < 2);
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_an_error() {
        let nested = |depth: usize| {
            (0..depth).fold(MatValue::row(&[1.0]), |inner, _| cell(&[1, 1], vec![inner]))
        };
        let bytes = mat_bytes(&[("ok", nested(MAX_DEPTH))], WriteOptions::default()).unwrap();
        assert!(parse_mat(&bytes, Path::new("ok.mat")).is_ok());
        let e = parse_error(&[("deep", nested(MAX_DEPTH + 2))]);
        assert!(e.contains("nested more than 64 deep"), "{e}");
    }
}
