//! `fgvc explain` end to end on a tiny synthetic run: a PNG and a JSON sidecar per image, a bad image
//! reported while the others are still explained (and a non-zero exit), existing outputs refused unless
//! `--overwrite`, and a class out of range refused before anything is written.

use std::path::Path;
use std::process::{Command, Output};

use fgvc_data::{Dataset, Split, Synthetic, SyntheticConfig};

const FGVC: &str = env!("CARGO_BIN_EXE_fgvc");

/// The embedded default shrunk: 3 classes of 32x32 images, a 4-wide ResNet-18, one epoch.
const TINY: [&str; 11] = [
    "data.synthetic.classes=3",
    "data.synthetic.image_size=32",
    "data.synthetic.train_per_class=4",
    "data.synthetic.val_per_class=2",
    "data.synthetic.test_per_class=2",
    "data.batch_size=6",
    "data.eval_batch_size=2",
    "data.threads=1",
    "model.base_width=4",
    "train.threads=1",
    "train.epochs=1",
];

fn explain_cmd(checkpoint: &Path, out: &Path, images: &[&Path], extra: &[&str]) -> Output {
    let mut cmd = Command::new(FGVC);
    cmd.arg("explain")
        .arg("--checkpoint")
        .arg(checkpoint)
        .arg("--out")
        .arg(out)
        .args(images)
        .args(extra);
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn explain_writes_a_png_and_a_sidecar_per_image_and_reports_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut train = Command::new(FGVC);
    train.arg("train").arg("--out").arg(&run);
    for s in TINY {
        train.arg("--set").arg(s);
    }
    let output = train.output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let checkpoint = run.join("best.safetensors");

    let config = SyntheticConfig {
        classes: 3,
        image_size: 32,
        ..SyntheticConfig::default()
    };
    let test = Synthetic::new(config, Split::Test).unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(images.join("sub")).unwrap();
    let (a, b) = (images.join("a.png"), images.join("sub/b.png"));
    test.load(0).unwrap().save(&a).unwrap();
    test.load(1).unwrap().save(&b).unwrap();
    let broken = images.join("broken.jpg");
    std::fs::write(&broken, b"\xff\xd8\xff not a jpeg").unwrap();

    // A directory argument is searched like `fgvc predict` does; the broken file is reported, the two
    // others are written, and the exit status says something failed.
    let out = dir.path().join("explained");
    let output = explain_cmd(&checkpoint, &out, &[&images], &[]);
    let stdout = text(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains("broken.jpg: error:"),
        "the bad file is named: {stdout}"
    );
    assert!(
        text(&output.stderr).contains("1 of 3 image(s) could not be explained"),
        "{}",
        text(&output.stderr)
    );
    let mut written: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["a.json", "a.png", "b.json", "b.png"]);

    // The PNG: the 32 px input shown at 128 px, beside the baseline's one heatmap.
    let png = image::open(out.join("a.png")).unwrap().to_rgb8();
    assert_eq!((png.width(), png.height()), (2 * 128 + 4, 128));
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("a.json")).unwrap()).unwrap();
    assert_eq!(sidecar["png"], "a.png");
    assert_eq!(sidecar["method"], "baseline");
    assert_eq!(sidecar["input_size"], serde_json::json!([32, 32]));
    assert!(sidecar["image"].as_str().unwrap().ends_with("a.png"));
    let panels = sidecar["panels"].as_array().unwrap();
    assert_eq!(panels.len(), 2);
    assert_eq!(panels[0]["kind"], "input");
    assert_eq!(
        (panels[0]["x"].as_u64(), panels[0]["width"].as_u64()),
        (Some(0), Some(128))
    );
    let heatmap = &panels[1];
    assert_eq!(heatmap["kind"], "grad_cam");
    assert_eq!(heatmap["name"], "logits");
    assert_eq!(heatmap["x"], 132);
    assert_eq!(heatmap["layers"], serde_json::json!(["layer4"]));
    let class = heatmap["class"].as_u64().unwrap() as usize;
    assert!(class < 3);
    assert_eq!(heatmap["class_name"], test.class_names()[class].as_str());
    let p = heatmap["probability"].as_f64().unwrap();
    assert!(p > 0.0 && p <= 1.0, "{p}");

    // The same names again: refused, nothing touched.
    let before = std::fs::read(out.join("a.png")).unwrap();
    let output = explain_cmd(&checkpoint, &out, &[&a], &["--class", "2"]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("a.png already exists") && stderr.contains("--overwrite"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(out.join("a.png")).unwrap(), before);
    // With --overwrite, and an explicit class, it is replaced.
    let output = explain_cmd(&checkpoint, &out, &[&a], &["--class", "2", "--overwrite"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("a.json")).unwrap()).unwrap();
    assert_eq!(sidecar["panels"][1]["class"], 2);

    // A class out of range names the range, and writes nothing.
    let fresh = dir.path().join("fresh");
    let output = explain_cmd(&checkpoint, &fresh, &[&a], &["--class", "3"]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("class 3 is out of range") && stderr.contains("(0..=2)"),
        "{stderr}"
    );
    assert!(!fresh.exists());
}
