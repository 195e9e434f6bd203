//! Fixture datasets that the tests build in a temporary directory: CUB-, Cars- and Aircraft-shaped, with a
//! few small generated JPEGs each and the Cars `.mat` files.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use fgvc_data::mat5::{write_mat, MatValue, NumericClass, StructArray, WriteOptions};
use image::{Rgb, RgbImage};

/// A small JPEG whose colour encodes `tag`, so tests can tell images apart after decoding.
pub fn write_jpeg(path: &Path, width: u32, height: u32, tag: u8) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = RgbImage::from_fn(width, height, |x, y| {
        Rgb([tag, (x * 7 % 256) as u8, (y * 11 % 256) as u8])
    });
    img.save_with_format(path, image::ImageFormat::Jpeg)
        .unwrap();
}

/// A grayscale JPEG.
pub fn write_gray_jpeg(path: &Path, width: u32, height: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::GrayImage::from_fn(width, height, |x, _| image::Luma([(x * 5 % 256) as u8]));
    img.save_with_format(path, image::ImageFormat::Jpeg)
        .unwrap();
}

pub fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// CUB-200-2011 with 3 classes and 7 images; the index files list ids in different orders, so only a join by
/// id gives the right answer. Train: ids 1, 3, 4, 6 (labels 0, 1, 1, 2); test: 2, 5, 7 (labels 0, 1, 2).
pub fn make_cub(root: &Path) -> PathBuf {
    let root = root.join("CUB_200_2011");
    let images = [
        (
            1,
            "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg",
            1,
            1,
        ),
        (
            2,
            "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55.jpg",
            1,
            0,
        ),
        (
            3,
            "002.Laysan_Albatross/Laysan_Albatross_0001_545.jpg",
            2,
            1,
        ),
        (
            4,
            "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg",
            2,
            1,
        ),
        (
            5,
            "002.Laysan_Albatross/Laysan_Albatross_0003_1033.jpg",
            2,
            0,
        ),
        (6, "003.Sooty_Albatross/Sooty_Albatross_0001_1071.jpg", 3, 1),
        (
            7,
            "003.Sooty_Albatross/Sooty_Albatross_0002_796395.jpg",
            3,
            0,
        ),
    ];
    let mut images_txt = String::new();
    let mut labels_txt = String::new();
    let mut split_txt = String::new();
    let mut boxes_txt = String::new();
    for &(id, rel, class, train) in &images {
        images_txt.push_str(&format!("{id} {rel}\n"));
        write_jpeg(&root.join("images").join(rel), 40, 30, id as u8 * 20);
        boxes_txt.push_str(&format!("{id} 2.0 3.0 20.0 10.0\n"));
        // Written in reverse order: a join by line number would mislabel everything.
        labels_txt.insert_str(0, &format!("{id} {class}\n"));
        split_txt.insert_str(0, &format!("{id} {train}\n"));
    }
    write(&root.join("images.txt"), &images_txt);
    write(&root.join("image_class_labels.txt"), &labels_txt);
    write(&root.join("train_test_split.txt"), &split_txt);
    write(&root.join("bounding_boxes.txt"), &boxes_txt);
    write(
        &root.join("classes.txt"),
        "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n3 003.Sooty_Albatross\n",
    );
    root
}

/// The `annotations` struct array of a Cars devkit file: (fname, class 1-based, bbox x1 y1 x2 y2).
pub fn cars_annotations(rows: &[(&str, u32, [u32; 4])], with_class: bool) -> MatValue {
    let mut fields = vec!["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"];
    if with_class {
        fields.push("class");
    }
    fields.push("fname");
    let mut values = Vec::new();
    for (fname, class, b) in rows {
        // As in the real files: boxes and classes in the smallest integer class that fits.
        values.push(MatValue::scalar(NumericClass::UInt8, b[0] as f64));
        values.push(MatValue::scalar(NumericClass::UInt8, b[1] as f64));
        values.push(MatValue::scalar(NumericClass::UInt16, b[2] as f64));
        values.push(MatValue::scalar(NumericClass::UInt16, b[3] as f64));
        if with_class {
            values.push(MatValue::scalar(NumericClass::UInt8, *class as f64));
        }
        values.push(MatValue::text(fname));
    }
    MatValue::Struct(StructArray {
        dims: vec![1, rows.len()],
        fields: fields.into_iter().map(String::from).collect(),
        values,
    })
}

