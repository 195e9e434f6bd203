//! The synthetic dataset: determinism, seeds, and the check that the task really is fine-grained.

use fgvc_data::synthetic::{Part, Rendered};
use fgvc_data::{Dataset, Split, Synthetic, SyntheticConfig};
use image::imageops::FilterType;
use image::RgbImage;

fn config(seed: u64) -> SyntheticConfig {
    SyntheticConfig {
        classes: 10,
        image_size: 64,
        train_per_class: 40,
        val_per_class: 5,
        test_per_class: 20,
        seed,
        first_class: 0,
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

#[test]
fn identical_across_runs_and_different_across_seeds_and_splits() {
    let a = Synthetic::new(config(3), Split::Train).unwrap();
    let b = Synthetic::new(config(3), Split::Train).unwrap();
    for i in [0, 1, 17, 399] {
        assert_eq!(
            a.load(i).unwrap(),
            b.load(i).unwrap(),
            "sample {i} differs between two openings"
        );
    }
    let other_seed = Synthetic::new(config(4), Split::Train).unwrap();
    let test = Synthetic::new(config(3), Split::Test).unwrap();
    for i in [0, 1, 17] {
        assert_ne!(
            a.load(i).unwrap(),
            other_seed.load(i).unwrap(),
            "seed does not change sample {i}"
        );
        assert_ne!(
            a.load(i).unwrap(),
            test.load(i).unwrap(),
            "train and test share sample {i}"
        );
        assert_ne!(
            a.load(i).unwrap(),
            a.load(i + 10).unwrap(),
            "two instances of a class coincide"
        );
    }
    // Rendering in another order or from several threads changes nothing.
    let b = &b;
    let parallel: Vec<RgbImage> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .rev()
            .map(|i| s.spawn(move || b.load(i).unwrap()))
            .collect();
        let mut out: Vec<RgbImage> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        out.reverse();
        out
    });
    for (i, img) in parallel.iter().enumerate() {
        assert_eq!(img, &a.load(i).unwrap());
    }
}

/// A regression pin on the exact pixels: a change of the renderer changes every dataset built from a seed,
/// so it has to be deliberate (update the value, note it in the changelog). Pinned on x86-64 Linux only: the
/// renderer uses the platform's `sin`/`cos`, whose last bit may differ elsewhere.
#[test]
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn rendering_is_pinned() {
    let d = Synthetic::new(config(0), Split::Train).unwrap();
    let h = (0..4).fold(0u64, |h, i| {
        h.rotate_left(7) ^ fnv(d.load(i).unwrap().as_raw())
    });
    assert_eq!(
        h, 0x5fdeb619c4c63f43,
        "synthetic rendering changed: hash {h:#x}"
    );
}

#[test]
fn labels_are_interleaved_and_balanced() {
    let d = Synthetic::new(config(0), Split::Test).unwrap();
    assert_eq!(d.len(), 200);
    assert_eq!(d.num_classes(), 10);
    assert_eq!(d.class_counts(), vec![20; 10]);
    assert_eq!(
        (0..12).map(|i| d.label(i)).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    );
    for i in [0, 5, 13] {
        assert_eq!(d.render(i).label, d.label(i));
    }
}

#[test]
fn any_resolution_and_class_count() {
    for (classes, size) in [(2usize, 16u32), (200, 48), (7, 100)] {
        let c = SyntheticConfig {
            classes,
            image_size: size,
            train_per_class: 1,
            ..Default::default()
        };
        let d = Synthetic::new(c, Split::Train).unwrap();
        assert_eq!(d.len(), classes);
        let img = d.load(classes - 1).unwrap();
        assert_eq!(img.dimensions(), (size, size));
    }
}

