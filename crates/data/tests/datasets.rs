//! Parsing fixture datasets of every supported layout into the right counts and labels.

mod common;

use std::path::Path;

use common::*;
use fgvc_data::aircraft::Level;
use fgvc_data::mat5::read_mat;
use fgvc_data::{
    aircraft, cars, cub, folder, open, DataError, Dataset, DatasetKind, OpenOptions, SampleSet,
    Split, Validation,
};

fn labels(d: &dyn Dataset) -> Vec<u32> {
    d.labels()
}

fn file_names(d: &SampleSet) -> Vec<String> {
    d.paths()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

// ------------------------------------------------------------------------------------------------- CUB

#[test]
fn cub_joins_by_id_with_zero_based_labels() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    let train = cub::load(&root, Split::Train, &Validation::None, false).unwrap();
    let test = cub::load(&root, Split::Test, &Validation::None, false).unwrap();
    assert_eq!(train.num_classes(), 3);
    assert_eq!(train.class_names()[1], "002.Laysan_Albatross");
    assert_eq!(labels(&train), vec![0, 1, 1, 2]);
    assert_eq!(labels(&test), vec![0, 1, 2]);
    assert_eq!(
        file_names(&test),
        vec![
            "Black_Footed_Albatross_0002_55.jpg",
            "Laysan_Albatross_0003_1033.jpg",
            "Sooty_Albatross_0002_796395.jpg"
        ]
    );
    let bbox = train.samples()[0].bbox.unwrap();
    assert_eq!(
        (bbox.x, bbox.y, bbox.width, bbox.height),
        (2.0, 3.0, 20.0, 10.0)
    );
    assert_eq!(train.load(0).unwrap().dimensions(), (40, 30));
    // The parent folder is accepted as the root too.
    assert_eq!(
        cub::load(dir.path(), Split::Train, &Validation::None, false)
            .unwrap()
            .len(),
        4
    );
}

#[test]
fn cub_bbox_crop() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    let train = cub::load(&root, Split::Train, &Validation::None, true).unwrap();
    assert_eq!(train.load(0).unwrap().dimensions(), (20, 10));
}

#[test]
fn cub_validation_holdout_is_stratified_and_disjoint() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    let v = Validation::holdout(0.5, 9);
    let train = cub::load(&root, Split::Train, &v, false).unwrap();
    let val = cub::load(&root, Split::Val, &v, false).unwrap();
    // Class 0 and 2 have one training image each (kept in train); class 1 has two (one held out).
    assert_eq!((train.len(), val.len()), (3, 1));
    assert_eq!(labels(&val), vec![1]);
    let train_files = file_names(&train);
    assert!(!train_files.contains(&file_names(&val)[0]));
    // No validation split unless asked for.
    assert!(matches!(
        cub::load(&root, Split::Val, &Validation::None, false),
        Err(DataError::NoSuchSplit { .. })
    ));
    // CUB has no official validation list.
    assert!(cub::load(&root, Split::Val, &Validation::Official, false).is_err());
}

#[test]
fn cub_missing_files_say_what_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let err = cub::load(dir.path(), Split::Train, &Validation::None, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("classes.txt") && err.contains("data.caltech.edu"),
        "{err}"
    );
    let root = make_cub(dir.path());
    std::fs::remove_file(root.join("train_test_split.txt")).unwrap();
    let err = cub::load(&root, Split::Train, &Validation::None, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train_test_split.txt") && err.contains("CUB_200_2011.tgz"),
        "{err}"
    );
}

#[test]
fn cub_bad_lines_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    write(&root.join("image_class_labels.txt"), "1 1\n2 1\n3 9\n");
    let err = cub::load(&root, Split::Train, &Validation::None, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("image_class_labels.txt:3") && err.contains("classes.txt"),
        "{err}"
    );
}

// ------------------------------------------------------------------------------------------------ Cars

