//! Coarse2Fine: orthogonal attention init, bilinear attention pooling, differentiable resize and zoom, and
//! the fine loss reaching the attention through the inverse mapping.
mod common;

use candle_core::{DType, Device, Module, Tensor, Var};
use common::*;
use fgvc_heads::coarse2fine::*;
use fgvc_heads::interp::{bilinear_weights, resize_bilinear, zoom};
use fgvc_ops::{Conv2d, Conv2dConfig, ParamStore, Params};

fn small_cfg() -> Coarse2FineConfig {
    let mut cfg = Coarse2FineConfig::new(12, 5);
    cfg.num_attentions = 4;
    cfg.reduce_channels = 3;
    cfg.hidden_channels = 6;
    cfg
}

/// A stand-in backbone: one 8x8, stride-8 conv to 12 channels, then ReLU.
fn stem(p: &Params) -> Conv2d {
    Conv2d::new(3, 12, 8, Conv2dConfig::new(8, 0), true, &p.pp("backbone")).unwrap()
}

#[test]
fn attention_weight_starts_orthogonal() {
    let store = ParamStore::new(21, DType::F32, &Device::Cpu);
    let mut cfg = Coarse2FineConfig::new(64, 10);
    cfg.num_attentions = 32;
    let head = Coarse2Fine::new(cfg, &store.root().pp("heads")).unwrap();
    let w = head.attention().conv().weight().reshape((32, 64)).unwrap();
    assert_eq!(
        store.get("heads.attentions.conv.weight").unwrap().dims(),
        &[32, 64, 1, 1]
    );
    let wwt = w.matmul(&w.t().unwrap()).unwrap();
    let eye = Tensor::eye(32, DType::F32, &Device::Cpu).unwrap();
    let err = wwt
        .sub(&eye)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(err < 1e-5, "W W^T deviates from I by {err}");
    // Not a trivial orthogonal matrix (e.g. a slice of the identity): the rows are dense.
    let zeros = w
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .filter(|v| v.abs() < 1e-9)
        .count();
    assert!(zeros < 10, "{zeros} zero entries");
    // A different seed gives a different orthogonal matrix.
    let other = ParamStore::new(22, DType::F32, &Device::Cpu);
    let h2 = Coarse2Fine::new(cfg, &other.root()).unwrap();
    assert!(
        rel_err(
            &h2.attention().conv().weight().reshape((32, 64)).unwrap(),
            &w
        ) > 1e-3
    );
}

#[test]
fn without_orthogonal_init_the_attention_starts_at_pytorch_default() {
    let store = ParamStore::new(21, DType::F32, &Device::Cpu);
    let mut cfg = Coarse2FineConfig::new(64, 10);
    cfg.num_attentions = 32;
    cfg.orthogonal_init = false;
    let head = Coarse2Fine::new(cfg, &store.root()).unwrap();
    let w = head.attention().conv().weight().reshape((32, 64)).unwrap();
    // Kaiming-uniform with a = sqrt 5 on fan-in 64: |w| <= 1/8, rows far from unit norm.
    let values = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(values.iter().all(|v| v.abs() <= 0.125 + 1e-6));
    let norms = w.sqr().unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
    assert!(norms.iter().all(|&n| n < 0.6), "{norms:?}");
}

