//! Hostile `.pth` files, each a few hundred bytes (or, for deep nesting, one compressible megabyte): every
//! one is an error naming the file and the problem, and none makes the reader allocate more than a few
//! megabytes (the process's peak resident memory, VmHWM, is checked around each read).

use std::path::{Path, PathBuf};

use fgvc_backbone::weights::{read_checkpoint_bytes, read_tensors, WeightsError};

/// A fresh directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("hostile-weights")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The process's peak resident memory in KiB (`VmHWM` in /proc/self/status).
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line")
}

/// Writes `bytes` as `name`, reads it back, and returns the error; asserts that the peak resident memory
/// grew by less than 64 MiB over the read (other tests of this binary read files of the same size).
fn refused(dir: &Path, name: &str, bytes: &[u8]) -> WeightsError {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let before = peak_kib();
    let result = read_tensors(&path);
    let grown = peak_kib().saturating_sub(before);
    assert!(grown < 64 << 10, "{name}: peak memory grew by {grown} KiB");
    // The bytes-level entry gives the same answer.
    let same = read_checkpoint_bytes(bytes, &path, None).map(|c| c.tensors.len());
    match result {
        Ok(t) => panic!("{name}: read {} tensors", t.len()),
        Err(e) => {
            assert_eq!(same.unwrap_err().to_string(), e.to_string());
            assert!(e.to_string().contains(name), "{name}: {e}");
            e
        }
    }
}

/// The detail of a corrupt-file error.
fn corrupt_detail(e: WeightsError) -> String {
    match e {
        WeightsError::Corrupt { detail, .. } => detail,
        other => panic!("not a corrupt-file error: {other}"),
    }
}

fn too_large_detail(e: WeightsError) -> String {
    match e {
        WeightsError::TooLarge { detail, .. } => detail,
        other => panic!("not a too-large error: {other}"),
    }
}

