//! `cargo xtask train-cub` without the network or a training run: configuration choice and overrides for
//! every method, `--no-download` errors, reading a run directory written with `fgvc-train`'s own types, and
//! the whole plan on a tiny fake CUB-200-2011 (real JPEGs and index files, opened with `fgvc-train`'s data
//! code) down to the exact cargo command.

mod support;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use clap::{Parser, ValueEnum};
use fgvc_train::config::Selection;
use fgvc_train::eval::{EvalReport, HeadReport};
use fgvc_train::metrics::{MetricsLog, Record};
use fgvc_train::run_dir::RunDir;
use fgvc_train::Config;
use support::quiet;
use xtask::train_cub::{
    cub_problem, fetch, format_comparison, paper_result, read_result, BackboneArg, MethodArg,
    Missing, Plan, TrainCubArgs, CUB_FILES,
};

/// The arguments as `cargo xtask train-cub` parses them.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: TrainCubArgs,
}

fn parse(words: &[&str]) -> Result<TrainCubArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("train-cub").chain(words.iter().copied())).map(|c| c.args)
}

fn root() -> PathBuf {
    xtask::workspace_root()
}

/// `path` as the plan writes it: relative to the workspace root (where `fgvc train` runs) when inside it.
fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn scratch(test: &str) -> PathBuf {
    support::scratch("xtask-train-cub", test)
}

fn plan(words: &[&str]) -> Plan {
    Plan::resolve(&parse(words).unwrap(), &root()).unwrap_or_else(|e| panic!("{words:?}: {e:#}"))
}

#[test]
fn each_method_runs_its_reproduction_config_on_its_paper_backbone() {
    // Every method of the registry, on the backbone its entry names (ResNet-50; MobileNetV2 for RMG-PMSI).
    let cases = fgvc_train::registry::methods()
        .into_iter()
        .map(|m| (m.name, m.presets.paper_backbone));
    for (method, backbone) in cases {
        let p = plan(&["--method", method]);
        assert_eq!(p.backbone.name(), backbone);
        assert_eq!(
            p.base_config,
            root().join(format!("configs/{method}-{backbone}-cub.toml"))
        );
        assert_eq!(p.config_file(), p.base_config);
        assert!(p.derived_config.is_none());
        // The defaults are the configurations' own paths: nothing to override.
        assert!(p.overrides.is_empty(), "{method}: {:?}", p.overrides);
        assert_eq!(p.config.method.name, method);
        assert_eq!(p.config.model.backbone, backbone);
        assert_eq!(p.config.data.dataset, "cub");
        assert_eq!(p.config.train.epochs, p.reproduction_epochs);
        assert_eq!(
            p.out,
            root().join(format!("runs/train-cub-{method}-{backbone}"))
        );
        assert_eq!(p.cub_root().unwrap(), root().join("data/CUB_200_2011"));
        assert_eq!(
            p.weights().unwrap(),
            root().join(format!("data/weights/{backbone}.safetensors"))
        );
        assert!(paper_result(method, backbone).is_some());
    }
    // PMG is the default method.
    assert_eq!(plan(&[]).method, MethodArg::named("pmg").unwrap());
    let p = plan(&["--method", "baseline"]);
    assert_eq!(p.reproduction_epochs, 180);
    assert_eq!(p.reproduction_select, Selection::BestOnTest);
    assert_eq!(p.config.model.head_lr_mult, 10.0);
}