/// An image whose attention maps are all zero (every map dead after the ReLU, common on tiny maps) pools to
/// zeros. Its gradient must be finite, as `F.normalize`'s is: candle's sqrt backward gave 0/0 = NaN there and
/// poisoned every parameter's gradient.
#[test]
fn bilinear_attention_pooling_of_dead_maps_has_a_finite_gradient() {
    let f = Var::from_tensor(&det((2, 3, 2, 2), 5).unwrap()).unwrap();
    let live = det((1, 2, 2, 2), 6).unwrap().relu().unwrap();
    let dead = Tensor::zeros((1, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let a = Var::from_tensor(&Tensor::cat(&[&live, &dead], 0).unwrap()).unwrap();
    let p = bilinear_attention_pool(f.as_tensor(), a.as_tensor()).unwrap();
    assert_eq!(p.get(1).unwrap().to_vec1::<f32>().unwrap(), vec![0.0; 6]);
    let weights = det((2, 6, 1, 1), 7).unwrap().reshape((2, 6)).unwrap();
    let grads = (p * weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (name, v) in [("features", &f), ("maps", &a)] {
        let g = grads.get(v.as_tensor()).unwrap();
        let values = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(values.iter().all(|x| x.is_finite()), "{name}: {values:?}");
        // The live image still gets a gradient.
        assert!(
            g.get(0)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
    }
}

#[test]
fn bilinear_attention_pooling_is_ws_dan_bap() {
    let f = det((2, 3, 2, 2), 5).unwrap();
    let a = det((2, 2, 2, 2), 6).unwrap().relu().unwrap();
    let p = bilinear_attention_pool(&f, &a).unwrap();
    assert_eq!(p.dims(), &[2, 6]);
    // Computed by hand: mean over positions of A[b, m] * F[b, c], signed sqrt, L2 normalisation.
    let f4: Vec<Vec<Vec<Vec<f32>>>> = (0..2)
        .map(|b| f.get(b).unwrap().to_vec3::<f32>().unwrap())
        .collect();
    let a4: Vec<Vec<Vec<Vec<f32>>>> = (0..2)
        .map(|b| a.get(b).unwrap().to_vec3::<f32>().unwrap())
        .collect();
    let pv = p.to_vec2::<f32>().unwrap();
    for b in 0..2 {
        let mut raw = vec![];
        for am in &a4[b] {
            for fc in &f4[b] {
                let s: f32 = am
                    .iter()
                    .flatten()
                    .zip(fc.iter().flatten())
                    .map(|(x, y)| x * y)
                    .sum();
                let v = s / 4.0;
                raw.push(v.signum() * (v.abs() + 1e-12).sqrt());
            }
        }
        let norm = raw.iter().map(|v| v * v).sum::<f32>().sqrt();
        for (k, r) in raw.iter().enumerate() {
            assert!(
                (pv[b][k] - r / norm).abs() < 1e-5,
                "b{b} k{k}: {} vs {}",
                pv[b][k],
                r / norm
            );
        }
    }
}

#[test]
fn resize_matches_pytorch_interpolate_forward_and_backward() {
    let fx = fixture("interp");
    let x = Var::from_tensor(&fx["input.0"]).unwrap();
    let y = resize_bilinear(x.as_tensor(), 7, 4).unwrap();
    assert_close("interpolate", &y, &fx["out.0"], 1e-6);
    let g = y
        .mul(&fx["coeff"])
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_close(
        "interpolate grad",
        g.get(x.as_tensor()).unwrap(),
        &fx["grad.input.0"],
        1e-5,
    );
    // And candle's (backward-less) forward agrees, upsampling and downsampling.
    let candle = fx["input.0"].upsample_bilinear2d(7, 4, false).unwrap();
    assert_close("candle upsample", &y, &candle, 1e-6);
    let w = bilinear_weights(3, 5);
    for r in 0..3 {
        assert!((w[r * 5..(r + 1) * 5].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}

#[test]
fn zoom_with_the_full_box_is_the_identity_and_a_box_selects_its_region() {
    let img = det((2, 3, 8, 6), 7).unwrap();
    let full = Tensor::new(&[[0f32, 0., 8., 6.], [0., 0., 8., 6.]], &Device::Cpu).unwrap();
    assert_close("identity", &zoom(&img, &full, 8, 6).unwrap(), &img, 1e-6);
    // The box rows 2..6, cols 1..4 at its own size is exactly that crop.
    let b = Tensor::new(&[[2f32, 1., 6., 4.], [2., 1., 6., 4.]], &Device::Cpu).unwrap();
    let crop = img.narrow(2, 2, 4).unwrap().narrow(3, 1, 3).unwrap();
    assert_close("crop", &zoom(&img, &b, 4, 3).unwrap(), &crop, 1e-6);
    // Doubling the crop is bilinear upsampling of it, away from the border.
    let up = zoom(&img, &b, 8, 6).unwrap();
    let reference = resize_bilinear(&crop, 8, 6).unwrap();
    assert_close(
        "zoom x2",
        &up.narrow(2, 1, 6).unwrap().narrow(3, 1, 4).unwrap(),
        &reference.narrow(2, 1, 6).unwrap().narrow(3, 1, 4).unwrap(),
        1e-5,
    );
    assert!(zoom(&img, &b.narrow(0, 0, 1).unwrap(), 4, 3).is_err());
}

#[test]
fn soft_box_recovers_a_block_and_is_differentiable() {
    // A block of ones on rows 4..12, cols 2..6 of a 16x16 map.
    let mut v = vec![0f32; 256];
    for r in 4..12 {
        for c in 2..6 {
            v[r * 16 + c] = 1.0;
        }
    }
    let map =
        Var::from_tensor(&Tensor::from_vec(v, (1, 1, 16, 16), &Device::Cpu).unwrap()).unwrap();
    let b = soft_box(map.as_tensor(), 0.0, 0.0).unwrap();
    let bv = b.to_vec2::<f32>().unwrap()[0].clone();
    let expected = [4.0, 2.0, 12.0, 6.0];
    for (got, want) in bv.iter().zip(expected) {
        assert!((got - want).abs() < 0.1, "box {bv:?} vs {expected:?}");
    }
    let padded = soft_box(map.as_tensor(), 0.5, 0.0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()[0]
        .clone();
    assert!((padded[2] - padded[0] - 12.0).abs() < 0.2, "{padded:?}");
    let floored = soft_box(map.as_tensor(), 0.0, 0.75)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()[0]
        .clone();
    assert!(
        (floored[3] - floored[1] - 12.0).abs() < 1e-4,
        "min_zoom floor: {floored:?}"
    );
    let g = b.sum_all().unwrap().backward().unwrap();
    assert!(g.get(map.as_tensor()).is_some());
}

#[test]
fn shapes_at_several_input_sizes() {
    let store = ParamStore::new(23, DType::F32, &Device::Cpu);
    let p = store.root();
    let stem = stem(&p);
    let head = Coarse2Fine::new(small_cfg(), &p.pp("heads")).unwrap();
    for (h, w) in [(32, 32), (64, 64), (96, 96), (64, 96)] {
        let images = det((2, 3, h, w), 9).unwrap();
        let out = head
            .forward_t(&images, |x: &Tensor| stem.forward(x)?.relu(), true)
            .unwrap();
        assert_eq!(out.coarse.maps.dims(), &[2, 4, h / 8, w / 8]);
        assert_eq!(out.coarse.parts.dims(), &[2, 48]);
        assert_eq!(out.region.dims(), &[2, 1, h, w]);
        assert_eq!(out.boxes.dims(), &[2, 4]);
        assert_eq!(out.zoomed.dims(), &[2, 3, h, w]);
        assert_eq!(out.fine.logits.dims(), &[2, 5]);
        assert_eq!(out.prediction().unwrap().dims(), &[2, 5]);
        // Part features have unit norm; the region map is a probability map.
        let norms = out
            .coarse
            .parts
            .sqr()
            .unwrap()
            .sum(1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-4), "{norms:?}");
        let r = out.region.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(r.iter().all(|&v| v > 0.0 && v < 1.0));
    }
}

#[test]
fn the_zoom_reaches_the_attention_conv_through_the_inverse_mapping() {
    let store = ParamStore::new(24, DType::F32, &Device::Cpu);
    let p = store.root();
    let stem = stem(&p);
    let head = Coarse2Fine::new(small_cfg(), &p.pp("heads")).unwrap();
    let images = det((2, 3, 32, 32), 10).unwrap();
    // Coarse features are constants here: only the path images -> zoom -> region -> inverse -> attention counts.
    let features = stem.forward(&images).unwrap().relu().unwrap().detach();
    let coarse = head.attend(&features, true).unwrap();
    let region = head.region_map(&features, &coarse.maps, 32, 32).unwrap();
    let (zoomed, _) = head.zoom_images(&images, &region).unwrap();
    let weights = det((2, 3, 32, 32), 11).unwrap();
    let grads = zoomed
        .mul(&weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let w = store.get("heads.attentions.conv.weight").unwrap();
    let g = grads
        .get(w.as_tensor())
        .expect("attention conv has no gradient through the zoom");
    assert!(abs_sum(g) > 0.0, "zero gradient at the attention conv");
    for name in [
        "heads.inverse.reduce.weight",
        "heads.inverse.fuse.weight",
        "heads.inverse.out.bias",
        "heads.attentions.bn.weight",
    ] {
        let v = store.get(name).unwrap();
        assert!(
            grads.get(v.as_tensor()).map(abs_sum).unwrap_or(0.0) > 0.0,
            "{name}"
        );
    }
    // With the region map cut from the graph the same loss leaves the attention untouched.
    let (zoomed, _) = head.zoom_images(&images, &region.detach()).unwrap();
    let grads = zoomed
        .mul(&weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(grads.get(w.as_tensor()).is_none());
}

#[test]
fn the_fine_loss_trains_every_parameter_and_differs_from_the_coarse_path_alone() {
    let store = ParamStore::new(25, DType::F32, &Device::Cpu);
    let p = store.root();
    let stem = stem(&p);
    let head = Coarse2Fine::new(small_cfg(), &p.pp("heads")).unwrap();
    let images = det((4, 3, 32, 32), 12).unwrap();
    let y = Tensor::new(&[0u32, 1, 2, 4], &Device::Cpu).unwrap();
    let backbone = |x: &Tensor| stem.forward(x)?.relu();
    let out = head.forward_t(&images, backbone, true).unwrap();
    let fine = candle_nn::loss::cross_entropy(&out.fine.logits, &y).unwrap();
    let grads = fine.backward().unwrap();
    assert_all_params_have_grad(&store, &grads);
    // The fine loss's gradient at the attention conv is more than the fine pass's own use of the attention:
    // recomputing with the region map detached changes it.
    let w = store.get("heads.attentions.conv.weight").unwrap();
    let full = grads.get(w.as_tensor()).unwrap().clone();
    let features = backbone(&images).unwrap();
    let coarse = head.attend(&features, true).unwrap();
    let region = head
        .region_map(&features, &coarse.maps, 32, 32)
        .unwrap()
        .detach();
    let (zoomed, _) = head.zoom_images(&images, &region).unwrap();
    let fine_only = candle_nn::loss::cross_entropy(
        &head
            .attend(&backbone(&zoomed).unwrap(), true)
            .unwrap()
            .logits,
        &y,
    )
    .unwrap();
    let partial = fine_only
        .backward()
        .unwrap()
        .get(w.as_tensor())
        .unwrap()
        .clone();
    assert!(
        rel_err(&full, &partial) > 1e-6,
        "the inverse-mapping path adds nothing"
    );
}

#[test]
fn attention_batch_norm_follows_train_and_eval() {
    let store = ParamStore::new(26, DType::F32, &Device::Cpu);
    let head = Coarse2Fine::new(small_cfg(), &store.root()).unwrap();
    let f = det((2, 12, 4, 4), 13).unwrap().relu().unwrap();
    let rm = store.get("attentions.bn.running_mean").unwrap();
    let before = rm.as_tensor().to_vec1::<f32>().unwrap();
    let e1 = head.attend(&f, false).unwrap().logits;
    assert_eq!(rm.as_tensor().to_vec1::<f32>().unwrap(), before);
    assert_eq!(rel_err(&head.attend(&f, false).unwrap().logits, &e1), 0.0);
    head.attend(&f, true).unwrap();
    assert_ne!(rm.as_tensor().to_vec1::<f32>().unwrap(), before);
    // WS-DAN's BasicConv2d BatchNorm: eps 1e-3.
    assert_eq!(ATTENTION_BN.eps, 1e-3);
}

#[test]
fn invalid_configurations_are_rejected() {
    let store = ParamStore::new(0, DType::F32, &Device::Cpu);
    let mut cfg = small_cfg();
    cfg.num_attentions = 0;
    assert!(Coarse2Fine::new(cfg, &store.root()).is_err());
    let mut cfg = small_cfg();
    cfg.min_zoom = 1.5;
    assert!(Coarse2Fine::new(cfg, &store.root()).is_err());
    let head = Coarse2Fine::new(small_cfg(), &store.root().pp("ok")).unwrap();
    assert!(head.attend(&det((2, 11, 4, 4), 1).unwrap(), true).is_err());
}
