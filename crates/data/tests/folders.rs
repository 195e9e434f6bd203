//! Image-folder datasets on awkward trees: too few classes, empty splits and class folders, symbolic-link
//! cycles and linked copies.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use fgvc_data::{folder, open, Dataset, DatasetKind, OpenOptions, Split, Validation};

/// Runs `f` with the warnings of this thread captured, and returns them.
fn warnings(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let out = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || out.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buffer.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

fn images(dir: &Path, n: u8) {
    for i in 0..n {
        write_jpeg(&dir.join(format!("{i}.jpg")), 8, 8, i);
    }
}

#[test]
fn a_folder_of_one_class_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    images(&dir.path().join("only"), 3);
    let err = folder::load(dir.path(), Split::Train, &Validation::None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1 class with images (only)")
            && err.contains("at least two classes")
            && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
    // Two class folders, one of them empty: still one class that has images.
    std::fs::create_dir(dir.path().join("other")).unwrap();
    let err = folder::load(dir.path(), Split::Train, &Validation::None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 class with images (only)"), "{err}");
    images(&dir.path().join("other"), 1);
    assert_eq!(
        folder::load(dir.path(), Split::Train, &Validation::None)
            .unwrap()
            .class_counts(),
        vec![3, 1]
    );
}

#[test]
fn an_empty_split_names_the_split_and_the_root() {
    let dir = tempfile::tempdir().unwrap();
    images(&dir.path().join("train/a"), 2);
    images(&dir.path().join("train/b"), 2);
    std::fs::create_dir_all(dir.path().join("test/a")).unwrap();
    let err = open(
        DatasetKind::Folder,
        dir.path(),
        Split::Test,
        &OpenOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("the dataset is empty")
            && err.contains("the test split of the folder dataset at")
            && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
    let report = fgvc_data::verify::verify(
        DatasetKind::Folder,
        dir.path(),
        &OpenOptions::default(),
        fgvc_data::verify::Check::Exists,
    )
    .unwrap();
    assert!(!report.is_ok());
    assert!(
        report.to_string().contains("the test split is empty"),
        "{report}"
    );
    let train = open(
        DatasetKind::Folder,
        dir.path(),
        Split::Train,
        &OpenOptions::default(),
    );
    assert_eq!(train.unwrap().len(), 4);
}

#[test]
fn empty_class_folders_are_reported_once_in_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    images(&dir.path().join("train/a"), 2);
    images(&dir.path().join("train/d"), 2);
    for empty in ["train/b", "train/c", "test/a", "test/b", "test/c", "test/d"] {
        std::fs::create_dir_all(dir.path().join(empty)).unwrap();
    }
    images(&dir.path().join("test/a"), 1);
    let text = warnings(|| {
        // Every split opens the folder again; the warning must not repeat.
        for _ in 0..3 {
            folder::official(dir.path()).unwrap();
        }
    });
    let train = dir.path().join("train");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("of {} have no images", train.display())))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("2 class folders") && lines[0].contains("b, c"),
        "{text}"
    );
    let test = dir.path().join("test");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("of {} have no images", test.display())))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("3 class folders") && lines[0].contains("b, c, d"),
        "{text}"
    );
}

#[cfg(unix)]
#[test]
fn link_cycles_and_linked_copies_are_read_once() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    images(&root.join("a"), 2);
    images(&root.join("b"), 2);
    symlink(root, root.join("a/loop")).unwrap(); // a link back up the tree
    symlink(root.join("a/0.jpg"), root.join("a/copy.jpg")).unwrap();
    symlink(root.join("b/0.jpg"), root.join("a/from_b.jpg")).unwrap();
    let text = warnings(|| {
        let set = folder::load(root, Split::Train, &Validation::None).unwrap();
        let names: Vec<String> = set
            .paths()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        // b/0.jpg is first reached (and labelled) through a/from_b.jpg, which sorts first.
        assert_eq!(names, ["a/0.jpg", "a/1.jpg", "a/from_b.jpg", "b/1.jpg"]);
    });
    assert!(
        text.contains("a/copy.jpg (= ") && text.contains("b/0.jpg (= "),
        "{text}"
    );
}
