//! Every configuration in `configs/` parses, names its method in its file name, and has valid method
//! options; the synthetic ones also build their model. A typo in any of them fails here.

use std::path::PathBuf;

use candle_core::Device;
use fgvc_train::registry::{self, build_method, check as check_options};
use fgvc_train::Config;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn configs() -> Vec<PathBuf> {
    let dir = repo_root().join("configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_config_parses_and_checks() {
    let files = configs();
    // Every method of the registry ships a CUB and a synthetic preset that name it.
    for spec in registry::BUILTIN {
        let presets = [spec.presets.cub, spec.presets.synthetic];
        for preset in presets
            .iter()
            .map(|p| p.expect("a built-in method ships its presets"))
        {
            let config = preset
                .load(&repo_root(), &[])
                .unwrap_or_else(|e| panic!("{}: {e}", preset.file()));
            assert_eq!(config.method.name, spec.name, "{}", preset.file());
            assert!(files.contains(&repo_root().join(preset.file())));
        }
        assert!(
            spec.presets
                .published
                .iter()
                .any(|p| p.backbone == spec.presets.paper_backbone),
            "{}: the paper's backbone has no published row",
            spec.name
        );
    }
    for file in &files {
        let config = Config::load(file, &[]).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let stem = file.file_stem().unwrap().to_str().unwrap();
        assert!(
            stem.starts_with(&format!("{}-", config.method.name))
                || stem.ends_with(&format!("-{}", config.method.name)),
            "{stem}: the file name should name its method {:?}",
            config.method.name
        );
        check_options(&config).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if config.data.dataset == "synthetic" {
            let method = build_method(&config, config.data.synthetic.classes, &Device::Cpu)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(method.name(), config.method.name);
            assert!(
                !method.default_groups(config.optim.lr).is_empty()
                    || config.method.name == "baseline"
                    || config.method.name == "coarse2fine"
            );
        }
    }
}

#[test]
fn a_misspelt_option_is_an_error_naming_it() {
    // Options are checked when the configuration is parsed, naming the key and the file.
    let err = Config::parse(
        "[method]\nname = \"pmg\"\n[method.options]\ngranularity = [8, 4, 2]\n",
        "typo.toml",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("granularity") && err.contains("typo.toml"),
        "{err}"
    );
    // Values are checked too: PMG needs one loss weight per step.
    let err = Config::parse(
        "[method]\nname = \"pmg\"\n[method.options]\nloss_weights = [1.0, 2.0]\n",
        "short.toml",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("method.options.loss_weights") && err.contains("short.toml"),
        "{err}"
    );
    // A configuration changed after parsing is checked again by the registry.
    let mut config = Config::parse("[method]\nname = \"pmg\"\n", "ok.toml", &[]).unwrap();
    config.method.options = toml::from_str("loss_weights = [1.0, 2.0]").unwrap();
    assert!(check_options(&config)
        .unwrap_err()
        .to_string()
        .contains("loss_weights"));
    // An unknown method is refused when the configuration is parsed.
    assert!(Config::parse("[method]\nname = \"pgm\"\n", "x.toml", &[]).is_err());
    // The resolved configuration (what a run directory stores) keeps the options.
    let config = Config::parse(
        "[method]\nname = \"dcl\"\n[method.options]\ngamma = 0.01\ngrid = 2\nk = 1\n",
        "x.toml",
        &[],
    )
    .unwrap();
    let again = Config::parse(&config.to_toml(), "config.toml", &[]).unwrap();
    assert_eq!(again.method.options["gamma"].as_float(), Some(0.01));
}