#[test]
fn another_backbone_derives_from_the_methods_config() {
    // PMG on VGG-16: the ResNet-50 configuration with the backbone, its weights and half its deepest
    // stage as the block width.
    let p = plan(&["--method", "pmg", "--backbone", "vgg16"]);
    assert_eq!(p.base_config, root().join("configs/pmg-resnet50-cub.toml"));
    assert_eq!(p.base_backbone, BackboneArg::Resnet50);
    assert_eq!(
        p.overrides,
        [
            "model.backbone=vgg16",
            "method.options.block_channels=256",
            "model.pretrained=data/weights/vgg16.safetensors",
        ]
    );
    assert_eq!(p.config.model.backbone, "vgg16");
    assert_eq!(
        p.config.method.options["block_channels"].as_integer(),
        Some(256)
    );
    assert!(p.derived_config.is_none());
    assert!(p.describe(&[], false).contains("no pmg-vgg16-cub.toml"));
    // DCL has no backbone-dependent option.
    let p = plan(&["--method", "dcl", "--backbone", "mobilenet_v2"]);
    assert_eq!(
        p.overrides,
        [
            "model.backbone=mobilenet_v2",
            "model.pretrained=data/weights/mobilenet_v2.safetensors",
        ]
    );
    // RMG-PMSI on ResNet-50: the MobileNetV2 stem option must go, which --set cannot do, so a copy without
    // it is written to the run directory and trained from.
    let p = plan(&["--method", "rmg-pmsi", "--backbone", "resnet50"]);
    assert_eq!(
        p.base_config,
        root().join("configs/rmg-pmsi-mobilenet_v2-cub.toml")
    );
    assert_eq!(p.removed, ["model.first_stride"]);
    let (path, text) = p.derived_config.clone().unwrap();
    assert_eq!(path, p.out.join("train-cub-config.toml"));
    assert_eq!(p.config_file(), path);
    assert_eq!(p.config.model.first_stride, None);
    assert_eq!(
        p.config.method.options["block_channels"].as_integer(),
        Some(1024)
    );
    let derived = Config::parse(&text, "derived", &[]).unwrap();
    assert_eq!(derived.train.epochs, 150);
    assert_eq!(derived.model.backbone, "mobilenet_v2");
    let args = p.cargo_args();
    let at = args.iter().position(|a| a == "--config").unwrap();
    assert_eq!(
        args[at + 1],
        "runs/train-cub-rmg-pmsi-resnet50/train-cub-config.toml"
    );
    // PMG on MobileNetV2 keeps torchvision's stem (no first_stride in the PMG configuration).
    let p = plan(&["--method", "pmg", "--backbone", "mobilenet_v2"]);
    assert!(p.derived_config.is_none());
    assert_eq!(
        p.config.method.options["block_channels"].as_integer(),
        Some(640)
    );
    // A pair with no published number says so.
    assert!(p
        .describe(&[], false)
        .contains("paper: no published number"));
}

#[test]
fn deepest_stage_channels_match_fgvc_backbone() {
    for b in BackboneArg::value_variants() {
        let kind: fgvc_backbone::BackboneKind = b.name().parse().unwrap();
        let store = fgvc_ops::ParamStore::new(0, DType::F32, &Device::Cpu);
        let net = fgvc_backbone::build(kind, None, &store.root()).unwrap();
        assert_eq!(
            net.stage_channels().last().copied(),
            Some(b.deepest_channels()),
            "{}",
            b.name()
        );
    }
}

#[test]
fn unknown_names_and_bad_overrides_are_refused() {
    let err = parse(&["--method", "pgm"]).err().unwrap().to_string();
    assert!(err.contains("pgm") && err.contains("rmg-pmsi"), "{err}");
    let err = parse(&["--backbone", "resnet152"])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("resnet152") && err.contains("mobilenet_v2"),
        "{err}"
    );
    let err = parse(&["--device", "tpu"]).err().unwrap().to_string();
    assert!(err.contains("tpu"), "{err}");
    // Overrides are checked against the configuration schema before anything runs.
    let err = Plan::resolve(&parse(&["--set", "train.epoch=3"]).unwrap(), &root()).unwrap_err();
    assert!(format!("{err:#}").contains("train.epoch"), "{err:#}");
    let err = Plan::resolve(&parse(&["--epochs", "0"]).unwrap(), &root()).unwrap_err();
    assert!(err.to_string().contains("--epochs"), "{err}");
    // Method options are checked too.
    let err = Plan::resolve(
        &parse(&["--set", "method.options.granularity=[4]"]).unwrap(),
        &root(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("granularity"), "{err:#}");
}

