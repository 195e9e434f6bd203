//! `fgvc data verify` and `fgvc augment preview` on hostile input: an image whose header claims far more
//! pixels than the limit is reported (verify) or refused (preview) from its header, naming the file, and the
//! limit is a flag.

use std::path::Path;
use std::process::Command;

const FGVC: &str = env!("CARGO_BIN_EXE_fgvc");

fn jpeg(path: &Path, width: u32, height: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(width, height, image::Rgb([90, 20, 30]))
        .save_with_format(path, image::ImageFormat::Jpeg)
        .unwrap();
}

/// An 8x8 JPEG whose start-of-frame header claims 60000x60000 (10.8 GB of RGB if it were decoded).
fn bomb(path: &Path) {
    jpeg(path, 8, 8);
    let mut bytes = std::fs::read(path).unwrap();
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bytes[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    std::fs::write(path, bytes).unwrap();
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(FGVC).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn verify_header_reports_a_pixel_bomb_and_the_limit_is_a_flag() {
    let dir = tempfile::tempdir().unwrap();
    for class in ["a", "b"] {
        for i in 0..2 {
            jpeg(&dir.path().join(class).join(format!("{i}.jpg")), 20, 10);
        }
    }
    let bomb_path = dir.path().join("b/bomb.jpg");
    bomb(&bomb_path);
    let root = dir.path().to_str().unwrap();
    let verify = ["data", "verify", "--dataset", "folder", "--root", root];

    let (ok, text) = run(&[&verify[..], &["--check", "header"]].concat());
    assert!(!ok, "{text}");
    assert!(
        text.contains("bomb.jpg")
            && text.contains("60000x60000")
            && text.contains("89478485")
            && text.contains("PROBLEMS FOUND"),
        "{text}"
    );

    // Under a limit of 199 pixels the 20x10 images are refused too; at 200 only the bomb is.
    let (ok, text) = run(&[
        &verify[..],
        &["--check", "decode", "--max-image-pixels", "199"],
    ]
    .concat());
    assert!(!ok && text.contains("5 unreadable"), "{text}");
    let (ok, text) = run(&[
        &verify[..],
        &["--check", "decode", "--max-image-pixels", "200"],
    ]
    .concat());
    assert!(!ok && text.contains("1 unreadable"), "{text}");
    let (ok, text) = run(&[&verify[..], &["--max-image-pixels", "0"]].concat());
    assert!(!ok && text.contains("max-image-pixels"), "{text}");

    std::fs::remove_file(&bomb_path).unwrap();
    let (_, text) = run(&[&verify[..], &["--check", "header"]].concat());
    assert!(
        text.contains("4 images") && text.contains("0 unreadable"),
        "{text}"
    );
}

#[test]
fn preview_refuses_a_pixel_bomb_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bomb_path = dir.path().join("bomb.jpg");
    bomb(&bomb_path);
    let out = dir.path().join("preview.png");
    let (ok, text) = run(&[
        "augment",
        "preview",
        bomb_path.to_str().unwrap(),
        "--size",
        "56",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("bomb.jpg") && text.contains("60000x60000"),
        "{text}"
    );
    assert!(!out.exists());
    let small = dir.path().join("small.jpg");
    jpeg(&small, 20, 10);
    let (ok, text) = run(&[
        "augment",
        "preview",
        small.to_str().unwrap(),
        "--size",
        "56",
        "--max-image-pixels",
        "199",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("limit of 199"), "{text}");
}
