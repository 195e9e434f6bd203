//! Dataset indexes are checked, not trusted: every inconsistency of a CUB, Stanford Cars or FGVC-Aircraft
//! index is an error naming the file and the line (or `.mat` element), both when the data is loaded and in
//! `verify`.

mod common;

use std::path::Path;

use common::*;
use fgvc_data::aircraft::Level;
use fgvc_data::mat5::{write_mat, MatValue, WriteOptions};
use fgvc_data::verify::{verify, Check};
use fgvc_data::{aircraft, cars, cub, DatasetKind, OpenOptions, Split, Validation};

fn append(path: &Path, line: &str) {
    let mut text = std::fs::read_to_string(path).unwrap();
    text.push_str(line);
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// The error of loading CUB's training split, which `verify` must give too.
fn cub_error(root: &Path) -> String {
    let err = cub::load(root, Split::Train, &Validation::None, false)
        .unwrap_err()
        .to_string();
    let verified = verify(
        DatasetKind::Cub,
        root,
        &OpenOptions::default(),
        Check::Exists,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(err, verified);
    err
}

fn assert_has(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }
}

#[test]
fn cub_duplicate_image_id_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    // Before: id 3 of a second line silently took the label of the first id 3.
    append(&root.join("images.txt"), "3 003.Sooty_Albatross/extra.jpg");
    let err = cub_error(&root);
    assert_has(
        &err,
        &["images.txt:8", "image id 3 appears a second time", "line 3"],
    );
}

#[test]
fn cub_one_file_under_two_ids_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    append(
        &root.join("images.txt"),
        "8 002.Laysan_Albatross/Laysan_Albatross_0001_545.jpg",
    );
    append(&root.join("image_class_labels.txt"), "8 1");
    append(&root.join("train_test_split.txt"), "8 1");
    let err = cub_error(&root);
    assert_has(
        &err,
        &[
            "images.txt:8",
            "Laysan_Albatross_0001_545.jpg",
            "appears a second time",
        ],
    );
}

#[test]
fn cub_conflicting_label_lines_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    append(&root.join("image_class_labels.txt"), "1 2");
    let err = cub_error(&root);
    // Image 1's first label line is the file's last (line 7): it is written in reverse order.
    assert_has(
        &err,
        &[
            "image_class_labels.txt:8",
            "image id 1 appears a second time (first on line 7)",
        ],
    );
}

#[test]
fn cub_a_repeated_identical_split_line_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    append(&root.join("train_test_split.txt"), "4 1");
    let err = cub_error(&root);
    assert_has(
        &err,
        &["train_test_split.txt:8", "image id 4 appears a second time"],
    );
}

#[test]
fn cub_an_id_missing_from_one_index_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    // Listed with a label but not in images.txt.
    append(&root.join("image_class_labels.txt"), "99 1");
    let err = cub_error(&root);
    assert_has(
        &err,
        &[
            "image_class_labels.txt:8",
            "image id 99 is not listed in",
            "images.txt",
        ],
    );

    // In images.txt but without a split line.
    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    let split = std::fs::read_to_string(root.join("train_test_split.txt")).unwrap();
    let without_5: String = split
        .lines()
        .filter(|l| !l.starts_with("5 "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(root.join("train_test_split.txt"), without_5).unwrap();
    let err = cub_error(&root);
    assert_has(
        &err,
        &[
            "images.txt:5",
            "image id 5 has no line in",
            "train_test_split.txt",
        ],
    );
}

#[test]
fn cub_an_empty_images_txt_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    std::fs::write(root.join("images.txt"), "\n\n").unwrap();
    let err = cub_error(&root);
    assert_has(&err, &["images.txt", "lists nothing", "CUB_200_2011.tgz"]);
}