#[test]
fn overrides_paths_devices_and_the_command() {
    let dir = scratch("overrides");
    let data = dir.join("datasets");
    let weights = dir.join("w");
    let out = dir.join("run");
    let p = plan(&[
        "--method",
        "dcl",
        "--epochs",
        "2",
        "--data",
        data.to_str().unwrap(),
        "--weights-dir",
        weights.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--set",
        "data.batch_size=4",
        "--device",
        "cuda",
        "--resume",
    ]);
    let cub = data.join("CUB_200_2011");
    assert_eq!(
        p.overrides,
        [
            format!(
                "model.pretrained={}",
                shown(&weights.join("resnet50.safetensors"))
            ),
            format!("data.root={}", shown(&cub)),
            "train.epochs=2".to_string(),
            "data.batch_size=4".to_string(),
        ]
    );
    assert_eq!(p.config.train.epochs, 2);
    assert_eq!(p.config.data.batch_size, 4);
    assert!(p.epochs_changed());
    let mut expected: Vec<String> = [
        "run",
        "--release",
        "-p",
        "fgvc-cli",
        "--features",
        "cuda",
        "--",
        "train",
        "--config",
        "configs/dcl-resnet50-cub.toml",
        "--out",
    ]
    .map(String::from)
    .to_vec();
    expected.push(shown(&out));
    expected.extend(["--device".to_string(), "cuda".to_string()]);
    for o in &p.overrides {
        expected.extend(["--set".to_string(), o.clone()]);
    }
    expected.push("--resume".into());
    assert_eq!(p.cargo_args(), expected);
    let line = p.command_line();
    assert!(line.starts_with("cargo run --release -p fgvc-cli --features cuda -- train --config configs/dcl-resnet50-cub.toml"), "{line}");
    let text = p.describe(&[], false);
    assert!(text.contains("epochs: 2 (the reproduction: 359)"), "{text}");
    assert!(text.contains("not be comparable"), "{text}");
    assert!(text.contains(&line), "{text}");
    // Nothing is there, so the plan lists both downloads with their URLs, mirror first.
    let text = p.describe(&["http://mirror.example/files".to_string()], false);
    assert!(
        text.contains("from http://mirror.example/files/CUB_200_2011.tgz"),
        "{text}"
    );
    assert!(
        text.contains("from http://mirror.example/files/resnet50-0676ba61.pth"),
        "{text}"
    );
    // Metal gets its feature; the CPU none.
    let metal = plan(&["--device", "metal"]).cargo_args();
    assert!(metal.windows(2).any(|w| w == ["--features", "metal"]));
    let cpu = plan(&[]).cargo_args();
    assert!(!cpu.iter().any(|a| a == "--features"));
    assert!(cpu.windows(2).any(|w| w == ["--device", "cpu"]));
    assert!(!cpu.iter().any(|a| a == "--resume"));
}

#[test]
fn no_download_names_what_is_missing_and_how_to_get_it() {
    let dir = scratch("no-download");
    let data = dir.join("data");
    let weights = dir.join("weights");
    let args = parse(&[
        "--data",
        data.to_str().unwrap(),
        "--weights-dir",
        weights.to_str().unwrap(),
        "--no-download",
    ])
    .unwrap();
    let p = Plan::resolve(&args, &root()).unwrap();
    let missing = p.missing();
    assert_eq!(missing.len(), 2, "{missing:?}");
    assert!(matches!(
        &missing[0],
        Missing::Dataset { download_dir: Some(d), .. } if *d == data
    ));
    assert!(matches!(
        &missing[1],
        Missing::Weights {
            model: Some("resnet50"),
            ..
        }
    ));
    let dl = quiet();
    let err = fetch(&p, &dl, &[], true).unwrap_err().to_string();
    let cub = data.join("CUB_200_2011");
    assert!(err.contains(&cub.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("cargo xtask download cub --dir {}", shown(&data))),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "cargo xtask weights resnet50 --dir {}",
            shown(&weights)
        )),
        "{err}"
    );
    // Nothing was created.
    assert!(!data.exists() && !weights.exists());
    // The dry run says the same and does not fail.
    let text = p.describe(&[], true);
    assert!(
        text.contains("--no-download: the run would stop here"),
        "{text}"
    );

    // An incomplete dataset is named with what it lacks; the download would skip it, so it must go first.
    std::fs::create_dir_all(cub.join("images")).unwrap();
    std::fs::write(cub.join("images.txt"), "").unwrap();
    let problem = cub_problem(&cub).unwrap();
    assert!(problem.contains("image_class_labels.txt"), "{problem}");
    let err = fetch(&p, &dl, &[], false).unwrap_err().to_string();
    assert!(err.contains("cannot be downloaded here"), "{err}");
    assert!(err.contains(&format!("remove {}", cub.display())), "{err}");
}

