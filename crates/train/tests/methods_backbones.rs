//! Every recipe trains and predicts on each backbone family: ResNet (base width 8), VGG-16 with BatchNorm
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

fn check(recipe: &TinyRecipe, m: &ModelConfig, seed: u64) {
    let mut method = (recipe.build)(m, store(seed));
    let b = batch(4, recipe.size, 3, 1);
    let mut opt = sgd(&*method, 0.001, 0.0, method.default_zero_grad());
    let stats = train_step(&mut *method, &mut *opt, &b, 10, 0);
    assert!(
        stats.loss.is_finite() && stats.loss > 0.0,
        "{}: {stats:?}",
        method.name()
    );
    let p = method.predict(&b.images).unwrap();
    assert_eq!(p.heads.len(), recipe.heads, "{}", method.name());
    assert_eq!(p.heads[0].0, recipe.main);
    for (name, logits) in &p.heads {
        assert_eq!(logits.dims(), &[4, 3], "{} {name}", method.name());
    }
}

#[test]
fn pmg_and_rmg_pmsi_on_every_family() {
    for m in families() {
        check(&tiny_recipe("pmg"), &m, 1);
        check(&tiny_recipe("rmg-pmsi"), &m, 1);
    }
}

#[test]
fn dcl_and_coarse2fine_on_every_family() {
    for m in families() {
        check(&tiny_recipe("dcl"), &m, 2);
        check(&tiny_recipe("coarse2fine"), &m, 3);
    }
}