#[test]
fn parts_lie_inside_the_image() {
    let d = Synthetic::new(config(1), Split::Train).unwrap();
    for i in 0..50 {
        let r = d.render(i);
        for part in Part::ALL {
            let [x0, y0, x1, y1] = r.part_box(part);
            let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
            assert!(
                (0.0..64.0).contains(&cx) && (0.0..64.0).contains(&cy),
                "{part:?} of {i} centred off-image"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The fine-grained check. A nearest-class-mean classifier (features standardised with the training set's
// statistics) on:
// * the pixels of the part regions, sampled at canonical points through the ground-truth pose: the class is
//   there, so this must be accurate;
// * the same points of a copy blurred by downsampling 8x and back: the parts are small, so this must be much
//   worse;
// * the pixels of the global shape (body, head, tail base, away from the parts), and a colour histogram of
//   the whole image: they must be near chance, because classes share the global shape and the decoys in the
//   background mimic the parts' colours.

fn bilinear(img: &RgbImage, x: f32, y: f32) -> [f32; 3] {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let x = (x - 0.5).clamp(0.0, w - 1.0);
    let y = (y - 0.5).clamp(0.0, h - 1.0);
    let (x0, y0) = (x.floor(), y.floor());
    let (x1, y1) = ((x0 + 1.0).min(w - 1.0), (y0 + 1.0).min(h - 1.0));
    let (fx, fy) = (x - x0, y - y0);
    let p = |x: f32, y: f32| {
        img.get_pixel(x as u32, y as u32)
            .0
            .map(|v| v as f32 / 255.0)
    };
    let (a, b, c, d) = (p(x0, y0), p(x1, y0), p(x0, y1), p(x1, y1));
    [0, 1, 2].map(|i| {
        (a[i] * (1.0 - fx) + b[i] * fx) * (1.0 - fy) + (c[i] * (1.0 - fx) + d[i] * fx) * fy
    })
}

/// Pixels at a grid of canonical points inside `boxes`, mapped through the pose.
fn sampled(r: &Rendered, img: &RgbImage, boxes: &[[f32; 4]], grid: (usize, usize)) -> Vec<f32> {
    let mut out = Vec::new();
    for &[x0, y0, x1, y1] in boxes {
        for j in 0..grid.1 {
            for i in 0..grid.0 {
                let p = [
                    x0 + (x1 - x0) * (i as f32 + 0.5) / grid.0 as f32,
                    y0 + (y1 - y0) * (j as f32 + 0.5) / grid.1 as f32,
                ];
                let q = r.pose.to_image(p);
                out.extend(bilinear(img, q[0], q[1]));
            }
        }
    }
    out
}

fn part_features(r: &Rendered, img: &RgbImage) -> Vec<f32> {
    let boxes: Vec<[f32; 4]> = Part::ALL.iter().map(|p| p.canonical_box()).collect();
    sampled(r, img, &boxes, (7, 5))
}

fn shape_features(r: &Rendered) -> Vec<f32> {
    // Body (below the wing), head (behind the eye) and the tail's base: shared by all classes.
    let boxes = [
        [-0.30, 0.10, 0.30, 0.20],
        [0.30, -0.10, 0.42, 0.0],
        [-0.50, -0.05, -0.32, 0.05],
    ];
    sampled(r, &r.image, &boxes, (6, 3))
}

fn histogram(img: &RgbImage) -> Vec<f32> {
    let mut h = vec![0.0f32; 64];
    for p in img.pixels() {
        let b = |v: u8| (v / 64) as usize;
        h[b(p[0]) * 16 + b(p[1]) * 4 + b(p[2])] += 1.0;
    }
    let n = (img.width() * img.height()) as f32;
    h.iter_mut().for_each(|v| *v /= n);
    h
}

/// Colour histogram of the pixels inside the part boxes only.
fn part_histogram(r: &Rendered) -> Vec<f32> {
    let mut h = vec![0.0f32; 64];
    let mut n = 0.0;
    for part in Part::ALL {
        let [x0, y0, x1, y1] = r.part_box(part);
        for (x, y, p) in r.image.enumerate_pixels() {
            let (x, y) = (x as f32 + 0.5, y as f32 + 0.5);
            if x >= x0 && x <= x1 && y >= y0 && y <= y1 {
                let b = |v: u8| (v / 64) as usize;
                h[b(p[0]) * 16 + b(p[1]) * 4 + b(p[2])] += 1.0;
                n += 1.0;
            }
        }
    }
    h.iter_mut().for_each(|v| *v /= n);
    h
}

fn blurred(img: &RgbImage, factor: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let small = image::imageops::resize(img, w / factor, h / factor, FilterType::Triangle);
    image::imageops::resize(&small, w, h, FilterType::Triangle)
}

/// Accuracy of a nearest-class-mean classifier on standardised features.
fn ncm_accuracy(train: &[(Vec<f32>, u32)], test: &[(Vec<f32>, u32)], classes: usize) -> f64 {
    let dim = train[0].0.len();
    let n = train.len() as f32;
    let mean: Vec<f32> = (0..dim)
        .map(|k| train.iter().map(|(f, _)| f[k]).sum::<f32>() / n)
        .collect();
    let std: Vec<f32> = (0..dim)
        .map(|k| {
            (train
                .iter()
                .map(|(f, _)| (f[k] - mean[k]).powi(2))
                .sum::<f32>()
                / n)
                .sqrt()
                .max(1e-3)
        })
        .collect();
    let z = |f: &[f32]| -> Vec<f32> {
        f.iter()
            .enumerate()
            .map(|(k, v)| (v - mean[k]) / std[k])
            .collect()
    };
    let mut centroids = vec![vec![0.0f32; dim]; classes];
    let mut counts = vec![0.0f32; classes];
    for (f, l) in train {
        for (c, v) in centroids[*l as usize].iter_mut().zip(z(f)) {
            *c += v;
        }
        counts[*l as usize] += 1.0;
    }
    for (c, n) in centroids.iter_mut().zip(&counts) {
        c.iter_mut().for_each(|v| *v /= n);
    }
    let correct = test
        .iter()
        .filter(|(f, l)| {
            let zf = z(f);
            let best = (0..classes)
                .min_by(|&a, &b| {
                    let d = |c: usize| {
                        centroids[c]
                            .iter()
                            .zip(&zf)
                            .map(|(x, y)| (x - y).powi(2))
                            .sum::<f32>()
                    };
                    d(a).total_cmp(&d(b))
                })
                .unwrap();
            best as u32 == *l
        })
        .count();
    correct as f64 / test.len() as f64
}

#[test]
fn the_task_is_fine_grained() {
    let cfg = config(11);
    let render_all = |split| {
        let d = Synthetic::new(cfg, split).unwrap();
        (0..d.len()).map(|i| d.render(i)).collect::<Vec<_>>()
    };
    let (train, test) = (render_all(Split::Train), render_all(Split::Test));
    let features = |set: &[Rendered], f: &dyn Fn(&Rendered) -> Vec<f32>| -> Vec<(Vec<f32>, u32)> {
        set.iter().map(|r| (f(r), r.label)).collect()
    };
    let acc = |f: &dyn Fn(&Rendered) -> Vec<f32>| {
        ncm_accuracy(&features(&train, f), &features(&test, f), cfg.classes)
    };

    let parts = acc(&|r| part_features(r, &r.image));
    let blurred4 = acc(&|r| part_features(r, &blurred(&r.image, 4)));
    let blurred8 = acc(&|r| part_features(r, &blurred(&r.image, 8)));
    let shape = acc(&shape_features);
    let colours = acc(&|r| histogram(&r.image));
    let part_colours = acc(&part_histogram);
    println!(
        "nearest-class-mean accuracy (chance 0.10): part pixels {parts:.3}; the same blurred 4x {blurred4:.3}, \
         8x {blurred8:.3}; global-shape pixels {shape:.3}; whole-image colour histogram {colours:.3}; \
         part-box colour histogram {part_colours:.3}"
    );
    // The parts carry the class...
    assert!(
        parts >= 0.75,
        "part pixels should classify well: {parts:.3}"
    );
    // ...but only at full resolution: they are small.
    assert!(
        parts - blurred4 >= 0.3,
        "blurring 4x should cost much accuracy: {parts:.3} -> {blurred4:.3}"
    );
    assert!(
        blurred8 <= 0.3,
        "blurring 8x should leave little: {blurred8:.3}"
    );
    // The global shape and the global colour statistics do not separate the classes...
    assert!(
        shape <= 0.2,
        "global shape should be near chance: {shape:.3}"
    );
    assert!(
        colours <= 0.2,
        "whole-image colours should be near chance: {colours:.3}"
    );
    // ...although the same colour classifier does work when pointed at the parts (a control: the classifier
    // itself is not what fails above).
    assert!(
        part_colours >= 0.3 && part_colours >= colours + 0.2,
        "part-box colours: {part_colours:.3}"
    );
}

#[test]
fn a_set_from_class_n_shares_no_class_with_a_set_of_n() {
    let target = Synthetic::new(
        SyntheticConfig {
            classes: 5,
            ..config(0)
        },
        Split::Train,
    )
    .unwrap();
    let source = Synthetic::new(
        SyntheticConfig {
            classes: 60,
            first_class: 5,
            seed: 1,
            ..config(0)
        },
        Split::Train,
    )
    .unwrap();
    assert_eq!(source.class_specs().len(), 60);
    assert!(source.name().contains("from class 5"), "{}", source.name());
    for spec in target.class_specs() {
        assert!(
            !source.class_specs().contains(spec),
            "the source set has the target's class {}",
            spec.name()
        );
    }
    // Distinct classes, and the target's classes are the first five of the larger vocabulary.
    let mut names: Vec<String> = source.class_specs().iter().map(|s| s.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 60);
    let whole = Synthetic::new(
        SyntheticConfig {
            classes: 65,
            ..config(0)
        },
        Split::Train,
    )
    .unwrap();
    assert_eq!(&whole.class_specs()[..5], target.class_specs());
    assert_eq!(&whole.class_specs()[5..], source.class_specs());
}