#[test]
fn default_paths_give_the_short_commands() {
    let p = plan(&[]);
    let m = Missing::Dataset {
        root: root().join("data/CUB_200_2011"),
        problem: "does not exist".into(),
        download_dir: Some(root().join("data")),
    };
    assert_eq!(p.root, root());
    assert_eq!(m.remedy(&root(), &[]), "`cargo xtask download cub`");
    let w = Missing::Weights {
        path: root().join("data/weights/resnet50.safetensors"),
        model: Some("resnet50"),
    };
    assert_eq!(w.remedy(&root(), &[]), "`cargo xtask weights resnet50`");
}

/// A run directory as `fgvc train` leaves it, written with `fgvc-train`'s own types: the resolved
/// configuration, per-epoch evaluations on the test split (best-on-test), the final test record and
/// `eval-test.json` with the protocol the trainer adds.
fn fake_run(dir: &Path, epochs: usize, test_top1: f64, report: bool) {
    let config = Config::load(
        &root().join("configs/pmg-resnet50-cub.toml"),
        &[format!("train.epochs={epochs}")],
    )
    .unwrap();
    let run = RunDir::create(dir).unwrap();
    std::fs::write(run.config(), config.to_toml()).unwrap();
    let mut log = MetricsLog::open(&run, None).unwrap();
    let heads = |combined: f64| {
        [
            ("combined", combined),
            ("classifier1", 0.5),
            ("classifier2", 0.6),
            ("classifier3", 0.7),
            ("concat", combined - 0.01),
        ]
    };
    for epoch in 0..epochs {
        log.append(Record {
            kind: "train".into(),
            epoch,
            step: 10 * epoch as u64 + 5,
            loss: Some(1.0),
            ..Default::default()
        })
        .unwrap();
        // Per-epoch evaluations on the test split: these are not the final result.
        let top1 = 0.9 + 0.001 * epoch as f64;
        log.append(Record {
            kind: "eval".into(),
            epoch,
            step: 10 * (epoch as u64 + 1),
            split: Some("test".into()),
            top1: Some(top1),
            heads: Some(
                heads(top1)
                    .iter()
                    .map(|(n, v)| (n.to_string(), *v))
                    .collect(),
            ),
            ..Default::default()
        })
        .unwrap();
    }
    log.append(Record {
        kind: "test".into(),
        epoch: epochs - 1,
        step: 10 * epochs as u64,
        split: Some("test".into()),
        top1: Some(test_top1),
        top5: Some(0.98),
        mean_per_class: Some(test_top1),
        heads: Some(
            heads(test_top1)
                .iter()
                .map(|(n, v)| (n.to_string(), *v))
                .collect(),
        ),
        ..Default::default()
    })
    .unwrap();
    if report {
        let eval = EvalReport {
            split: "test".into(),
            count: 5794,
            class_names: (0..200).map(|i| format!("class {i}")).collect(),
            heads: heads(test_top1)
                .iter()
                .map(|(n, v)| HeadReport {
                    name: n.to_string(),
                    top1: *v,
                    top5: 0.98,
                    per_class: vec![*v; 200],
                    mean_per_class: *v,
                    confusion: Vec::new(),
                })
                .collect(),
        };
        let mut json: serde_json::Value = serde_json::from_str(&eval.to_json()).unwrap();
        json["protocol"] = serde_json::Value::String(
            fgvc_train::trainer::protocol_label(Selection::BestOnTest).into(),
        );
        json["selected_epoch"] = serde_json::json!(epochs - 1);
        std::fs::write(run.eval_report("test"), json.to_string()).unwrap();
    }
}

