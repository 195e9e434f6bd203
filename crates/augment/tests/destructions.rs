//! Behaviour of the destructions: exact inverses, the official permutation laws, bounds and errors.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use fgvc_augment::{
    destruction_preview, permute_cells, preview_grid, AugmentError, Jigsaw, JigsawMode,
    Permutation, RcmMode, RecursiveMosaic, RegionConfusion,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A batch whose every value is unique: value = flat index.
fn ramp(n: usize, c: usize, h: usize, w: usize) -> Tensor {
    Tensor::arange(0u32, (n * c * h * w) as u32, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .reshape((n, c, h, w))
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    a.sub(b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Reference: output pixel (b, c, y, x) must be the input pixel the permutation names, computed pixel by pixel.
fn check_against_reference(input: &Tensor, output: &Tensor, perms: &[Permutation]) {
    let (n, c, h, w) = input.dims4().unwrap();
    let x = input.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let y = output.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for b in 0..n {
        let p = &perms[if perms.len() == 1 { 0 } else { b }];
        let (ch, cw) = (h / p.grid, w / p.grid);
        for ci in 0..c {
            for row in 0..h {
                for col in 0..w {
                    let dst = (row / ch) * p.grid + col / cw;
                    let src = p.source_of[dst] as usize;
                    let (sr, sc) = (
                        (src / p.grid) * ch + row % ch,
                        (src % p.grid) * cw + col % cw,
                    );
                    let got = y[((b * c + ci) * h + row) * w + col];
                    let want = x[((b * c + ci) * h + sr) * w + sc];
                    assert_eq!(got, want, "image {b} channel {ci} pixel ({row},{col})");
                }
            }
        }
    }
}

#[test]
fn every_destruction_matches_the_pixel_reference_and_restores_exactly() {
    let images = ramp(3, 3, 56, 28);
    let mut r = rng(1);
    let outputs = vec![
        Jigsaw::new(7).unwrap().apply(&images, &mut r).unwrap(),
        Jigsaw::with_mode(4, JigsawMode::PerImage)
            .unwrap()
            .apply(&images, &mut r)
            .unwrap(),
        RegionConfusion::new(7, 2, RcmMode::Paper)
            .unwrap()
            .apply(&images, &mut r)
            .unwrap(),
        RegionConfusion::new(7, 2, RcmMode::Official)
            .unwrap()
            .apply(&images, &mut r)
            .unwrap(),
        RecursiveMosaic::new(2)
            .unwrap()
            .apply(&images, &mut r)
            .unwrap(),
    ];
    for out in outputs {
        assert_eq!(out.images.dims(), images.dims());
        assert_eq!(out.permutations.len(), 3);
        check_against_reference(&images, &out.images, &out.permutations);
        assert!(max_abs_diff(&out.images, &images) > 0.0, "nothing moved");
        assert_eq!(max_abs_diff(&out.restore().unwrap(), &images), 0.0);
    }
}

#[test]
fn official_jigsaw_is_one_full_cycle_shared_by_the_batch() {
    for n in 2..=8 {
        let jigsaw = Jigsaw::new(n).unwrap();
        let mut r = rng(n as u64);
        for _ in 0..200 {
            let p = jigsaw.official_permutation(&mut r);
            assert_eq!(p.cycle_lengths(), vec![n * n], "n = {n}: {p:?}");
        }
        let out = jigsaw.apply(&ramp(4, 1, 8 * n, 8 * n), &mut r).unwrap();
        assert!(out.permutations.iter().all(|p| *p == out.permutations[0]));
    }
}

#[test]
fn official_jigsaw_draws_every_cycle_uniformly() {
    // A 2x2 grid has 3! = 6 cyclic permutations of its four cells; each should come up 1/6 of the time.
    let jigsaw = Jigsaw::new(2).unwrap();
    let mut r = rng(5);
    let draws = 12_000;
    let mut counts: HashMap<Vec<u32>, usize> = HashMap::new();
    for _ in 0..draws {
        *counts
            .entry(jigsaw.official_permutation(&mut r).source_of)
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 6);
    for (p, count) in counts {
        let share = count as f64 / draws as f64;
        assert!((share - 1.0 / 6.0).abs() < 0.015, "{p:?}: {share}");
    }
}

#[test]
fn per_image_jigsaw_differs_between_images() {
    let out = Jigsaw::with_mode(4, JigsawMode::PerImage)
        .unwrap()
        .apply(&ramp(8, 1, 16, 16), &mut rng(2))
        .unwrap();
    let distinct: std::collections::HashSet<_> = out.permutations.iter().collect();
    assert!(distinct.len() > 1);
}

#[test]
fn paper_rcm_respects_the_2k_bound_and_reaches_it() {
    for (n, k) in [(7, 1), (7, 2), (7, 3), (4, 2), (8, 5)] {
        let rcm = RegionConfusion::new(n, k, RcmMode::Paper).unwrap();
        let mut r = rng((n * 10 + k) as u64);
        let mut largest = 0;
        for _ in 0..500 {
            let p = rcm.paper_permutation(&mut r);
            Permutation::new(n, p.source_of.clone()).unwrap();
            for cell in 0..n * n {
                let (dr, dc) = p.displacement(cell);
                let m = dr.unsigned_abs().max(dc.unsigned_abs());
                assert!(m < 2 * k, "n={n} k={k}: displacement ({dr},{dc}) of {p:?}");
                largest = largest.max(m);
            }
        }
        // The largest displacements are rare for large k, but the bound is approached.
        assert!(
            largest + 1 >= (2 * k - 1).min(n - 1),
            "n={n} k={k}: largest {largest}"
        );
    }
}

/// Share of region displacements (new - old, per axis) in DCL's official `swap`, N = 7, from
/// `tests/fixtures/dcl_swap_histogram.py` (200 000 draws of the code's own shuffle).
const OFFICIAL_COLUMN_SHARE: [(isize, f64); 8] = [
    (-1, 42.86),
    (0, 32.15),
    (1, 14.28),
    (2, 6.25),
    (3, 2.68),
    (4, 1.11),
    (5, 0.45),
    (6, 0.22),
];
const OFFICIAL_ROW_SHARE: [(isize, f64); 8] = [
    (-1, 42.80),
    (0, 32.22),
    (1, 14.30),
    (2, 6.23),
    (3, 2.67),
    (4, 1.12),
    (5, 0.45),
    (6, 0.22),
];

#[test]
fn official_rcm_reproduces_the_official_displacement_histogram() {
    let rcm = RegionConfusion::new(7, 2, RcmMode::Official).unwrap();
    let mut r = rng(11);
    let draws = 20_000;
    let (mut rows, mut cols) = (
        HashMap::<isize, usize>::new(),
        HashMap::<isize, usize>::new(),
    );
    let mut fixed = 0;
    for _ in 0..draws {
        let p = rcm.official_permutation(&mut r);
        fixed += p.fixed_points();
        for cell in 0..49 {
            let (dr, dc) = p.displacement(cell);
            *rows.entry(dr).or_default() += 1;
            *cols.entry(dc).or_default() += 1;
        }
    }
    let total = (draws * 49) as f64;
    for (observed, reference, axis) in [
        (&cols, &OFFICIAL_COLUMN_SHARE, "column"),
        (&rows, &OFFICIAL_ROW_SHARE, "row"),
    ] {
        assert!(observed
            .keys()
            .all(|d| reference.iter().any(|(r, _)| r == d)));
        for &(d, share) in reference.iter() {
            let got = 100.0 * *observed.get(&d).unwrap_or(&0) as f64 / total;
            assert!(
                (got - share).abs() < 1.0,
                "{axis} displacement {d}: {got:.2}% vs {share}%"
            );
        }
    }
    let fixed_share = 100.0 * fixed as f64 / total;
    assert!(
        (fixed_share - 10.37).abs() < 1.0,
        "{fixed_share}% of regions stay"
    );
}

#[test]
fn official_rcm_moves_whole_rows() {
    // Rows move as units: every output row holds cells of a single input row.
    let rcm = RegionConfusion::new(7, 1, RcmMode::Official).unwrap();
    let mut r = rng(4);
    for _ in 0..200 {
        let p = rcm.official_permutation(&mut r);
        for row in p.source_of.chunks(7) {
            assert!(row.iter().all(|&s| s / 7 == row[0] / 7), "{row:?}");
        }
    }
}

#[test]
fn official_law_matches_regions_by_brightness() {
    // Each 4x4 region of a 16x16 image gets its own flat grey level, so brightness identifies it.
    let n = 4;
    let levels: Vec<f32> = (0..n * n).map(|i| (i as f32 + 1.0) / 20.0).collect();
    let mut pixels = Vec::new();
    for _ in 0..3 {
        for y in 0..16 {
            for x in 0..16 {
                pixels.push(levels[(y / 4) * n + x / 4]);
            }
        }
    }
    let original = Tensor::from_vec(pixels, (1, 3, 16, 16), &Device::Cpu).unwrap();
    let rcm = RegionConfusion::new(n, 1, RcmMode::Official).unwrap();
    let out = rcm.apply(&original, &mut rng(9)).unwrap();
    let law = rcm.official_law(&original, &out.images).unwrap();
    let exact = RegionConfusion::exact_law(&out.permutations, &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&law, &exact), 0.0);
    // The identity law of an undestroyed image is (p - 8) / 16.
    let same = rcm.official_law(&original, &original).unwrap();
    let want: Vec<f32> = (0..16).map(|p| (p as f32 - 8.0) / 16.0).collect();
    assert_eq!(same.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
    // Ties go to the first matching region, as `list.index(min(...))` does.
    let flat = Tensor::ones((1, 3, 16, 16), DType::F32, &Device::Cpu).unwrap();
    let tied = rcm.official_law(&flat, &flat).unwrap();
    assert!(tied
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|&v| v == -0.5));
}

#[test]
fn recursive_mosaic_moves_every_finest_cell_at_each_level() {
    for levels in 1..=3u32 {
        let mosaic = RecursiveMosaic::new(levels).unwrap();
        let mut r = rng(levels as u64);
        for _ in 0..500 {
            let p = mosaic.permutation(&mut r);
            assert_eq!(p.fixed_points(), 0, "levels {levels}: {p:?}");
            // On the 8x8 grid of 56-px cells at 448 px as well.
            let fine = p.refine(8 / p.grid);
            assert_eq!(fine.fixed_points(), 0);
            // The top level is a 4-cycle of whole quadrants.
            let half = p.grid / 2;
            let quadrant = |cell: usize| ((cell / p.grid) / half) * 2 + (cell % p.grid) / half;
            let mut moved = [usize::MAX; 4];
            for (dst, &src) in p.source_of.iter().enumerate() {
                let (q_dst, q_src) = (quadrant(dst), quadrant(src as usize));
                assert!(moved[q_dst] == usize::MAX || moved[q_dst] == q_src);
                moved[q_dst] = q_src;
            }
            let top = Permutation::new(2, moved.iter().map(|&q| q as u32).collect()).unwrap();
            assert_eq!(top.cycle_lengths(), vec![4]);
        }
    }
}

#[test]
fn finest_mosaic_stays_inside_one_region() {
    // With 3 levels the 2x2 blocks of the 8x8 grid that are split apart all lie in one 2x2 block of the
    // 4x4 grid: fine granularity appears in a single 112x112 area at 448 px.
    let mosaic = RecursiveMosaic::new(3).unwrap();
    let mut r = rng(8);
    for _ in 0..300 {
        let p = mosaic.permutation(&mut r);
        let mut broken = std::collections::HashSet::new();
        for block_r in 0..4 {
            for block_c in 0..4 {
                let cells: Vec<usize> = (0..4)
                    .map(|i| (block_r * 2 + i / 2) * 8 + block_c * 2 + i % 2)
                    .collect();
                let srcs: Vec<u32> = cells.iter().map(|&c| p.source_of[c]).collect();
                let coherent =
                    srcs[1] == srcs[0] + 1 && srcs[2] == srcs[0] + 8 && srcs[3] == srcs[0] + 9;
                if !coherent {
                    broken.insert((block_r / 2, block_c / 2));
                }
            }
        }
        assert_eq!(broken.len(), 1, "{p:?}");
    }
}

#[test]
fn same_seed_same_output_different_seed_different_output() {
    let images = ramp(2, 3, 56, 56);
    let run = |seed| {
        let mut r = rng(seed);
        let a = Jigsaw::new(8).unwrap().apply(&images, &mut r).unwrap();
        let b = RegionConfusion::new(7, 2, RcmMode::Paper)
            .unwrap()
            .apply(&images, &mut r)
            .unwrap();
        let c = RecursiveMosaic::new(3)
            .unwrap()
            .apply(&images, &mut r)
            .unwrap();
        Tensor::cat(&[a.images, b.images, c.images], 0).unwrap()
    };
    assert_eq!(max_abs_diff(&run(3), &run(3)), 0.0);
    assert!(max_abs_diff(&run(3), &run(4)) > 0.0);
}

#[test]
fn bad_arguments_are_errors() {
    let images = ramp(2, 3, 30, 30);
    let mut r = rng(0);
    assert!(matches!(
        Jigsaw::new(4).unwrap().apply(&images, &mut r),
        Err(AugmentError::GridDoesNotDivide {
            n: 4,
            height: 30,
            width: 30
        })
    ));
    assert!(matches!(
        RegionConfusion::new(7, 7, RcmMode::Paper),
        Err(AugmentError::NeighbourhoodTooLarge { k: 7, n: 7 })
    ));
    assert!(RegionConfusion::new(7, 0, RcmMode::Paper).is_err());
    assert!(RegionConfusion::new(1, 1, RcmMode::Paper).is_err());
    assert!(Jigsaw::new(0).is_err());
    assert!(RecursiveMosaic::new(0).is_err());
    let empty = Tensor::zeros((0, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        Jigsaw::new(2).unwrap().apply(&empty, &mut r),
        Err(AugmentError::EmptyBatch { .. })
    ));
    let rank3 = Tensor::zeros((3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        RecursiveMosaic::new(1).unwrap().apply(&rank3, &mut r),
        Err(AugmentError::BadTensor(_))
    ));
    let ok = ramp(2, 3, 32, 32);
    assert!(permute_cells(&ok, &[]).is_err());
    let three = vec![Permutation::identity(2); 3];
    assert!(permute_cells(&ok, &three).is_err());
    let message = Jigsaw::new(4)
        .unwrap()
        .apply(&images, &mut r)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("4x4") && message.contains("30x30"),
        "{message}"
    );
}

#[test]
fn preview_places_each_column_side_by_side() {
    let images = (ramp(2, 3, 56, 56) / (2.0 * 3.0 * 56.0 * 56.0)).unwrap();
    let grid = destruction_preview(&images, &mut rng(0)).unwrap();
    assert_eq!(grid.dimensions(), (8 * 60 + 4, 2 * 60 + 4));
    let black = Tensor::zeros((1, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let white = Tensor::ones((1, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let two = preview_grid(&[&black, &white]).unwrap();
    assert_eq!(two.get_pixel(4, 4).0, [0, 0, 0]);
    assert_eq!(two.get_pixel(12, 4).0, [255, 255, 255]);
    assert!(destruction_preview(&ramp(1, 3, 32, 32), &mut rng(0)).is_err());
}
