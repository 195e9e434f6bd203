//! Every recipe trains and predicts on each backbone family: ResNet (base width 8), VGG-16 with BatchNorm
//! and MobileNetV2 (width 0.25), at 32 px (64 px for DCL, whose 2x2 region grid must divide the deepest
//! map).

mod methods_support;

use fgvc_train::methods::coarse2fine::{Coarse2FineMethod, Coarse2FineOptions};
use fgvc_train::methods::dcl::{Dcl, DclOptions};
use fgvc_train::methods::pmg::{Pmg, PmgOptions};
use fgvc_train::methods::rmg_pmsi::{RmgPmsi, RmgPmsiOptions};
use fgvc_train::model::ModelConfig;
use fgvc_train::Method;
use methods_support::*;

fn families() -> Vec<ModelConfig> {
    vec![
        resnet_tiny(),
        model("vgg16_bn"),
        ModelConfig {
            width_mult: Some(0.25),
            ..model("mobilenet_v2")
        },
    ]
}

fn check(method: &mut dyn Method, size: usize, main: &str, heads: usize) {
    let b = batch(4, size, 3, 1);
    let mut opt = sgd(method, 0.001, 0.0, method.default_zero_grad());
    let stats = train_step(method, &mut *opt, &b, 10, 0);
    assert!(
        stats.loss.is_finite() && stats.loss > 0.0,
        "{}: {stats:?}",
        method.name()
    );
    let p = method.predict(&b.images).unwrap();
    assert_eq!(p.heads.len(), heads, "{}", method.name());
    assert_eq!(p.heads[0].0, main);
    for (name, logits) in &p.heads {
        assert_eq!(logits.dims(), &[4, 3], "{} {name}", method.name());
    }
}

#[test]
fn pmg_and_rmg_pmsi_on_every_family() {
    for m in families() {
        let o = PmgOptions {
            feature_size: 8,
            block_channels: Some(8),
            ..PmgOptions::default()
        };
        check(
            &mut Pmg::new(&m, o, 3, store(1)).unwrap(),
            32,
            "combined",
            5,
        );
        let o = RmgPmsiOptions {
            feature_size: 8,
            block_channels: Some(8),
            ..RmgPmsiOptions::default()
        };
        check(
            &mut RmgPmsi::new(&m, o, 3, store(1)).unwrap(),
            32,
            "combined",
            5,
        );
    }
}

#[test]
fn dcl_and_coarse2fine_on_every_family() {
    for m in families() {
        let o = DclOptions {
            grid: 2,
            k: 1,
            ..DclOptions::default()
        };
        let normalize = fgvc_augment::transforms::Normalize::IMAGENET;
        check(
            &mut Dcl::new(&m, o, 3, store(2), normalize).unwrap(),
            64,
            "classifier",
            2,
        );
        let o = Coarse2FineOptions {
            num_attentions: 4,
            reduce_channels: 4,
            hidden_channels: 8,
            coarse_epochs: 5,
            ..Coarse2FineOptions::default()
        };
        check(
            &mut Coarse2FineMethod::new(&m, o, 3, store(3)).unwrap(),
            32,
            "combined",
            3,
        );
    }
}
