//! Every method's training step through the composite candle ops that run on CUDA and Metal
//! ([`fgvc_ops::with_composite_ops`]) against the CPU kernels, in f64: the gradients each optimiser step
//! receives agree, so a method trains the same on a GPU as on the CPU.

mod methods_support;

use candle_core::{DType, Device};
use fgvc_ops::ParamStore;
use fgvc_train::model::ModelConfig;
use methods_support::*;

/// The gradients of every optimiser step of one `train_step`, in f64, in step order.
fn gradients(m: &ModelConfig, build: &BuildMethod, size: usize, composite: bool) -> Log {
    let body = || {
        let mut method = build(m, ParamStore::new(4, DType::F64, &Device::Cpu));
        let mut b = batch(4, size, 3, 1);
        b.images = b.images.to_dtype(DType::F64).unwrap();
        // Learning rate 0: every optimiser step of the method sees the same parameters on both paths. With
        // updates, rounding-level differences flip max-pool and ReLU decisions in later steps and the
        // gradients part for reasons that have nothing to do with the ops.
        let (mut opt, log) = recording_sgd(&*method, 0.0, 0.0, method.default_zero_grad());
        let stats = train_step(&mut *method, &mut opt, &b, 10, 0);
        assert!(stats.loss.is_finite(), "{}: {stats:?}", method.name());
        log
    };
    if composite {
        fgvc_ops::with_composite_ops(body)
    } else {
        body()
    }
}

fn agree(m: &ModelConfig, size: usize, build: &BuildMethod) {
    let (fast, composite) = (
        gradients(m, build, size, false),
        gradients(m, build, size, true),
    );
    let (fast, composite) = (fast.lock().unwrap(), composite.lock().unwrap());
    assert!(!fast.is_empty(), "no optimiser step");
    assert_eq!(
        fast.len(),
        composite.len(),
        "{}: optimiser steps",
        m.backbone
    );
    for (step, (a, b)) in fast.iter().zip(composite.iter()).enumerate() {
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{} step {step}: parameters with a gradient",
            m.backbone
        );
        let abs_max = |t: &candle_core::Tensor| {
            t.abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        // Measured against the step's largest gradient: some are zero in exact arithmetic (a shift that only
        // reaches a training-mode BatchNorm) and rounding noise on both paths.
        let scale = a.values().map(abs_max).fold(0f64, f64::max);
        assert!(
            scale > 0.0,
            "{} step {step}: all gradients zero",
            m.backbone
        );
        for (name, g) in a {
            let diff = abs_max(&(g - &b[name]).unwrap());
            assert!(
                diff <= 1e-9 * abs_max(g).max(scale),
                "{} step {step} {name}: kernels and composite differ by {diff:e}",
                m.backbone
            );
        }
    }
}

#[test]
fn every_method_on_resnet_and_mobilenet_v2() {
    for method in tiny_methods() {
        for m in [resnet_tiny(), mobilenet_quarter()] {
            agree(&m, method.size, &*method.build);
        }
    }
}
