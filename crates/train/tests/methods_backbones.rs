//! Every method trains and predicts on each backbone family: ResNet (base width 8), VGG-16 with BatchNorm
//! and MobileNetV2 (width 0.25), at 32 px (64 px for DCL, whose 2x2 region grid must divide the deepest
//! map).

mod methods_support;

use fgvc_train::model::ModelConfig;
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

fn check(tiny: &TinyMethod, m: &ModelConfig, seed: u64) {
    let mut method = (tiny.build)(m, store(seed));
    let b = batch(4, tiny.size, 3, 1);
    let mut opt = sgd(&*method, 0.001, 0.0, method.default_zero_grad());
    let stats = train_step(&mut *method, &mut *opt, &b, 10, 0);
    assert!(
        stats.loss.is_finite() && stats.loss > 0.0,
        "{}: {stats:?}",
        method.name()
    );
    let p = method.predict(&b.images).unwrap();
    assert_eq!(p.heads.len(), tiny.heads, "{}", method.name());
    assert_eq!(p.heads[0].0, tiny.main);
    for (name, logits) in &p.heads {
        assert_eq!(logits.dims(), &[4, 3], "{} {name}", method.name());
    }
}

#[test]
fn pmg_and_rmg_pmsi_on_every_family() {
    for m in families() {
        check(&tiny_method("pmg"), &m, 1);
        check(&tiny_method("rmg-pmsi"), &m, 1);
    }
}

#[test]
fn dcl_and_coarse2fine_on_every_family() {
    for m in families() {
        check(&tiny_method("dcl"), &m, 2);
        check(&tiny_method("coarse2fine"), &m, 3);
    }
}

/// The cross-backbone and composite-path tests cover every fine-grained method of the registry: a method
/// added to the table without a tiny configuration here fails.
#[test]
fn every_registered_method_has_a_tiny_configuration() {
    let tiny: Vec<&str> = tiny_methods().iter().map(|t| t.name).collect();
    for spec in fgvc_train::registry::BUILTIN {
        if spec.name != fgvc_train::methods::baseline::NAME {
            assert!(
                tiny.contains(&spec.name),
                "no tiny configuration of {}",
                spec.name
            );
        }
    }
}
