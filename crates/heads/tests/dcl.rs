//! DCL heads: both discriminators, both location heads, geometry errors, loss helpers, official parity.
mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use fgvc_heads::dcl::*;
use fgvc_ops::ParamStore;

fn head(swap: SwapHead, location: LocationHead, grid: usize) -> (ParamStore, DclHead) {
    let store = ParamStore::new(8, DType::F32, &Device::Cpu);
    let cfg = DclConfig {
        in_channels: 6,
        num_classes: 4,
        swap,
        location,
        grid,
    };
    let head = DclHead::new(cfg, &store.root()).unwrap();
    (store, head)
}

#[test]
fn shapes_for_every_form_and_map_size() {
    // Feature maps of a stride-16 backbone at 32, 64, 96 and 64x96 inputs, with the largest grid that fits.
    for ((h, w), n) in [((2, 2), 2), ((4, 4), 2), ((6, 6), 3), ((4, 6), 2)] {
        for swap in [SwapHead::Binary, SwapHead::Joint] {
            for location in [LocationHead::Official, LocationHead::Paper] {
                let (_, head) = head(swap, location, n);
                let out = head.forward(&det((3, 6, h, w), 1).unwrap()).unwrap();
                assert_eq!(out.logits.dims(), &[3, 4]);
                assert_eq!(
                    out.swap.dim(1).unwrap(),
                    if swap == SwapHead::Binary { 2 } else { 8 }
                );
                match location {
                    LocationHead::Official => {
                        assert_eq!(out.location.dims(), &[3, n * n]);
                        assert!(
                            abs_sum(
                                &out.location
                                    .abs()
                                    .unwrap()
                                    .clamp(1f32, f32::MAX)
                                    .unwrap()
                                    .affine(1., -1.)
                                    .unwrap()
                            ) == 0.0
                        );
                    }
                    LocationHead::Paper => {
                        assert_eq!(out.location.dims(), &[3, 2, n, n]);
                        assert!(out
                            .location
                            .flatten_all()
                            .unwrap()
                            .to_vec1::<f32>()
                            .unwrap()
                            .iter()
                            .all(|&v| v >= 0.0));
                    }
                }
                assert_eq!(out.official_prediction().unwrap().dims(), &[3, 4]);
            }
        }
    }
}