fn check_cars_devkit(root: &Path) {
    let train = cars::load(root, Split::Train, &Validation::None, false).unwrap();
    let test = cars::load(root, Split::Test, &Validation::None, false).unwrap();
    assert_eq!(train.class_names(), &CAR_CLASSES.map(String::from));
    assert_eq!(labels(&train), vec![0, 2, 1, 2]);
    assert_eq!(labels(&test), vec![1, 0, 2]);
    assert_eq!(
        file_names(&test),
        vec!["00001.jpg", "00002.jpg", "00003.jpg"]
    );
    // 1-based inclusive MATLAB box (3, 4)-(30, 20) -> x 2, y 3, 28 x 17.
    let b = train.samples()[0].bbox.unwrap();
    assert_eq!((b.x, b.y, b.width, b.height), (2.0, 3.0, 28.0, 17.0));
    // The images are where the annotations say: the test image 00002 has tag 101 in its red channel.
    let img = test.load(1).unwrap();
    assert!(
        (img.get_pixel(5, 5)[0] as i32 - 101).abs() <= 3,
        "{:?}",
        img.get_pixel(5, 5)
    );
}

#[test]
fn cars_torchvision_layout() {
    let dir = tempfile::tempdir().unwrap();
    make_cars_devkit(dir.path(), TestLabels::Root, false);
    // Both the stanford_cars folder and its parent work as root.
    check_cars_devkit(dir.path());
    check_cars_devkit(&dir.path().join("stanford_cars"));
}

#[test]
fn cars_mmpretrain_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cars_devkit(dir.path(), TestLabels::Devkit, false);
    check_cars_devkit(&root);
}

#[test]
fn cars_kaggle_nested_folders() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cars_devkit(dir.path(), TestLabels::Root, true);
    check_cars_devkit(&root);
}

#[test]
fn cars_test_labels_under_a_downloaded_copy_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cars_devkit(dir.path(), TestLabels::Root, true);
    std::fs::rename(
        root.join("cars_test_annos_withlabels.mat"),
        root.join("cars_test_annos_withlabels (1).mat"),
    )
    .unwrap();
    check_cars_devkit(&root);
}

#[test]
fn cars_without_test_labels_explains_where_to_get_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cars_devkit(dir.path(), TestLabels::Missing, false);
    // Training still works...
    assert_eq!(
        cars::load(&root, Split::Train, &Validation::None, false)
            .unwrap()
            .len(),
        4
    );
    // ...the test split says what is missing, that the unlabelled file is not enough, and where to look.
    let err = cars::load(&root, Split::Test, &Validation::None, false)
        .unwrap_err()
        .to_string();
    for needle in [
        "cars_test_annos_withlabels.mat",
        "no class labels",
        "jessicali9530/stanford-cars-dataset",
        "car_devkit.tgz",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
}

#[test]
fn cars_single_archive_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cars_archive(dir.path());
    let train = cars::load(&root, Split::Train, &Validation::None, false).unwrap();
    let test = cars::load(&root, Split::Test, &Validation::None, false).unwrap();
    assert_eq!(labels(&train), vec![0, 2, 1]);
    assert_eq!(labels(&test), vec![1, 2]);
    assert_eq!(file_names(&test), vec!["000002.jpg", "000004.jpg"]);
    assert_eq!(train.class_names()[2], CAR_CLASSES[2]);
    assert_eq!(test.load(0).unwrap().dimensions(), (36, 24));
    let cropped = cars::load(&root, Split::Test, &Validation::None, true).unwrap();
    assert_eq!(cropped.load(0).unwrap().dimensions(), (30, 20));
}

#[test]
fn cars_empty_root_points_to_the_sources() {
    let dir = tempfile::tempdir().unwrap();
    let err = cars::load(dir.path(), Split::Train, &Validation::None, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("devkit/cars_train_annos.mat") && err.contains("no longer served"),
        "{err}"
    );
}

