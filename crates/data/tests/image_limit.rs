//! The pixel limit: hostile files whose headers claim huge sizes are refused from the header, before any
//! decoder allocates, in decoding and in `verify`; memory stays bounded. The limit is process-wide, so the
//! tests here hold one lock while they run.

mod common;

use std::path::Path;
use std::sync::Mutex;

use common::*;
use fgvc_data::verify::{verify, Check};
use fgvc_data::{
    check_image_header, decode_bytes, decode_image, folder, set_max_image_pixels, DataError,
    Dataset, DatasetKind, OpenOptions, Split, Validation, DEFAULT_MAX_IMAGE_PIXELS,
};

static LIMIT: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    let guard = LIMIT.lock().unwrap_or_else(|e| e.into_inner());
    set_max_image_pixels(DEFAULT_MAX_IMAGE_PIXELS).unwrap();
    guard
}

/// The peak resident memory of this process so far (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A real 8x8 JPEG whose start-of-frame header is patched to claim `width` x `height`.
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(8, 8, image::Rgb([10, 20, 30]));
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    // SOF0: FF C0, length (2), precision (1), height (2), width (2).
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline JPEG has SOF0");
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
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

/// A real 1x1 PNG whose IHDR is patched (CRC fixed) to claim `width` x `height`.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let img = image::GrayImage::from_pixel(1, 1, image::Luma([0]));
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .unwrap();
    // Signature (8), IHDR length (4), "IHDR" (4), width (4), height (4), 5 more bytes, CRC (4).
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn assert_refused(err: &DataError, file: &str, claim: &str) {
    let text = err.to_string();
    assert!(
        matches!(err, DataError::TooManyPixels { .. }),
        "{err:?}: {text}"
    );
    for part in [file, claim, "89478485", "max_image_pixels"] {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }
}

#[test]
fn a_jpeg_claiming_60000x60000_is_refused_from_its_header() {
    let _guard = lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.jpg");
    let bytes = jpeg_claiming(60000, 60000);
    assert!(bytes.len() < 1024, "{} bytes", bytes.len());
    std::fs::write(&path, &bytes).unwrap();
    let before = peak_rss();
    let err = decode_image(&path, "test").unwrap_err();
    assert_refused(&err, "bomb.jpg", "60000x60000");
    let err = decode_bytes(&bytes, &path).unwrap_err();
    assert_refused(&err, "bomb.jpg", "60000x60000");
    let err = check_image_header(&path).unwrap_err();
    assert_refused(&err, "bomb.jpg", "60000x60000");
    let grown = peak_rss().saturating_sub(before);
    assert!(grown < 200 << 20, "peak memory grew by {grown} bytes");
}

#[test]
fn a_png_claiming_20000x20000_is_refused_from_its_header() {
    let _guard = lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.png");
    std::fs::write(&path, png_claiming(20000, 20000)).unwrap();
    let before = peak_rss();
    let err = decode_image(&path, "test").unwrap_err();
    assert_refused(&err, "bomb.png", "20000x20000");
    let err = check_image_header(&path).unwrap_err();
    assert_refused(&err, "bomb.png", "20000x20000");
    let grown = peak_rss().saturating_sub(before);
    assert!(grown < 200 << 20, "peak memory grew by {grown} bytes");
}

#[test]
fn the_limit_is_configurable_and_applies_to_every_format() {
    let _guard = lock();
    let dir = tempfile::tempdir().unwrap();
    let (jpg, png) = (dir.path().join("a.jpg"), dir.path().join("a.png"));
    write_jpeg(&jpg, 20, 10, 1);
    image::RgbImage::new(20, 10).save(&png).unwrap();
    set_max_image_pixels(200).unwrap();
    for p in [&jpg, &png] {
        assert_eq!(decode_image(p, "test").unwrap().dimensions(), (20, 10));
        assert_eq!(check_image_header(p).unwrap(), (20, 10));
    }
    set_max_image_pixels(199).unwrap();
    for p in [&jpg, &png] {
        let text = decode_image(p, "test").unwrap_err().to_string();
        assert!(
            text.contains("20x10 = 200 pixels") && text.contains("limit of 199"),
            "{text}"
        );
        assert!(check_image_header(p).is_err());
    }
    let err = set_max_image_pixels(0).unwrap_err().to_string();
    assert!(err.contains("at least 1"), "{err}");
    assert_eq!(fgvc_data::max_image_pixels(), 199);
}

fn folder_with_bomb(root: &Path) -> std::path::PathBuf {
    for class in ["a", "b"] {
        for i in 0..2 {
            write_jpeg(&root.join(class).join(format!("{i}.jpg")), 8, 8, i);
        }
    }
    let bomb = root.join("b").join("2.jpg");
    std::fs::write(&bomb, jpeg_claiming(60000, 60000)).unwrap();
    bomb
}

#[test]
fn verify_reports_a_bomb_as_unreadable_at_the_header_and_decode_checks() {
    let _guard = lock();
    let dir = tempfile::tempdir().unwrap();
    let bomb = folder_with_bomb(dir.path());
    for check in [Check::Header, Check::Decode] {
        let report = verify(
            DatasetKind::Folder,
            dir.path(),
            &OpenOptions::default(),
            check,
        )
        .unwrap();
        assert!(!report.is_ok(), "{check:?}");
        let train = &report.splits[0];
        assert_eq!(train.unreadable.len(), 1, "{check:?}");
        assert_eq!(train.unreadable[0].0, bomb);
        assert!(
            train.unreadable[0].1.contains("60000x60000"),
            "{}",
            train.unreadable[0].1
        );
        assert!(report.to_string().contains("PROBLEMS FOUND"));
    }
}

#[test]
fn the_loader_refuses_a_bomb_naming_it() {
    let _guard = lock();
    let dir = tempfile::tempdir().unwrap();
    let bomb = folder_with_bomb(dir.path());
    let set = folder::load(dir.path(), Split::Train, &Validation::None).unwrap();
    let index = set.paths().position(|p| p == bomb).unwrap();
    let before = peak_rss();
    let text = set.load(index).unwrap_err().to_string();
    assert!(
        text.contains(&bomb.display().to_string()) && text.contains("60000x60000"),
        "{text}"
    );
    assert!(peak_rss().saturating_sub(before) < 200 << 20);
}