#[test]
fn impossible_geometry_is_an_error() {
    let (_, h) = head(SwapHead::Joint, LocationHead::Official, 7);
    let err = h
        .forward(&det((2, 6, 12, 12), 1).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiples of N"), "{err}");
    let (_, h) = head(SwapHead::Joint, LocationHead::Paper, 2);
    assert!(h.forward(&det((2, 6, 4, 5), 1).unwrap()).is_err());
    assert!(
        h.forward(&det((2, 5, 4, 4), 1).unwrap()).is_err(),
        "wrong channel count"
    );
    assert!(region_avg_pool(&det((1, 1, 6, 6), 1).unwrap(), 4).is_err());
}

#[test]
fn every_parameter_learns_from_the_dcl_loss() {
    let dev = Device::Cpu;
    for location in [LocationHead::Official, LocationHead::Paper] {
        for swap in [SwapHead::Binary, SwapHead::Joint] {
            let (store, head) = head(swap, location, 2);
            // Two originals and their destroyed copies, interleaved as the official collate does.
            let out = head
                .forward(
                    &det((4, 6, 4, 4), 3)
                        .unwrap()
                        .relu()
                        .unwrap()
                        .affine(1., 0.1)
                        .unwrap(),
                )
                .unwrap();
            let labels = [1u32, 1, 3, 3];
            let destroyed = [false, true, false, true];
            let y = Tensor::new(&labels, &dev).unwrap();
            let ys = swap_targets(&labels, &destroyed, swap, 4, &dev).unwrap();
            let perm = vec![1u32, 0, 3, 2];
            let id = vec![0u32, 1, 2, 3];
            let loc = match location {
                LocationHead::Official => {
                    let rows: Vec<f32> = [&id, &perm, &id, &perm]
                        .iter()
                        .flat_map(|p| official_law(p, 2).unwrap())
                        .collect();
                    Tensor::from_vec(rows, (4, 4), &dev).unwrap()
                }
                LocationHead::Paper => {
                    paper_location_targets(&[id.clone(), perm.clone(), id, perm], 2, &dev).unwrap()
                }
            };
            let w = DclLossWeights {
                alpha: 1.0,
                beta: 1.0,
                gamma: 1.0,
            };
            let (total, cls, sw, l) = dcl_loss(&out, &y, &ys, &loc, w).unwrap();
            let sum = cls.add(&sw).unwrap().add(&l).unwrap();
            assert_close("total", &total, &sum, 1e-6);
            assert_all_params_have_grad(&store, &total.backward().unwrap());
        }
    }
}

#[test]
fn targets_and_losses() {
    let dev = Device::Cpu;
    // Official law for N = 7: (idx - 24) / 49.
    let law = official_law(&(0..49).collect::<Vec<u32>>(), 7).unwrap();
    assert_eq!(law[0], -24.0 / 49.0);
    assert_eq!(law[48], 24.0 / 49.0);
    assert!(official_law(&[0, 1, 2], 2).is_err());
    // Duplicates are allowed: the official destroyed-image law is a brightness-matching guess.
    assert!(official_law(&[0, 0, 1, 1], 2).is_ok());
    // Swap targets.
    let t = swap_targets(&[2, 2, 0], &[false, true, true], SwapHead::Binary, 3, &dev).unwrap();
    assert_eq!(t.to_vec1::<u32>().unwrap(), vec![1, 0, 0]);
    let t = swap_targets(&[2, 2, 0], &[false, true, true], SwapHead::Joint, 3, &dev).unwrap();
    assert_eq!(t.to_vec1::<u32>().unwrap(), vec![2, 5, 3]);
    // Paper targets: 1-based (row, col) of the source region shown at each position.
    let t = paper_location_targets(&[vec![3, 0, 1, 2]], 2, &dev).unwrap();
    assert_eq!(
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![2., 1., 1., 2., 2., 1., 2., 1.]
    );
    assert!(
        paper_location_targets(&[vec![0, 0, 1, 2]], 2, &dev).is_err(),
        "not a permutation"
    );
    // Paper L1: per-image sum, batch mean.
    let pred = Tensor::zeros((2, 2, 2, 2), DType::F32, &dev).unwrap();
    let target = Tensor::ones((2, 2, 2, 2), DType::F32, &dev).unwrap();
    assert_eq!(
        paper_location_loss(&pred, &target)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        8.0
    );
    let m = Tensor::new(&[[0.5f32, -0.5]], &dev).unwrap();
    let l = Tensor::new(&[[0.0f32, 0.5]], &dev).unwrap();
    assert_eq!(
        official_location_loss(&m, &l)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.75
    );
    // Official prediction with cls_mul adds both halves of the swap logits.
    let out = DclOutput {
        logits: Tensor::new(&[[1f32, 2.]], &dev).unwrap(),
        swap: Tensor::new(&[[10f32, 20., 100., 200.]], &dev).unwrap(),
        location: Tensor::zeros((1, 1), DType::F32, &dev).unwrap(),
    };
    assert_eq!(
        out.official_prediction().unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![111., 222.]]
    );
}

#[test]
fn matches_the_official_dcl_heads() {
    let fx = fixture("dcl");
    let store = ParamStore::new(0, DType::F32, &Device::Cpu);
    let cfg = DclConfig {
        in_channels: 8,
        num_classes: 3,
        swap: SwapHead::Joint,
        location: LocationHead::Official,
        grid: 3,
    };
    let head = DclHead::new(cfg, &store.root()).unwrap();
    load_params(&store, &fx);
    let x = candle_core::Var::from_tensor(&fx["input.0"]).unwrap();
    let out = head.forward(x.as_tensor()).unwrap();
    assert_close("logits", &out.logits, &fx["out.0"], 1e-5);
    assert_close("swap", &out.swap, &fx["out.1"], 1e-5);
    assert_close("mask", &out.location, &fx["out.2"], 1e-5);
    // The fixture's destroyed law uses the permutation [1, 0, 2, 4, 3, 5, 8, 6, 7]; rebuild it with the helper.
    let perm = [1u32, 0, 2, 4, 3, 5, 8, 6, 7];
    let id: Vec<u32> = (0..9).collect();
    let rows: Vec<f32> = [&id[..], &perm, &id, &perm]
        .iter()
        .flat_map(|p| official_law(p, 3).unwrap())
        .collect();
    let law = Tensor::from_vec(rows, (4, 9), &Device::Cpu).unwrap();
    assert_close("law", &law, &fx["law"], 1e-7);
    let w = DclLossWeights {
        alpha: 1.0,
        beta: 1.0,
        gamma: 1.0,
    };
    let (total, ..) = dcl_loss(
        &out,
        &labels(&fx["labels"]),
        &labels(&fx["swap_labels"]),
        &law,
        w,
    )
    .unwrap();
    assert_close("loss", &total.reshape(1).unwrap(), &fx["loss"], 1e-5);
    let grads = total.backward().unwrap();
    for (name, var) in store.trainable() {
        assert_close(
            &format!("grad {name}"),
            grads.get(var.as_tensor()).unwrap(),
            &fx[&format!("grad.{name}")],
            1e-4,
        );
    }
    assert_close(
        "grad input",
        grads.get(x.as_tensor()).unwrap(),
        &fx["grad.input.0"],
        1e-4,
    );
}