#[test]
fn a_finished_run_is_read_and_compared_with_the_paper() {
    let dir = scratch("result");
    fake_run(&dir, 3, 0.8912, true);
    let r = read_result(&dir).unwrap();
    assert_eq!(r.epochs_run, 3);
    assert_eq!(r.epochs_planned, 3);
    assert_eq!(r.top1, 0.8912);
    assert_eq!(r.head, "combined");
    assert_eq!(r.heads.len(), 5);
    assert_eq!(r.heads[4], ("concat".to_string(), 0.8812));
    assert_eq!(r.selected_epoch, Some(3));
    assert_eq!(r.classes, Some(200));
    assert_eq!(r.select, Selection::BestOnTest);
    assert!(r.protocol.as_deref().unwrap().starts_with("best-on-test"));

    // As if all 200 epochs had run: comparable, no notes.
    let full = xtask::train_cub::RunResult {
        epochs_run: 200,
        ..r.clone()
    };
    let text = format_comparison("pmg", "resnet50", 200, Selection::BestOnTest, &full);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[1], "CUB-200-2011 result");
    let header: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(header[0], "method");
    let row: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(
        row,
        ["pmg", "resnet50", "200", "of", "200", "89.12%", "combined", "89.6%", "-0.48", "points"]
    );
    assert!(
        text.contains("paper source: PMG paper (ECCV 2020)"),
        "{text}"
    );
    assert!(
        text.contains("other predictions: classifier1 50.00%"),
        "{text}"
    );
    assert!(text.contains("weights selected: best-on-test"), "{text}");
    assert!(!text.contains("note:"), "{text}");

    // Shortened: said plainly.
    let text = format_comparison("pmg", "resnet50", 200, Selection::BestOnTest, &r);
    assert!(text.contains("3 of 200"), "{text}");
    assert!(
        text.contains("note: 3 of 200 epochs; not comparable to the paper"),
        "{text}"
    );
    // A pair without a number.
    let text = format_comparison("pmg", "resnet18", 200, Selection::BestOnTest, &full);
    assert!(text.contains("no published number"), "{text}");
    let text = format_comparison(
        "rmg-pmsi",
        "mobilenet_v2",
        200,
        Selection::BestOnTest,
        &full,
    );
    assert!(text.contains("no published number"), "{text}");
    assert!(text.contains("could not be recovered"), "{text}");
}

#[test]
fn without_eval_report_the_metrics_record_suffices() {
    let dir = scratch("metrics-only");
    fake_run(&dir, 2, 0.75, false);
    let r = read_result(&dir).unwrap();
    assert_eq!(r.top1, 0.75);
    assert_eq!(r.head, "combined");
    assert_eq!(r.epochs_run, 2);
    assert_eq!(r.classes, None);
    // An unfinished run (no test record) is an error that says so.
    let dir = scratch("unfinished");
    RunDir::create(&dir).unwrap();
    std::fs::write(
        dir.join("metrics.jsonl"),
        "{\"kind\":\"eval\",\"epoch\":0,\"step\":5,\"split\":\"test\",\"top1\":0.5}\n",
    )
    .unwrap();
    let err = read_result(&dir).unwrap_err().to_string();
    assert!(err.contains("no test record"), "{err}");
}

/// A CUB-200-2011 folder in miniature: `classes` classes of `train + test` 24x24 JPEGs each (a colour per
/// class), with every index file `fgvc-data` reads.
fn fake_cub(root: &Path, classes: usize, train: usize, test: usize) {
    let mut images = String::new();
    let mut labels = String::new();
    let mut split = String::new();
    let mut boxes = String::new();
    let mut names = String::new();
    let mut id = 0;
    for c in 1..=classes {
        let class = format!("{c:03}.Bird_{c}");
        names.push_str(&format!("{c} {class}\n"));
        std::fs::create_dir_all(root.join("images").join(&class)).unwrap();
        for i in 0..train + test {
            id += 1;
            let rel = format!("{class}/Bird_{c}_{i:04}.jpg");
            let img = image::RgbImage::from_fn(24, 24, |x, y| {
                image::Rgb([
                    (60 * c) as u8,
                    (x * 9 + i as u32) as u8,
                    (y * 9 + 40 * c as u32) as u8,
                ])
            });
            img.save(root.join("images").join(&rel)).unwrap();
            images.push_str(&format!("{id} {rel}\n"));
            labels.push_str(&format!("{id} {c}\n"));
            split.push_str(&format!("{id} {}\n", u8::from(i < train)));
            boxes.push_str(&format!("{id} 2.0 2.0 20.0 20.0\n"));
        }
    }
    for (file, text) in [
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("classes.txt", names),
        ("bounding_boxes.txt", boxes),
    ] {
        std::fs::write(root.join(file), text).unwrap();
    }
}

