//! The whole configuration is checked when it is parsed, before anything is built or written: the image
//! sizes against the pipelines and the backbone, and every method's grids and stage taps, each error naming
//! its key and where the value came from (the file or the `--set`).

use candle_core::Device;
use fgvc_train::{Config, TrainError, TrainOptions, Trainer};

/// The `(origin, key, message)` of the configuration error parsing `text` with `sets` gives.
fn refused(text: &str, sets: &[&str]) -> (String, String, String) {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    match Config::parse(text, "run.toml", &sets) {
        Err(TrainError::Config {
            origin,
            key,
            message,
        }) => (origin, key, message),
        Err(other) => panic!("not a configuration error: {other}"),
        Ok(_) => panic!("accepted:\n{text}\n{sets:?}"),
    }
}

fn assert_refused(text: &str, sets: &[&str], want_key: &str, want: &[&str]) {
    let (origin, key, message) = refused(text, sets);
    assert_eq!(key, want_key, "{message}");
    assert_eq!(origin, "run.toml", "{key}: {message}");
    for w in want {
        assert!(message.contains(w), "{key}: {message:?} lacks {w:?}");
    }
}

const PMG: &str = "[method]\nname = \"pmg\"\n";
const DCL: &str = "[method]\nname = \"dcl\"\n";
const RMG: &str = "[method]\nname = \"rmg-pmsi\"\n";

#[test]
fn a_crop_larger_than_its_resize_names_data_crop() {
    assert_refused(
        "[data]\naugment = \"dcl\"\ncrop = 80\nresize = 72\n",
        &[],
        "data.crop",
        &["data.crop = 80 does not fit data.resize = 72"],
    );
    // An explicit pipeline is named by its own key.
    assert_refused(
        "[data.train_pipeline]\nnormalize = \"half\"\nsteps = [{ op = \"resize\", height = 40, width = 40 }, \
         { op = \"random_crop\", height = 48, width = 48 }]\n",
        &[],
        "data.train_pipeline",
        &["does not fit"],
    );
}

#[test]
fn images_too_small_for_the_backbone_name_data_crop() {
    // VGG-16's block5 is 1/16 of the input: 8 px images leave it empty, for any method on it.
    for method in ["baseline", "coarse2fine"] {
        assert_refused(
            &format!("[method]\nname = \"{method}\"\n[model]\nbackbone = \"vgg16\"\n[data.synthetic]\nimage_size = 8\n"),
            &[],
            "data.crop",
            &["8x8", "too small for vgg16 block5, stride 16"],
        );
    }
}

#[test]
fn pmg_granularities_must_divide_the_crop() {
    assert_refused(
        &format!("{PMG}[method.options]\ngranularities = [5, 4, 2]\n"),
        &[],
        "method.options.granularities",
        &["granularity 5 does not divide the 64x64 training images (data.crop = 64)"],
    );
    // The shipped official setting at 448 is fine; at 444 the 8x8 jigsaw is not.
    Config::parse(
        &format!("{PMG}[data]\ncrop = 448\nresize = 550\n"),
        "run.toml",
        &[],
    )
    .unwrap();
    assert_refused(
        &format!("{PMG}[data]\ncrop = 444\nresize = 550\n"),
        &[],
        "method.options.granularities",
        &["granularity 8 does not divide the 444x444"],
    );
}

#[test]
fn pmg_and_rmg_pmsi_taps_must_exist_on_the_backbone() {
    assert_refused(
        &format!(
            "{PMG}[method.options]\ngranularities = [2, 2, 2, 2, 2, 2]\nloss_weights = [1, 1, 1, 1, 1, 1, 1]\n"
        ),
        &[],
        "method.options.granularities",
        &["6 entries", "resnet18 has only 5 stages (stem, layer1, layer2, layer3, layer4)"],
    );
    assert_refused(
        &format!("{RMG}[method.options]\nlevels = [1, 1, 1, 1, 1, 1]\nloss_weights = [1, 1, 1, 1, 1, 1, 1]\n"),
        &[],
        "method.options.levels",
        &["6 entries", "only 5 stages"],
    );
}

#[test]
fn rmg_pmsi_mosaic_grids_must_divide_the_crop() {
    assert_refused(
        &format!("{RMG}[data]\ncrop = 60\nresize = 68\n"),
        &[],
        "method.options.levels",
        &["level 3 (a 8x8 mosaic) does not divide the 60x60 training images"],
    );
}

#[test]
fn dcl_grid_must_divide_the_crop_and_the_deepest_map() {
    // Region confusion cuts the 64 px images into whole regions: 3 does not divide 64.
    assert_refused(
        &format!("{DCL}[method.options]\ngrid = 3\nk = 1\n"),
        &[],
        "method.options.grid",
        &[
            "grid 3 does not divide the 64x64 training images",
            "region confusion",
        ],
    );
    // 4 divides 64, but the location head pools ResNet-18's 2x2 layer4 map into 4x4 regions.
    assert_refused(
        &format!("{DCL}[method.options]\ngrid = 4\n"),
        &[],
        "method.options.grid",
        &[
            "grid 4 does not divide the 2x2 map of resnet18 layer4, stride 32",
            "multiple of 128 px",
        ],
    );
    // The official geometry: 7x7 regions of a 448 crop, a 14x14 layer4 map.
    Config::parse(
        &format!("{DCL}[model]\nbackbone = \"resnet50\"\n[data]\ndataset = \"cub\"\ncrop = 448\nresize = 512\n"),
        "run.toml",
        &[],
    )
    .unwrap();
}

#[test]
fn a_value_given_with_set_is_reported_as_coming_from_set() {
    // Range, type and unknown-key errors alike.
    for (set, key) in [
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=fast", "optim.lr"),
        ("optim.lrr=0.1", "optim.lrr"),
        ("train.epochs=0", "train.epochs"),
        (
            "method.options.granularities=[5, 4, 2]",
            "method.options.granularities",
        ),
    ] {
        let (origin, got, message) = refused(PMG, &[set]);
        assert_eq!(
            (origin.as_str(), got.as_str()),
            (format!("--set {set}").as_str(), key),
            "{message}"
        );
    }
    // A geometry error on a file's key also points at the --set that gave the other value involved.
    let (origin, key, message) = refused(PMG, &["data.crop=60", "data.resize=68"]);
    assert_eq!(
        (origin.as_str(), key.as_str()),
        ("run.toml", "method.options.granularities")
    );
    assert!(
        message.contains("(data.crop from --set data.crop=60)"),
        "{message}"
    );
}

#[test]
fn a_configuration_refused_by_the_trainer_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut config = Config::parse(PMG, "run.toml", &[]).unwrap();
    config.method.options = toml::from_str("granularities = [5, 4, 2]").unwrap();
    let err = Trainer::new(config, &run, &Device::Cpu, TrainOptions::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("method.options.granularities"), "{err}");
    assert!(
        !run.exists(),
        "a refused configuration created the run directory"
    );
}
