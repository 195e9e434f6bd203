//! `verify`: counts per split and class, missing and unreadable files.

mod common;

use common::*;
use fgvc_data::verify::{per_class_table, verify, Check};
use fgvc_data::{DatasetKind, OpenOptions, Split, SyntheticConfig};

#[test]
fn verify_counts_and_finds_missing_and_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cub(dir.path());
    let images = root.join("images");
    std::fs::remove_file(images.join("002.Laysan_Albatross/Laysan_Albatross_0001_545.jpg"))
        .unwrap();
    std::fs::write(
        images.join("003.Sooty_Albatross/Sooty_Albatross_0002_796395.jpg"),
        b"garbage",
    )
    .unwrap();

    let report = verify(
        DatasetKind::Cub,
        &root,
        &OpenOptions::default(),
        Check::Decode,
    )
    .unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.class_names.len(), 3);
    let train = &report.splits[0];
    let test = &report.splits[1];
    assert_eq!((train.split, test.split), (Split::Train, Split::Test));
    assert_eq!((train.total, test.total), (4, 3));
    assert_eq!(train.per_class, vec![1, 2, 1]);
    assert_eq!(test.per_class, vec![1, 1, 1]);
    assert_eq!(train.missing.len(), 1);
    assert!(train.missing[0].ends_with("Laysan_Albatross_0001_545.jpg"));
    assert!(train.unreadable.is_empty());
    assert_eq!(test.unreadable.len(), 1);
    assert!(test.unreadable[0]
        .0
        .ends_with("Sooty_Albatross_0002_796395.jpg"));

    let text = report.to_string();
    assert!(
        text.contains("Laysan_Albatross_0001_545.jpg") && text.contains("PROBLEMS FOUND"),
        "{text}"
    );
    assert!(
        text.contains("1 missing") && text.contains("1 unreadable"),
        "{text}"
    );
    let table = per_class_table(&report);
    assert!(
        table.starts_with("class\ttrain\ttest\n") && table.contains("002.Laysan_Albatross\t2\t1"),
        "{table}"
    );

    // Existence alone does not see the corrupt file; the header check does.
    let quick = verify(
        DatasetKind::Cub,
        &root,
        &OpenOptions::default(),
        Check::Exists,
    )
    .unwrap();
    assert!(quick.splits[1].unreadable.is_empty());
    let header = verify(
        DatasetKind::Cub,
        &root,
        &OpenOptions::default(),
        Check::Header,
    )
    .unwrap();
    assert_eq!(header.splits[1].unreadable.len(), 1);
}

#[test]
fn verify_a_clean_dataset_is_ok() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_aircraft(dir.path());
    let report = verify(
        DatasetKind::Aircraft,
        &root,
        &OpenOptions::default(),
        Check::Decode,
    )
    .unwrap();
    assert!(report.is_ok(), "{report}");
    // trainval, the official val list, test.
    let totals: Vec<(Split, usize)> = report.splits.iter().map(|s| (s.split, s.total)).collect();
    assert_eq!(
        totals,
        vec![(Split::Train, 5), (Split::Val, 2), (Split::Test, 3)]
    );
    assert!(report.to_string().ends_with("OK"));
}

#[test]
fn verify_reports_an_unavailable_split() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_cars_devkit(dir.path(), TestLabels::Missing, false);
    let report = verify(
        DatasetKind::Cars,
        &root,
        &OpenOptions::default(),
        Check::Header,
    )
    .unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.splits.len(), 1);
    assert_eq!(report.unavailable[0].0, Split::Test);
    assert!(report.unavailable[0]
        .1
        .contains("cars_test_annos_withlabels.mat"));
}

#[test]
fn verify_a_root_that_is_not_the_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let err = verify(
        DatasetKind::Aircraft,
        dir.path(),
        &OpenOptions::default(),
        Check::Exists,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("variants.txt") && err.contains("fgvc-aircraft-2013b.tar.gz"),
        "{err}"
    );
}

#[test]
fn verify_the_synthetic_dataset() {
    let options = OpenOptions {
        synthetic: SyntheticConfig {
            classes: 3,
            image_size: 16,
            train_per_class: 2,
            val_per_class: 1,
            test_per_class: 1,
            seed: 0,
            first_class: 0,
        },
        ..Default::default()
    };
    let report = verify(DatasetKind::Synthetic, "".as_ref(), &options, Check::Decode).unwrap();
    assert!(report.is_ok());
    assert_eq!(
        report.splits.iter().map(|s| s.total).collect::<Vec<_>>(),
        vec![6, 3, 3]
    );
}