#[test]
fn a_fake_cub_and_local_weights_plan_without_downloading() {
    let dir = scratch("fake-cub");
    let data = dir.join("data");
    let cub = data.join("CUB_200_2011");
    fake_cub(&cub, 3, 4, 2);
    assert_eq!(cub_problem(&cub), None);
    for f in CUB_FILES {
        assert!(cub.join(f).is_file());
    }
    // A tiny weights file with torchvision-style naming: loaded non-strictly, it simply matches nothing.
    let weights = dir.join("weights");
    std::fs::create_dir_all(&weights).unwrap();
    fgvc_backbone::weights::save_tensors(
        &[(
            "unused".to_string(),
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        )],
        weights.join("resnet18.safetensors"),
    )
    .unwrap();
    let out = dir.join("run");
    let words = [
        "--method",
        "baseline",
        "--backbone",
        "resnet18",
        "--epochs",
        "1",
        "--data",
        data.to_str().unwrap(),
        "--weights-dir",
        weights.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-download",
        "--set",
        "model.base_width=8",
        "--set",
        "data.resize=36",
        "--set",
        "data.crop=32",
        "--set",
        "data.batch_size=4",
    ];
    let args = parse(&words).unwrap();
    let p = Plan::resolve(&args, &root()).unwrap();
    assert!(p.missing().is_empty(), "{:?}", p.missing());
    let dl = quiet();
    fetch(&p, &dl, &[], true).unwrap();
    assert_eq!(
        p.base_config,
        root().join("configs/baseline-resnet50-cub.toml")
    );
    assert_eq!(p.cub_root().unwrap(), cub);
    assert_eq!(p.weights().unwrap(), weights.join("resnet18.safetensors"));
    // The configuration fgvc train will resolve (from the workspace root) opens the fake dataset.
    let mut config = p.config.clone();
    config.data.root = p.cub_root();
    let train = fgvc_train::data::open_split(&config, fgvc_data::Split::Train).unwrap();
    let test = fgvc_train::data::open_split(&config, fgvc_data::Split::Test).unwrap();
    assert_eq!(train.num_classes(), 3);
    assert_eq!(test.len(), 6);
    // The exact command.
    let mut expected = format!(
        "cargo run --release -p fgvc-cli -- train --config configs/baseline-resnet50-cub.toml --out {} \
         --device cpu --set model.backbone=resnet18 --set model.pretrained={} --set data.root={} \
         --set train.epochs=1",
        shown(&out),
        shown(&weights.join("resnet18.safetensors")),
        shown(&cub)
    );
    for s in [
        "model.base_width=8",
        "data.resize=36",
        "data.crop=32",
        "data.batch_size=4",
    ] {
        expected.push_str(&format!(" --set {s}"));
    }
    assert_eq!(p.command_line(), expected);
    let text = p.describe(&[], true);
    assert!(
        text.contains("downloads: none, everything is in place"),
        "{text}"
    );
    assert!(text.contains("epochs: 1 (the reproduction: 180)"), "{text}");
    assert!(text.contains("paper: no published number"), "{text}");
}

#[test]
fn a_long_projection_is_read_from_the_estimate_and_the_estimate_is_the_same_command() {
    let p = plan(&["--device", "cpu"]);
    let (run, estimate) = (p.cargo_args(), p.estimate_args());
    assert_eq!(estimate[..run.len()], run[..]);
    assert_eq!(estimate[run.len()..], ["--estimate", "3"]);
    let stdout =
        "building...\n{\"device\":\"cpu\",\"seconds_per_step\":3.0,\"projected_hours\":187.5}\n";
    assert_eq!(xtask::train_cub::projected_hours(stdout).unwrap(), 187.5);
    assert_eq!(xtask::train_cub::MAX_HOURS, 24.0);
    assert!(xtask::train_cub::projected_hours("no json here").is_err());
    assert!(xtask::train_cub::projected_hours("{\"device\":\"cpu\"}").is_err());
    // Without --device, the GPU when nvidia-smi lists one.
    let auto = plan(&[]);
    assert_eq!(auto.device, xtask::train_cub::default_device());
}