/// A pickle (protocol 2) written opcode by opcode.
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Self {
        Pickle(vec![0x80, 0x02])
    }
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.raw(s.as_bytes())
    }
    fn int(&mut self, i: u64) -> &mut Self {
        if i < 1 << 31 {
            self.0.push(b'J');
            self.raw(&(i as u32).to_le_bytes())
        } else {
            self.raw(&[0x8a, 8]).raw(&i.to_le_bytes())
        }
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.raw(b"c")
            .raw(module.as_bytes())
            .raw(b"\n")
            .raw(name.as_bytes())
            .raw(b"\n")
    }
    fn ints(&mut self, v: &[u64]) -> &mut Self {
        self.raw(b"(");
        for &i in v {
            self.int(i);
        }
        self.raw(b"t")
    }
    /// `name: _rebuild_tensor_v2(storage(key, numel), offset, size, stride, False, OrderedDict())` as a
    /// SETITEM on the dict on top of the stack; `legacy` writes the six-field persistent id.
    #[allow(clippy::too_many_arguments)]
    fn tensor(
        &mut self,
        name: &str,
        key: &str,
        numel: u64,
        offset: u64,
        size: &[u64],
        stride: &[u64],
        legacy: bool,
    ) -> &mut Self {
        self.str(name)
            .global("torch._utils", "_rebuild_tensor_v2")
            .raw(b"((")
            .str("storage")
            .global("torch", "FloatStorage")
            .str(key)
            .str("cpu")
            .int(numel);
        if legacy {
            self.raw(b"N");
        }
        self.raw(b"tQ")
            .int(offset)
            .ints(size)
            .ints(stride)
            .raw(b"\x89")
            .global("collections", "OrderedDict")
            .raw(b")RtRs")
    }
    fn stop(&mut self) -> Vec<u8> {
        self.raw(b".");
        std::mem::take(&mut self.0)
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A stored (uncompressed) zip of `entries`. `declared` overrides an entry's size fields; `alias` adds
/// central-directory records that point at an earlier entry's bytes under another name.
fn zip(entries: &[(&str, &[u8])], declared: &[(&str, u32)], alias: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    let mut records = 0u16;
    let mut offsets = Vec::new();
    let mut record = |central: &mut Vec<u8>, name: &str, crc: u32, size: u32, offset: u32| {
        central.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
        records += 1;
    };
    for (name, data) in entries {
        let size = declared
            .iter()
            .find(|(n, _)| n == name)
            .map_or(data.len() as u32, |(_, s)| *s);
        let offset = out.len() as u32;
        let crc = crc32(data);
        out.extend_from_slice(b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        offsets.push((*name, crc, size, offset));
        record(&mut central, name, crc, size, offset);
    }
    for (name, target) in alias {
        let &(_, crc, size, offset) = offsets.iter().find(|(n, ..)| n == target).unwrap();
        record(&mut central, name, crc, size, offset);
    }
    let start = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00");
    out.extend_from_slice(&records.to_le_bytes());
    out.extend_from_slice(&records.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// A `torch.save` zip checkpoint of `pickle` and the storages `data`.
fn zip_checkpoint(pickle: &[u8], data: &[(&str, &[u8])]) -> Vec<u8> {
    let names: Vec<String> = data
        .iter()
        .map(|(k, _)| format!("archive/data/{k}"))
        .collect();
    let mut entries: Vec<(&str, &[u8])> = vec![("archive/data.pkl", pickle)];
    entries.extend(
        names
            .iter()
            .map(String::as_str)
            .zip(data.iter().map(|(_, d)| *d)),
    );
    zip(&entries, &[], &[])
}

/// The five pickles of a legacy checkpoint around `object`, then `storages` as (key, count, bytes).
fn legacy(object: &[u8], storages: &[(&str, u64, &[u8])]) -> Vec<u8> {
    let mut out =
        b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.\x80\x02}."
            .to_vec();
    out.extend_from_slice(object);
    let mut keys = Pickle::new();
    keys.raw(b"](");
    for (k, ..) in storages {
        keys.str(k);
    }
    keys.raw(b"e");
    out.extend_from_slice(&keys.stop());
    for (_, count, bytes) in storages {
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// A dict holding one tensor, as a complete pickle.
fn one_tensor(numel: u64, size: &[u64], stride: &[u64], legacy: bool) -> Vec<u8> {
    Pickle::new()
        .raw(b"}")
        .tensor("w", "0", numel, 0, size, stride, legacy)
        .stop()
}

#[test]
fn a_huge_declared_string_or_bytes_length_is_refused_before_allocating() {
    let dir = scratch("lengths");
    for (op, len) in [
        (
            "binunicode8",
            [&[0x8d][..], &(1u64 << 40).to_le_bytes()].concat(),
        ),
        (
            "binbytes8",
            [&[0x8e][..], &(1u64 << 40).to_le_bytes()].concat(),
        ),
        ("binbytes", [&[b'B'][..], &u32::MAX.to_le_bytes()].concat()),
        ("long4", [&[0x8b][..], &i32::MAX.to_le_bytes()].concat()),
    ] {
        let pickle = Pickle::new().raw(b"}").raw(&len).raw(b"abc").stop();
        for (name, bytes) in [
            (format!("{op}.zip.pth"), zip_checkpoint(&pickle, &[])),
            (format!("{op}.legacy.pth"), legacy(&pickle, &[])),
        ] {
            assert!(bytes.len() < 1024);
            let d = corrupt_detail(refused(&dir, &name, &bytes));
            assert!(
                d.contains("unexpected end of data")
                    && d.contains(" bytes, ")
                    && d.ends_with(" are left"),
                "{name}: {d}"
            );
        }
    }
}

#[test]
fn a_huge_storage_is_refused_before_allocating() {
    let dir = scratch("storage");
    // The pickle says 2^40 floats; the zip entry holds 16 bytes.
    let pickle = one_tensor(1 << 40, &[1 << 40], &[1], false);
    let bytes = zip_checkpoint(&pickle, &[("0", &[0; 16])]);
    let d = corrupt_detail(refused(&dir, "storage.zip.pth", &bytes));
    assert_eq!(
        d,
        "storage `0` needs 4398046511104 bytes, archive/data/0 holds 16"
    );
    // Legacy: the storage's own element count says the same, the file ends long before.
    let pickle = one_tensor(1 << 40, &[1 << 40], &[1], true);
    let bytes = legacy(&pickle, &[("0", 1 << 40, &[0; 16])]);
    let d = corrupt_detail(refused(&dir, "storage.legacy.pth", &bytes));
    assert!(
        d.starts_with("file ends inside storage `0` (4398046511104 bytes from offset"),
        "{d}"
    );
    // A count that disagrees with the pickle, and one whose byte size overflows.
    let pickle = one_tensor(4, &[4], &[1], true);
    let bytes = legacy(&pickle, &[("0", u64::MAX, &[0; 16])]);
    let d = corrupt_detail(refused(&dir, "count.legacy.pth", &bytes));
    assert_eq!(
        d,
        "storage `0` holds 18446744073709551615 elements, the pickle says 4"
    );
    let pickle = one_tensor(1 << 62, &[4], &[1], true);
    let bytes = legacy(&pickle, &[("0", 1 << 62, &[0; 16])]);
    let d = corrupt_detail(refused(&dir, "overflow.legacy.pth", &bytes));
    assert_eq!(
        d,
        "storage `0` declares an impossible 4611686018427387904 elements"
    );
}

#[test]
fn a_huge_tensor_shape_is_refused() {
    let dir = scratch("shape");
    let data = [0u8; 16];
    for (name, size, stride, want) in [
        (
            "overflow",
            &[1u64 << 31, 1 << 31, 1 << 31][..],
            &[0u64, 0, 0][..],
            "impossible size",
        ),
        (
            "empty-overflow",
            &[0, 1 << 62, 1 << 62],
            &[1, 1, 1],
            "impossible size",
        ),
        (
            "outside",
            &[1 << 20, 1 << 20],
            &[1 << 20, 1],
            "reaches element",
        ),
    ] {
        let pickle = one_tensor(4, size, stride, false);
        let bytes = zip_checkpoint(&pickle, &[("0", &data)]);
        let d = corrupt_detail(refused(&dir, &format!("{name}.zip.pth"), &bytes));
        assert!(d.contains(want), "{name}: {d}");
    }
    // More elements than the storage holds: a broadcast, refused.
    let pickle = one_tensor(4, &[2, 2, 2], &[1, 1, 1], false);
    let bytes = zip_checkpoint(&pickle, &[("0", &data)]);
    let e = refused(&dir, "broadcast.zip.pth", &bytes);
    assert!(matches!(e, WeightsError::Unsupported { .. }), "{e}");
}

#[test]
fn a_shape_padded_with_ones_costs_nothing_per_element() {
    // A transposed 256 x 256 view with 100 000 dims of size 1 appended: 6.5e9 index steps if each
    // element walked every dim.
    let ones = vec![1u64; 100_000];
    let size = [[256, 256].as_slice(), &ones].concat();
    let stride = [[1, 256].as_slice(), &ones].concat();
    let pickle = one_tensor(1 << 16, &size, &stride, false);
    let storage: Vec<u8> = (0..1u32 << 16)
        .flat_map(|i| (i as f32).to_le_bytes())
        .collect();
    let bytes = zip_checkpoint(&pickle, &[("0", &storage)]);
    let start = std::time::Instant::now();
    let ck = read_checkpoint_bytes(&bytes, "ones.pth", None).unwrap();
    assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
    let t = ck.tensors[0].1.reshape((256, 256)).unwrap();
    let row: Vec<f32> = t
        .get(0)
        .unwrap()
        .narrow(0, 0, 3)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(
        row,
        [0.0, 256.0, 512.0],
        "element (i, j) is storage[i + 256 j]"
    );
}

#[test]
fn deep_nesting_and_memo_doubling_stay_small() {
    let dir = scratch("nesting");
    // 200 000 nested tuples (one byte each), under a dict key: read, then refused as no state dict,
    // without overflowing the stack when dropped (a recursive drop overflows a test thread's 2 MiB).
    let mut p = Pickle::new();
    p.raw(b"}").str("deep").raw(b")");
    p.raw(&vec![0x85; 200_000]).raw(b"s");
    let bytes = zip_checkpoint(&p.stop(), &[]);
    let e = refused(&dir, "deep.zip.pth", &bytes);
    assert!(matches!(e, WeightsError::NoStateDict { .. }), "{e}");
    // 2^60 leaves by DUP + TUPLE2, and by memo PUT + GET + GET + TUPLE2, in a few hundred bytes.
    for (name, step) in [
        ("dup", &b"2\x86"[..]),
        ("memo", &b"q\x000h\x00h\x00\x86"[..]),
    ] {
        let mut p = Pickle::new();
        p.raw(b"}").str("x").raw(b"K\x01");
        for _ in 0..60 {
            p.raw(step);
        }
        p.raw(b"s");
        let pickle = p.stop();
        assert!(pickle.len() < 1024);
        let e = refused(&dir, &format!("{name}.legacy.pth"), &legacy(&pickle, &[]));
        assert!(matches!(e, WeightsError::NoStateDict { .. }), "{e}");
    }
    // A list of 3000 pairs turned into a dict 3000 times through the memo: a work budget error.
    let mut p = Pickle::new();
    p.global("collections", "OrderedDict").raw(b"q\x00](");
    for i in 0..3000 {
        p.int(i).raw(b"K\x00\x86");
    }
    p.raw(b"eq\x01(");
    for _ in 0..3000 {
        p.raw(b"h\x00h\x01\x85R0");
    }
    p.raw(b"1}");
    let e = refused(&dir, "calls.zip.pth", &zip_checkpoint(&p.stop(), &[]));
    assert!(too_large_detail(e).contains("a pickle bomb"));
}

#[test]
fn zip_entries_that_claim_too_much_or_overlap_are_refused() {
    let dir = scratch("zip");
    let pickle = one_tensor(4, &[4], &[1], false);
    let data = [0u8; 16];
    // data.pkl claiming 4 GiB - 1 in its headers.
    let bytes = zip(
        &[("archive/data.pkl", &pickle), ("archive/data/0", &data)],
        &[("archive/data.pkl", u32::MAX)],
        &[],
    );
    let e = refused(&dir, "claims.zip.pth", &bytes);
    assert!(matches!(e, WeightsError::Corrupt { .. }), "{e}");
    // Two names for the same bytes (the overlapping-entry zip bomb).
    let bytes = zip(
        &[("archive/data.pkl", &pickle), ("archive/data/0", &data)],
        &[],
        &[("archive/data/1", "archive/data/0")],
    );
    let d = corrupt_detail(refused(&dir, "overlap.zip.pth", &bytes));
    assert!(d.contains("zip entries overlap"), "{d}");
    // The well-formed archive the two were made from reads.
    let ok = zip(
        &[("archive/data.pkl", &pickle), ("archive/data/0", &data)],
        &[],
        &[],
    );
    let ck = read_checkpoint_bytes(&ok, "ok.pth", None).unwrap();
    assert_eq!(ck.tensors[0].1.dims(), [4]);
}

#[test]
fn many_tensors_viewing_one_storage_are_refused() {
    let dir = scratch("views");
    // 64 Ki floats (256 KiB) viewed whole by 100 tensors: 25 MiB from a 256 KiB file.
    let numel = 1 << 16;
    let mut p = Pickle::new();
    p.raw(b"}");
    for i in 0..100 {
        p.tensor(&format!("w{i}"), "0", numel, 0, &[numel], &[1], true);
    }
    let storage = vec![0u8; 4 << 16];
    let bytes = legacy(&p.stop(), &[("0", numel, &storage)]);
    let d = too_large_detail(refused(&dir, "views.legacy.pth", &bytes));
    assert!(d.contains("view the same storages over and over"), "{d}");
    // Tied weights (two views of one storage) are fine.
    let mut p = Pickle::new();
    p.raw(b"}");
    for i in 0..2 {
        p.tensor(&format!("w{i}"), "0", numel, 0, &[numel], &[1], true);
    }
    let bytes = legacy(&p.stop(), &[("0", numel, &storage)]);
    assert_eq!(
        read_checkpoint_bytes(&bytes, "tied.pth", None)
            .unwrap()
            .tensors
            .len(),
        2
    );
}
