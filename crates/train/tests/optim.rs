//! The optimisers against PyTorch's trajectories (fixtures/optim_reference.json, made by
//! fixtures/make_optim_reference.py): SGD plain, with momentum, Nesterov and dampening, AdamW with two sets
//! of betas; two parameter groups with their own learning rate and weight decay and a changing schedule; a
//! parameter without gradient in some steps, under PyTorch ≥ 2.0 (`set_to_none`) and < 2.0 (`zero`)
//! semantics; and a parameter that never gets one.

use candle_core::{DType, Device, Tensor, Var};
use fgvc_ops::{Init, ParamStore};
use fgvc_train::checkpoint;
use fgvc_train::optim::{
    AdamWConfig, GroupSpec, Optimizer, OptimizerConfig, ParamGroups, SgdConfig, ZeroGrad,
};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/optim_reference.json")).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// A store holding the fixture's four parameters at their initial values.
fn store(fx: &Value) -> ParamStore {
    let store = ParamStore::new(0, DType::F32, &Device::Cpu);
    for (name, shape) in fx["names"]
        .as_array()
        .unwrap()
        .iter()
        .zip(fx["shapes"].as_array().unwrap())
    {
        let name = name.as_str().unwrap();
        let shape: Vec<usize> = shape
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let var = store.var(name, shape.clone(), Init::Const(0.0)).unwrap();
        let init = Tensor::from_vec(floats(&fx["init"][name]), shape, &Device::Cpu).unwrap();
        var.set(&init).unwrap();
    }
    store
}

fn optimizer(case: &Value, store: &ParamStore) -> Box<dyn Optimizer> {
    let spec = |name: &str| GroupSpec {
        name: name.into(),
        params: vec![name.into()],
        lr: case["groups"][name]["lr"].as_f64(),
        weight_decay: case["groups"][name]["weight_decay"].as_f64(),
        freeze_epochs: 0,
    };
    let groups = ParamGroups::new(
        store.trainable(),
        &[spec("backbone"), spec("head")],
        1.0,
        0.0,
    )
    .unwrap();
    let o = &case["optimizer"];
    let config = match o["kind"].as_str().unwrap() {
        "sgd" => OptimizerConfig::Sgd(SgdConfig {
            momentum: o["momentum"].as_f64().unwrap(),
            dampening: o["dampening"].as_f64().unwrap(),
            nesterov: o["nesterov"].as_bool().unwrap(),
        }),
        _ => OptimizerConfig::AdamW(AdamWConfig {
            beta1: o["beta1"].as_f64().unwrap(),
            beta2: o["beta2"].as_f64().unwrap(),
            eps: o["eps"].as_f64().unwrap(),
        }),
    };
    let zero_grad = match case["semantics"].as_str().unwrap() {
        "none" => ZeroGrad::SetToNone,
        _ => ZeroGrad::Zero,
    };
    config.build(groups, zero_grad).unwrap()
}