#[test]
fn cub_a_label_out_of_range_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    let labels = std::fs::read_to_string(root.join("image_class_labels.txt")).unwrap();
    std::fs::write(
        root.join("image_class_labels.txt"),
        labels.replace("6 3", "6 0"),
    )
    .unwrap();
    let err = cub_error(&root);
    assert_has(
        &err,
        &[
            "image_class_labels.txt:2",
            "class \"0\" is not listed in classes.txt",
            "1..=3",
        ],
    );
}

#[test]
fn cub_malformed_lines_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    append(&root.join("images.txt"), "8");
    let err = cub_error(&root);
    assert_has(&err, &["images.txt:8", "expected two fields"]);

    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    append(&root.join("classes.txt"), "x Extra_Bird");
    let err = cub_error(&root);
    assert_has(&err, &["classes.txt:4", "not an integer"]);

    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    append(&root.join("classes.txt"), "02 Again");
    let err = cub_error(&root);
    assert_has(&err, &["classes.txt:4", "class id 2 appears a second time"]);
}

// ------------------------------------------------------------------------------------------------ Cars

fn write_train_annos(root: &Path, rows: &[(&str, u32, [u32; 4])]) {
    write_mat(
        &root.join("devkit/cars_train_annos.mat"),
        &[("annotations", cars_annotations(rows, true))],
        WriteOptions {
            compress: true,
            big_endian: false,
        },
    )
    .unwrap();
}

fn cars_error(root: &Path) -> String {
    let err = cars::load(root, Split::Train, &Validation::None, false)
        .unwrap_err()
        .to_string();
    let verified = verify(
        DatasetKind::Cars,
        root,
        &OpenOptions::default(),
        Check::Exists,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(err, verified);
    err
}

#[test]
fn cars_a_file_annotated_twice_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cars_devkit(dir.path(), TestLabels::Root, false);
    write_train_annos(
        &root,
        &[
            ("00001.jpg", 1, [1, 1, 9, 9]),
            ("00002.jpg", 2, [1, 1, 9, 9]),
            ("00001.jpg", 3, [1, 1, 9, 9]),
        ],
    );
    let err = cars_error(&root);
    assert_has(
        &err,
        &[
            "cars_train_annos.mat",
            "element 3",
            "\"00001.jpg\" appears a second time (first as element 1)",
        ],
    );
}

#[test]
fn cars_a_label_out_of_range_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cars_devkit(dir.path(), TestLabels::Root, false);
    write_train_annos(
        &root,
        &[
            ("00001.jpg", 1, [1, 1, 9, 9]),
            ("00002.jpg", 4, [1, 1, 9, 9]),
        ],
    );
    let err = cars_error(&root);
    assert_has(
        &err,
        &["cars_train_annos.mat", "element 2", "class 4 outside 1..=3"],
    );
}

#[test]
fn cars_empty_annotations_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cars_devkit(dir.path(), TestLabels::Root, false);
    write_train_annos(&root, &[]);
    let err = cars_error(&root);
    assert_has(&err, &["cars_train_annos.mat", "no element"]);

    let dir = tempfile::tempdir().unwrap();
    let root = make_cars_devkit(dir.path(), TestLabels::Root, false);
    let no_names: [&str; 0] = [];
    write_mat(
        &root.join("devkit/cars_meta.mat"),
        &[("class_names", MatValue::cell_of_strings(&no_names))],
        WriteOptions::default(),
    )
    .unwrap();
    let err = cars_error(&root);
    assert_has(&err, &["cars_meta.mat", "class_names is empty"]);
}

#[test]
fn cars_test_annotations_are_checked_too() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cars_devkit(dir.path(), TestLabels::Root, false);
    let rows = [
        ("00003.jpg", 1, [1, 1, 9, 9]),
        ("00003.jpg", 1, [1, 1, 9, 9]),
    ];
    write_mat(
        &root.join("cars_test_annos_withlabels.mat"),
        &[("annotations", cars_annotations(&rows, true))],
        WriteOptions::default(),
    )
    .unwrap();
    let err = cars::load(&root, Split::Test, &Validation::None, false)
        .unwrap_err()
        .to_string();
    assert_has(
        &err,
        &["cars_test_annos_withlabels.mat", "element 2", "00003.jpg"],
    );
    let report = verify(
        DatasetKind::Cars,
        &root,
        &OpenOptions::default(),
        Check::Exists,
    )
    .unwrap();
    assert!(!report.is_ok());
    assert_has(&report.unavailable[0].1, &["element 2", "00003.jpg"]);
}