pub const CAR_CLASSES: [&str; 3] = [
    "AM General Hummer SUV 2000",
    "Acura RL Sedan 2012",
    "Ford F-150 Regular Cab 2007",
];

/// Where a Cars fixture keeps its test labels.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TestLabels {
    /// `cars_test_annos_withlabels.mat` at the root (torchvision).
    Root,
    /// `devkit/cars_test_annos_withlabels.mat` (MMPretrain).
    Devkit,
    /// Only the devkit's unlabelled `cars_test_annos.mat`.
    Missing,
}

/// Stanford Cars in the devkit layout: 4 training images (labels 0, 2, 1, 2), 3 test images (labels 1, 0,
/// 2). With `nested`, images sit in Kaggle's `cars_train/cars_train/`.
pub fn make_cars_devkit(root: &Path, labels: TestLabels, nested: bool) -> PathBuf {
    let root = root.join("stanford_cars");
    let opts = WriteOptions {
        compress: true,
        big_endian: false,
    };
    let train_rows = [
        ("00001.jpg", 1, [3, 4, 30, 20]),
        ("00002.jpg", 3, [1, 1, 40, 30]),
        ("00003.jpg", 2, [5, 5, 10, 10]),
        ("00004.jpg", 3, [1, 2, 3, 4]),
    ];
    let test_rows = [
        ("00001.jpg", 2, [1, 1, 20, 20]),
        ("00002.jpg", 1, [2, 2, 22, 22]),
        ("00003.jpg", 3, [3, 3, 33, 25]),
    ];
    let dir = |name: &str| {
        if nested {
            root.join(name).join(name)
        } else {
            root.join(name)
        }
    };
    for (i, (f, _, _)) in train_rows.iter().enumerate() {
        write_jpeg(&dir("cars_train").join(f), 48, 32, 10 + i as u8);
    }
    for (i, (f, _, _)) in test_rows.iter().enumerate() {
        write_jpeg(&dir("cars_test").join(f), 48, 32, 100 + i as u8);
    }
    fs::create_dir_all(root.join("devkit")).unwrap();
    write_mat(
        &root.join("devkit/cars_meta.mat"),
        &[("class_names", MatValue::cell_of_strings(&CAR_CLASSES))],
        opts,
    )
    .unwrap();
    write_mat(
        &root.join("devkit/cars_train_annos.mat"),
        &[("annotations", cars_annotations(&train_rows, true))],
        opts,
    )
    .unwrap();
    write_mat(
        &root.join("devkit/cars_test_annos.mat"),
        &[("annotations", cars_annotations(&test_rows, false))],
        opts,
    )
    .unwrap();
    let labelled = [("annotations", cars_annotations(&test_rows, true))];
    match labels {
        TestLabels::Root => write_mat(
            &root.join("cars_test_annos_withlabels.mat"),
            &labelled,
            opts,
        )
        .unwrap(),
        TestLabels::Devkit => write_mat(
            &root.join("devkit/cars_test_annos_withlabels.mat"),
            &labelled,
            opts,
        )
        .unwrap(),
        TestLabels::Missing => {}
    }
    root
}