/// Step `t` of the fixture: schedule factor, then the gradients (by parameter order = sorted names).
fn step(fx: &Value, case: &Value, opt: &mut dyn Optimizer, t: usize) {
    opt.groups_mut()
        .set_lr_factor(fx["lr_scale"][t].as_f64().unwrap());
    let never: Vec<&str> = case["never"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let names: Vec<&str> = fx["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let grads: Vec<Option<Tensor>> = opt
        .groups()
        .params()
        .iter()
        .map(|p| {
            let i = names.iter().position(|n| *n == p.name).unwrap();
            if fx["has_grad"][t][i].as_bool().unwrap() && !never.contains(&p.name.as_str()) {
                let shape = p.var.shape().clone();
                Some(
                    Tensor::from_vec(floats(&fx["grads"][t][&p.name]), shape, &Device::Cpu)
                        .unwrap(),
                )
            } else {
                None
            }
        })
        .collect();
    opt.step(&grads).unwrap();
}

fn values(var: &Var) -> Vec<f32> {
    var.as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn case_label(case: &Value) -> String {
    format!(
        "{} / {} / never {:?}",
        case["name"], case["semantics"], case["never"]
    )
}

#[test]
fn trajectories_match_pytorch() {
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 24);
    let mut worst = 0f32;
    for case in cases {
        let store = store(&fx);
        let mut opt = optimizer(case, &store);
        for (t, expected) in case["trajectory"].as_array().unwrap().iter().enumerate() {
            step(&fx, case, &mut *opt, t);
            for (name, var) in store.trainable() {
                let want = floats(&expected[&name]);
                let got = values(&var);
                for (g, w) in got.iter().zip(&want) {
                    let err = (g - w).abs() / (1.0 + w.abs());
                    worst = worst.max(err);
                    assert!(
                        err < 2e-6,
                        "{}: step {t}, {name}: got {got:?}, PyTorch {want:?}",
                        case_label(case)
                    );
                }
            }
        }
    }
    eprintln!("worst relative difference from PyTorch: {worst:e}");
}

#[test]
fn semantics_differ_where_a_gradient_is_missing() {
    // The fixture's cases differ between "none" and "zero" exactly for the parameters that miss a gradient
    // after having had one (head.fc.weight at steps 1-2, backbone.conv.weight at step 3, head.fc.bias at 4);
    // the parameter that never had one is untouched under both.
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    for name in ["sgd_momentum_decay", "adamw"] {
        let get = |sem: &str, never: bool| {
            cases
                .iter()
                .find(|c| {
                    c["name"] == name
                        && c["semantics"] == sem
                        && c["never"].as_array().unwrap().is_empty() != never
                })
                .unwrap()
        };
        let (none, zero) = (get("none", false), get("zero", false));
        assert_ne!(
            none["trajectory"][1]["head.fc.weight"],
            zero["trajectory"][1]["head.fc.weight"]
        );
        assert_eq!(none["trajectory"][0], zero["trajectory"][0]);
        for sem in ["none", "zero"] {
            let never = get(sem, true);
            for t in 0..6 {
                assert_eq!(
                    never["trajectory"][t]["backbone.conv.bias"],
                    fx["init"]["backbone.conv.bias"]
                );
            }
        }
    }
}

#[test]
fn state_round_trips_through_a_checkpoint_bit_exactly() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    for case in fx["cases"].as_array().unwrap() {
        // Uninterrupted.
        let full = store(&fx);
        let mut opt = optimizer(case, &full);
        for t in 0..6 {
            step(&fx, case, &mut *opt, t);
        }
        // Three steps, checkpoint, a fresh model and optimiser restored from it, three more steps.
        let first = store(&fx);
        let mut opt = optimizer(case, &first);
        for t in 0..3 {
            step(&fx, case, &mut *opt, t);
        }
        let path = dir.path().join("ckpt.safetensors");
        checkpoint::save(&path, &first, Some(&opt.state().unwrap()), None, None).unwrap();
        let ckpt = checkpoint::load(&path, &Device::Cpu).unwrap();
        let second = store(&fx);
        checkpoint::apply_weights(&second, &ckpt.weights, true).unwrap();
        let mut opt = optimizer(case, &second);
        opt.load_state(ckpt.optimizer.as_ref().unwrap()).unwrap();
        for t in 3..6 {
            step(&fx, case, &mut *opt, t);
        }
        for ((name, a), (_, b)) in full.trainable().iter().zip(second.trainable()) {
            assert_eq!(values(a), values(&b), "{}: {name}", case_label(case));
        }
    }
}

#[test]
fn groups_select_by_name_and_skip_buffers() {
    let dev = Device::Cpu;
    let store = ParamStore::new(1, DType::F32, &dev);
    for name in [
        "layer1.0.bn1.weight",
        "layer1.0.bn1.running_mean",
        "fc.weight",
        "heads.fc.bias",
        "layer10.w",
    ] {
        store.var(name, 2, Init::Const(1.0)).unwrap();
    }
    let spec = |name: &str, pat: &str, lr: f64| GroupSpec {
        name: name.into(),
        params: vec![pat.into()],
        lr: Some(lr),
        weight_decay: Some(0.5),
        freeze_epochs: 2,
    };
    let groups = ParamGroups::new(
        store.all(),
        &[spec("heads", "heads", 0.1), spec("early", "layer1", 0.01)],
        1.0,
        0.0,
    )
    .unwrap();
    let by_name: Vec<(String, String)> = groups
        .params()
        .iter()
        .map(|p| (p.name.clone(), groups.groups()[p.group].name.clone()))
        .collect();
    assert_eq!(
        by_name,
        [
            ("fc.weight".to_string(), "default".to_string()),
            ("heads.fc.bias".into(), "heads".into()),
            ("layer1.0.bn1.weight".into(), "early".into()),
            ("layer10.w".into(), "default".into()),
        ]
    );
    // A group that selects nothing is an error naming it.
    let err = ParamGroups::new(store.all(), &[spec("typo", "haeds", 0.1)], 1.0, 0.0).unwrap_err();
    assert!(err.to_string().contains("typo"), "{err}");

    // Freezing: a frozen group is skipped entirely, decay included; buffers are never touched.
    let mut groups = groups;
    groups.apply_freezing(1);
    let mut opt = OptimizerConfig::Sgd(SgdConfig {
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
    })
    .build(groups, ZeroGrad::Zero)
    .unwrap();
    let ones = Tensor::ones(2, DType::F32, &dev).unwrap();
    let grads = vec![Some(ones.clone()); 4];
    opt.step(&grads).unwrap();
    let v = |n: &str| store.get(n).unwrap().as_tensor().to_vec1::<f32>().unwrap();
    assert_eq!(v("heads.fc.bias"), [1.0, 1.0]);
    assert_eq!(v("layer1.0.bn1.weight"), [1.0, 1.0]);
    assert_eq!(v("fc.weight"), [0.0, 0.0]); // lr 1, no decay: 1 - 1
    assert_eq!(v("layer1.0.bn1.running_mean"), [1.0, 1.0]);
    opt.groups_mut().apply_freezing(2);
    opt.step(&grads).unwrap();
    // First step of the thawed group: d = g + 0.5 p = 1.5, p = 1 - 0.1 * 1.5.
    assert!((v("heads.fc.bias")[0] - 0.85).abs() < 1e-7);
}
