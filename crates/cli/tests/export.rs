//! `fgvc export` end to end on a tiny trained run: the ONNX file's input, outputs and metadata, the
//! inference safetensors' names and metadata, the export size options, and an existing `--out` kept unless
//! `--overwrite`.

use std::path::Path;
use std::process::{Command, Output};

use fgvc_onnx::proto::{
    tensor_shape_proto::dimension::Value as DimValue, type_proto, ValueInfoProto,
};

const FGVC: &str = env!("CARGO_BIN_EXE_fgvc");

/// The embedded default, shrunk: 4 classes of 32x32 images, a 4-wide ResNet-18, one epoch.
const TINY: [&str; 13] = [
    "data.synthetic.classes=4",
    "data.synthetic.image_size=32",
    "data.synthetic.train_per_class=4",
    "data.synthetic.val_per_class=2",
    "data.synthetic.test_per_class=2",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "data.threads=1",
    "model.base_width=4",
    "train.threads=1",
    "train.epochs=1",
    "schedule.warmup_iters=0",
    "seed=1",
];

fn run(args: &[&str], paths: &[&Path]) -> Output {
    let mut cmd = Command::new(FGVC);
    cmd.args(args);
    for p in paths {
        cmd.arg(p);
    }
    cmd.output().unwrap()
}

fn ok(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "fgvc failed:\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `[N, 3, 32, 32]`-style dims of a graph input or output.
fn dims(v: &ValueInfoProto) -> Vec<String> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.clone())
    else {
        panic!("not a tensor: {v:?}")
    };
    t.shape
        .unwrap()
        .dim
        .into_iter()
        .map(|d| match d.value.unwrap() {
            DimValue::DimValue(n) => n.to_string(),
            DimValue::DimParam(s) => s,
        })
        .collect()
}

#[test]
fn export_onnx_and_safetensors_from_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let mut train = Command::new(FGVC);
    train.arg("train").arg("--out").arg(&run_dir);
    for s in TINY {
        train.arg("--set").arg(s);
    }
    ok(train.output().unwrap());
    // The checkpoint alone: its run directory is gone.
    let ckpt = dir.path().join("model.safetensors");
    std::fs::rename(run_dir.join("best.safetensors"), &ckpt).unwrap();
    std::fs::remove_dir_all(&run_dir).unwrap();

    let onnx = dir.path().join("out/model.onnx");
    let stdout = ok(run(
        &["export", "--format", "onnx", "--checkpoint"],
        &[&ckpt, Path::new("--out"), &onnx],
    ));
    assert!(stdout.contains("input 32x32"), "{stdout}");
    let model = fgvc_onnx::decode(&std::fs::read(&onnx).unwrap()).unwrap();
    assert_eq!(model.opset_import[0].version, Some(fgvc_onnx::OPSET));
    assert_eq!(model.ir_version, Some(fgvc_onnx::IR_VERSION));
    let graph = model.graph.as_ref().unwrap();
    assert_eq!(graph.input.len(), 1);
    assert_eq!(graph.input[0].name.as_deref(), Some("images"));
    assert_eq!(dims(&graph.input[0]), ["N", "3", "32", "32"]);
    let outputs: Vec<_> = graph
        .output
        .iter()
        .map(|o| o.name.clone().unwrap())
        .collect();
    assert_eq!(outputs, ["logits"]);
    assert_eq!(dims(&graph.output[0]), ["N", "4"]);
    let meta: std::collections::HashMap<_, _> = fgvc_onnx::metadata(&model).into_iter().collect();
    let classes: Vec<String> = serde_json::from_str(&meta["classes"]).unwrap();
    assert_eq!(classes.len(), 4);
    assert!(
        classes.iter().all(|c| !c.starts_with("class ")),
        "{classes:?}"
    );
    assert_eq!(meta["predictions"], "[\"logits\"]");
    assert_eq!(meta["input_height"], "32");
    assert_eq!(meta["fgvc_version"], env!("CARGO_PKG_VERSION"));
    let mean: Vec<f32> = serde_json::from_str(&meta["mean"]).unwrap();
    assert_eq!(mean.len(), 3);
    assert!(
        meta["test_pipeline"].contains("normalize"),
        "{}",
        meta["test_pipeline"]
    );

    // An existing file is kept without --overwrite, replaced with it; here at another size.
    let before = std::fs::read(&onnx).unwrap();
    let out = run(
        &[
            "export",
            "--format",
            "onnx",
            "--height",
            "40",
            "--width",
            "48",
            "--checkpoint",
        ],
        &[&ckpt, Path::new("--out"), &onnx],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exists: pass --overwrite"), "{stderr}");
    assert_eq!(std::fs::read(&onnx).unwrap(), before);
    ok(run(
        &[
            "export",
            "--format",
            "onnx",
            "--height",
            "40",
            "--width",
            "48",
            "--overwrite",
            "--checkpoint",
        ],
        &[&ckpt, Path::new("--out"), &onnx],
    ));
    let model = fgvc_onnx::decode(&std::fs::read(&onnx).unwrap()).unwrap();
    assert_eq!(dims(&model.graph.unwrap().input[0]), ["N", "3", "40", "48"]);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["model.onnx"], "no temporary file is left");

    // Inference weights: the model's tensors under their names, no optimiser state, the same metadata.
    let weights = dir.path().join("weights.safetensors");
    ok(run(
        &["export", "--format", "safetensors", "--checkpoint"],
        &[&ckpt, Path::new("--out"), &weights],
    ));
    let bytes = std::fs::read(&weights).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = st.names().into_iter().map(String::from).collect();
    for want in [
        "conv1.weight",
        "layer4.1.bn2.running_var",
        "heads.fc.weight",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    assert!(names.iter().all(|n| !n.starts_with("optim/")), "{names:?}");
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    assert_eq!(meta["classes"], serde_json::to_string(&classes).unwrap());
}

#[test]
fn a_missing_checkpoint_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope/best.safetensors");
    let out = run(
        &["export", "--format", "onnx", "--out"],
        &[
            &dir.path().join("m.onnx"),
            Path::new("--checkpoint"),
            &missing,
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nope"), "{stderr}");
    assert!(!dir.path().join("m.onnx").exists());
}