// -------------------------------------------------------------------------------------------- Aircraft

fn aircraft_test_error(root: &Path) -> String {
    let err = aircraft::load(root, Level::Variant, Split::Test, &Validation::None, false)
        .unwrap_err()
        .to_string();
    let report = verify(
        DatasetKind::Aircraft,
        root,
        &OpenOptions::default(),
        Check::Exists,
    )
    .unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.unavailable, vec![(Split::Test, err.clone())]);
    err
}

#[test]
fn aircraft_an_image_listed_twice_in_a_split_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_aircraft(dir.path());
    write(
        &root.join("data/images_variant_test.txt"),
        "1000006 707-320\n1000007 F-16A/B\n1000006 707-320\n",
    );
    let err = aircraft_test_error(&root);
    assert_has(
        &err,
        &[
            "images_variant_test.txt:3",
            "image 1000006 appears a second time (first on line 1)",
        ],
    );
}

#[test]
fn aircraft_an_image_in_both_train_and_test_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_aircraft(dir.path());
    append(
        &root.join("data/images_variant_test.txt"),
        "1000002 F-16A/B",
    );
    let err = aircraft_test_error(&root);
    assert_has(
        &err,
        &[
            "images_variant_trainval.txt:2",
            "image 1000002 is also listed in",
            "images_variant_test.txt (line 4)",
        ],
    );
    // The training split itself is sound and still opens.
    assert!(aircraft::load(
        &root,
        Level::Variant,
        Split::Train,
        &Validation::None,
        false
    )
    .is_ok());

    // The official train and val lists must be disjoint too.
    let dir = tempfile::tempdir().unwrap();
    let root = make_aircraft(dir.path());
    append(
        &root.join("data/images_family_val.txt"),
        "1000001 Boeing 707",
    );
    let err = aircraft::official(&root, Level::Family, false)
        .unwrap_err()
        .to_string();
    assert_has(
        &err,
        &[
            "images_family_train.txt:1",
            "image 1000001 is also listed in",
            "images_family_val.txt",
        ],
    );
}

#[test]
fn aircraft_unknown_names_and_empty_lists_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_aircraft(dir.path());
    append(
        &root.join("data/images_variant_trainval.txt"),
        "1000009 747-400",
    );
    let err = aircraft::official(&root, Level::Variant, false)
        .unwrap_err()
        .to_string();
    assert_has(
        &err,
        &["images_variant_trainval.txt:6", "\"747-400\" is not listed"],
    );

    let dir = tempfile::tempdir().unwrap();
    let root = make_aircraft(dir.path());
    write(&root.join("data/images_variant_test.txt"), "\n");
    let err = aircraft_test_error(&root);
    assert_has(&err, &["images_variant_test.txt", "lists nothing"]);

    let dir = tempfile::tempdir().unwrap();
    let root = make_aircraft(dir.path());
    write(&root.join("data/variants.txt"), "");
    let err = aircraft::official(&root, Level::Variant, false)
        .unwrap_err()
        .to_string();
    assert_has(&err, &["variants.txt", "lists nothing"]);

    let dir = tempfile::tempdir().unwrap();
    let root = make_aircraft(dir.path());
    write(
        &root.join("data/variants.txt"),
        "707-320\nF-16A/B\nFalcon 2000\nF-16A/B\n",
    );
    let err = aircraft::official(&root, Level::Variant, false)
        .unwrap_err()
        .to_string();
    assert_has(
        &err,
        &["variants.txt:4", "class name F-16A/B appears a second time"],
    );
}
