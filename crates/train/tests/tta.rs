//! Test-time augmentation against views built independently in image space: `flip` averages the logits of
//! an image and its mirror, `multicrop` those of the five torchvision `FiveCrop` windows and their mirrors.

use candle_core::{Device, Tensor};
use fgvc_augment::transforms::{crop, horizontal_flip, Transform};
use fgvc_data::Split;
use fgvc_train::data::open_split;
use fgvc_train::eval::{evaluate, evaluate_tta, predict_tta, Tta};
use fgvc_train::registry::build_method;
use fgvc_train::Config;
use rand::SeedableRng;

/// 3 classes of 32x32 birds resized to 40 then centre-cropped to 32, an untrained 4-wide ResNet-18.
fn tiny() -> Config {
    let sets: Vec<String> = [
        "data.synthetic.classes=3",
        "data.synthetic.image_size=32",
        "data.synthetic.train_per_class=1",
        "data.synthetic.val_per_class=1",
        "data.synthetic.test_per_class=3",
        "data.resize=40",
        "data.eval_batch_size=4",
        "data.threads=1",
        "model.base_width=4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Config::parse("", "tiny", &sets).unwrap()
}

#[test]
fn tta_heads_average_the_logits_of_their_views() {
    let config = tiny();
    let data = open_split(&config, Split::Test).unwrap();
    let method = build_method(&config, 3, &Device::Cpu).unwrap();
    let report = evaluate_tta(
        &*method,
        &config,
        data.clone(),
        "test",
        &[Tta::MultiCrop, Tta::Flip, Tta::Flip],
        &Device::Cpu,
    )
    .unwrap();
    let names: Vec<&str> = report.heads.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["logits", "logits+flip", "logits+multicrop"]);
    // The plain head is the plain evaluation.
    let loader = fgvc_train::data::eval_loader(&config, data.clone(), &Device::Cpu).unwrap();
    assert_eq!(
        report.heads[0],
        evaluate(&*method, &loader, "test").unwrap().heads[0]
    );

    // The views, cut from each decoded image with the image crate, one image at a time, against
    // predict_tta's logits for the same image.
    let (_, test) = config.data.pipelines().unwrap();
    let Transform::Resize { .. } = test.steps[0] else {
        panic!("{test:?}")
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let tensor = |img: &image::RgbImage| {
        let (w, h) = img.dimensions();
        Tensor::from_vec(
            test.normalize.to_chw(img),
            (1, 3, h as usize, w as usize),
            &Device::Cpu,
        )
        .unwrap()
    };
    let logits = |img: &image::RgbImage| -> Vec<f32> {
        let p = method.predict(&tensor(img)).unwrap();
        p.heads[0].1.squeeze(0).unwrap().to_vec1::<f32>().unwrap()
    };
    let mean = |views: Vec<Vec<f32>>| -> Vec<f32> {
        let n = views.len() as f32;
        (0..3)
            .map(|c| views.iter().map(|v| v[c]).sum::<f32>() / n)
            .collect()
    };
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
    let mut differs = false;
    for i in 0..data.len() {
        let resized = test.steps[0]
            .apply(data.load(i).unwrap(), &mut rng)
            .unwrap();
        let centre = crop(&resized, 4, 4, 32, 32).unwrap();
        let flip = mean(vec![logits(&centre), logits(&horizontal_flip(&centre))]);
        let mut views = Vec::new();
        for (top, left) in [(0, 0), (0, 8), (8, 0), (8, 8), (4, 4)] {
            let v = crop(&resized, top, left, 32, 32).unwrap();
            views.push(logits(&v));
            views.push(logits(&horizontal_flip(&v)));
        }
        let multi = mean(views);
        let got = predict_tta(
            &*method,
            &tensor(&resized),
            Some((32, 32)),
            &[Tta::Flip, Tta::MultiCrop],
        )
        .unwrap();
        let row = |k: usize| got.heads[k].1.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        assert!(close(&row(0), &logits(&centre)), "{:?}", row(0));
        assert!(close(&row(1), &flip), "{:?} vs {flip:?}", row(1));
        assert!(close(&row(2), &multi), "{:?} vs {multi:?}", row(2));
        differs |= !close(&row(0), &row(2));
    }
    // The views disagree somewhere, or the comparison would prove little.
    assert!(differs);
}