/// `.mat` files written by scipy's `savemat` (compressed and not), shaped like the Cars annotations: the
/// reader must agree with an independent writer, not only with its own.
#[test]
fn mat5_reads_files_written_by_scipy() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for name in ["scipy_annos_compressed.mat", "scipy_annos_plain.mat"] {
        let f = read_mat(&fixtures.join(name)).unwrap();
        let a = f.get("annotations").unwrap().as_struct().unwrap();
        assert_eq!(a.len(), 3, "{name}");
        let row = |i: usize| {
            (
                ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class"]
                    .map(|k| a.get(i, k).unwrap().as_f64().unwrap()),
                a.get(i, "fname").unwrap().as_string().unwrap(),
            )
        };
        assert_eq!(
            row(0),
            ([39.0, 116.0, 569.0, 375.0, 14.0], "00001.jpg".to_string()),
            "{name}"
        );
        assert_eq!(
            row(2),
            ([85.0, 109.0, 601.0, 381.0, 91.0], "00003.jpg".to_string()),
            "{name}"
        );
    }
    let meta = read_mat(&fixtures.join("scipy_meta.mat")).unwrap();
    let names: Vec<String> = meta
        .get("class_names")
        .unwrap()
        .as_cell()
        .unwrap()
        .items
        .iter()
        .map(|v| v.as_string().unwrap())
        .collect();
    assert_eq!(names, CAR_CLASSES.map(String::from));
    match meta.get("x").unwrap() {
        fgvc_data::mat5::MatValue::Numeric(x) => {
            assert_eq!(x.dims, vec![2, 2]);
            assert_eq!(x.data, vec![1.5, 3.0, -2.0, 4.0], "column-major");
        }
        other => panic!("x is {other:?}"),
    }
    match meta.get("flag").unwrap() {
        fgvc_data::mat5::MatValue::Numeric(x) => assert!(x.logical && x.data == vec![1.0, 0.0]),
        other => panic!("flag is {other:?}"),
    }
}

#[test]
fn mat5_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cars_meta.mat");
    std::fs::write(&p, b"not a mat file").unwrap();
    let err = read_mat(&p).unwrap_err().to_string();
    assert!(err.contains("cars_meta.mat"), "{err}");
}

// -------------------------------------------------------------------------------------------- Aircraft

#[test]
fn aircraft_levels_and_names_with_spaces_and_slashes() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_aircraft(dir.path());
    let v = aircraft::load(
        &root,
        Level::Variant,
        Split::Train,
        &Validation::None,
        false,
    )
    .unwrap();
    assert_eq!(
        v.class_names(),
        &["707-320", "F-16A/B", "Falcon 2000"].map(String::from)
    );
    assert_eq!(labels(&v), vec![0, 1, 2, 1, 2], "trainval");
    let test =
        aircraft::load(&root, Level::Variant, Split::Test, &Validation::None, false).unwrap();
    assert_eq!(labels(&test), vec![0, 1, 2]);
    assert_eq!(
        file_names(&test),
        vec!["1000006.jpg", "1000007.jpg", "1000008.jpg"]
    );
    let fam = aircraft::load(&root, Level::Family, Split::Test, &Validation::None, false).unwrap();
    assert_eq!(fam.class_names()[1], "F-16");
    assert_eq!(labels(&fam), vec![0, 1, 2]);
    let man = aircraft::load(
        &root,
        Level::Manufacturer,
        Split::Test,
        &Validation::None,
        false,
    )
    .unwrap();
    // manufacturers.txt order: Boeing, Dassault Aviation, Lockheed Martin.
    assert_eq!(labels(&man), vec![0, 2, 1]);
    // Any of the three folders works as root.
    for r in [dir.path().to_path_buf(), root.join("data")] {
        assert_eq!(
            aircraft::load(&r, Level::Variant, Split::Test, &Validation::None, false)
                .unwrap()
                .len(),
            3
        );
    }
}

#[test]
fn aircraft_official_validation_uses_train_and_val_lists() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_aircraft(dir.path());
    let train = aircraft::load(
        &root,
        Level::Variant,
        Split::Train,
        &Validation::Official,
        false,
    )
    .unwrap();
    let val = aircraft::load(
        &root,
        Level::Variant,
        Split::Val,
        &Validation::Official,
        false,
    )
    .unwrap();
    assert_eq!(
        file_names(&train),
        vec!["1000001.jpg", "1000002.jpg", "1000003.jpg"]
    );
    assert_eq!(file_names(&val), vec!["1000004.jpg", "1000005.jpg"]);
}

#[test]
fn aircraft_banner_is_cropped() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_aircraft(dir.path());
    let test =
        aircraft::load(&root, Level::Variant, Split::Test, &Validation::None, false).unwrap();
    assert_eq!(test.load(0).unwrap().dimensions(), (40, 40));
    let boxed =
        aircraft::load(&root, Level::Variant, Split::Test, &Validation::None, true).unwrap();
    // 1-based inclusive box (3, 5)-(22, 24) -> 20 x 20.
    assert_eq!(boxed.load(0).unwrap().dimensions(), (20, 20));
}