/// Stanford Cars in the single-archive layout (`car_ims/` + `cars_annos.mat`, uncompressed): 5 images, test
/// flags 0 1 0 1 0, classes 1 2 3 3 2.
pub fn make_cars_archive(root: &Path) -> PathBuf {
    let rows = [(1u32, 0u8), (2, 1), (3, 0), (3, 1), (2, 0)];
    let fields = [
        "relative_im_path",
        "bbox_x1",
        "bbox_y1",
        "bbox_x2",
        "bbox_y2",
        "class",
        "test",
    ];
    let mut values = Vec::new();
    for (i, (class, test)) in rows.iter().enumerate() {
        let rel = format!("car_ims/{:06}.jpg", i + 1);
        write_jpeg(&root.join(&rel), 36, 24, i as u8 * 30);
        values.push(MatValue::text(&rel));
        for v in [1.0, 1.0, 30.0, 20.0] {
            values.push(MatValue::scalar(NumericClass::Double, v));
        }
        values.push(MatValue::scalar(NumericClass::UInt8, *class as f64));
        values.push(MatValue::scalar(NumericClass::UInt8, *test as f64));
    }
    let annos = MatValue::Struct(StructArray {
        dims: vec![1, rows.len()],
        fields: fields.into_iter().map(String::from).collect(),
        values,
    });
    write_mat(
        &root.join("cars_annos.mat"),
        &[
            ("annotations", annos),
            ("class_names", MatValue::cell_of_strings(&CAR_CLASSES)),
        ],
        WriteOptions::default(),
    )
    .unwrap();
    root.to_path_buf()
}

/// FGVC-Aircraft with names that contain spaces and slashes. Variants: `707-320`, `F-16A/B`, `Falcon 2000`.
/// trainval = train (1000001, 1000002, 1000003) + val (1000004, 1000005); test = 1000006..1000008.
/// Images are 40x60, so 40x40 after the 20-row banner is cropped.
pub fn make_aircraft(root: &Path) -> PathBuf {
    let base = root.join("fgvc-aircraft-2013b");
    let data = base.join("data");
    let rows: [(&str, &str, &str, &str, &str); 8] = [
        ("1000001", "707-320", "Boeing 707", "Boeing", "train"),
        ("1000002", "F-16A/B", "F-16", "Lockheed Martin", "train"),
        (
            "1000003",
            "Falcon 2000",
            "Falcon 2000",
            "Dassault Aviation",
            "train",
        ),
        ("1000004", "F-16A/B", "F-16", "Lockheed Martin", "val"),
        (
            "1000005",
            "Falcon 2000",
            "Falcon 2000",
            "Dassault Aviation",
            "val",
        ),
        ("1000006", "707-320", "Boeing 707", "Boeing", "test"),
        ("1000007", "F-16A/B", "F-16", "Lockheed Martin", "test"),
        (
            "1000008",
            "Falcon 2000",
            "Falcon 2000",
            "Dassault Aviation",
            "test",
        ),
    ];
    write(
        &data.join("variants.txt"),
        "707-320\nF-16A/B\nFalcon 2000\n",
    );
    write(
        &data.join("families.txt"),
        "Boeing 707\nF-16\nFalcon 2000\n",
    );
    write(
        &data.join("manufacturers.txt"),
        "Boeing\nDassault Aviation\nLockheed Martin\n",
    );
    let mut boxes = String::new();
    for (level, col) in [("variant", 1), ("family", 2), ("manufacturer", 3)] {
        for split in ["train", "val", "trainval", "test"] {
            let mut text = String::new();
            for r in &rows {
                let s = r.4;
                if s == split || (split == "trainval" && (s == "train" || s == "val")) {
                    let name = [r.0, r.1, r.2, r.3][col];
                    text.push_str(&format!("{} {name}\n", r.0));
                }
            }
            write(&data.join(format!("images_{level}_{split}.txt")), &text);
        }
    }
    for (i, r) in rows.iter().enumerate() {
        write_jpeg(
            &data.join("images").join(format!("{}.jpg", r.0)),
            40,
            60,
            i as u8 * 25,
        );
        boxes.push_str(&format!("{} 3 5 22 24\n", r.0));
    }
    write(&data.join("images_box.txt"), &boxes);
    base
}