#[test]
fn aircraft_unknown_name_is_an_error_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_aircraft(dir.path());
    write(
        &root.join("data/images_variant_test.txt"),
        "1000006 707-320\n1000007 F-16A B\n",
    );
    let err = aircraft::load(&root, Level::Variant, Split::Test, &Validation::None, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("images_variant_test.txt:2") && err.contains("F-16A B"),
        "{err}"
    );
}

// --------------------------------------------------------------------------------------------- Folders

#[test]
fn folder_with_train_and_test() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (split, class, n) in [
        ("train", "b_cls", 2),
        ("train", "a_cls", 3),
        ("test", "a_cls", 1),
        ("test", "b_cls", 2),
    ] {
        for i in 0..n {
            write_jpeg(
                &root.join(split).join(class).join(format!("{i}.JPG")),
                8,
                8,
                i,
            );
        }
    }
    write(&root.join("train/a_cls/notes.txt"), "not an image");
    write_jpeg(&root.join("train/a_cls/.hidden.jpg"), 8, 8, 0);
    let train = folder::load(root, Split::Train, &Validation::None).unwrap();
    assert_eq!(train.class_names(), &["a_cls", "b_cls"].map(String::from));
    assert_eq!(labels(&train), vec![0, 0, 0, 1, 1]);
    let test = folder::load(root, Split::Test, &Validation::None).unwrap();
    assert_eq!(labels(&test), vec![0, 1, 1]);
    // A test class the training folder lacks is an error.
    write_jpeg(&root.join("test/c_cls/0.jpg"), 8, 8, 0);
    let err = folder::load(root, Split::Test, &Validation::None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("c_cls"), "{err}");
}

#[test]
fn single_folder_with_seeded_stratified_validation() {
    let dir = tempfile::tempdir().unwrap();
    for class in ["x", "y", "z"] {
        for i in 0..10 {
            write_jpeg(&dir.path().join(class).join(format!("{i:02}.png")), 4, 4, i);
        }
    }
    let v = Validation::holdout(0.2, 5);
    let train = folder::load(dir.path(), Split::Train, &v).unwrap();
    let val = folder::load(dir.path(), Split::Val, &v).unwrap();
    assert_eq!((train.len(), val.len()), (24, 6));
    assert_eq!(val.class_counts(), vec![2, 2, 2]);
    let again = folder::load(dir.path(), Split::Val, &v).unwrap();
    assert_eq!(file_names(&val), file_names(&again));
    let other = folder::load(dir.path(), Split::Val, &Validation::holdout(0.2, 6)).unwrap();
    assert_ne!(
        val.paths().collect::<Vec<_>>(),
        other.paths().collect::<Vec<_>>(),
        "another seed should hold out other images"
    );
    assert!(matches!(
        folder::load(dir.path(), Split::Test, &v),
        Err(DataError::NoSuchSplit { .. })
    ));
}

// ------------------------------------------------------------------------------------------ open() etc.

#[test]
fn open_dispatches_by_kind_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    let kind: DatasetKind = "CUB-200-2011".parse().unwrap();
    let d = open(kind, &root, Split::Test, &OpenOptions::default()).unwrap();
    assert_eq!(d.len(), 3);
    assert!(d.name().contains("test"), "{}", d.name());
    assert!("imagenet".parse::<DatasetKind>().is_err());
    let s = open(
        DatasetKind::Synthetic,
        Path::new(""),
        Split::Val,
        &OpenOptions::default(),
    )
    .unwrap();
    assert_eq!(s.len(), 200);
}

#[test]
fn any_dataset_gets_a_holdout_view() {
    let d: std::sync::Arc<dyn Dataset> = std::sync::Arc::new(
        fgvc_data::Synthetic::new(
            fgvc_data::SyntheticConfig {
                classes: 4,
                train_per_class: 10,
                ..Default::default()
            },
            Split::Train,
        )
        .unwrap(),
    );
    let (train, val) = fgvc_data::holdout(d.clone(), 0.3, 1).unwrap();
    assert_eq!((train.len(), val.len()), (28, 12));
    assert_eq!(val.class_counts(), vec![3; 4]);
    let i = val.indices()[0];
    assert_eq!(val.load(0).unwrap(), d.load(i).unwrap());
    assert_eq!(val.label(0), d.label(i));
}
