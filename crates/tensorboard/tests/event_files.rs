//! The writer against the reader, and both against TensorFlow's record format: framing and masked CRCs on
//! known vectors, scalars and images read back, corruption detected at the right offset, and the files of a
//! resumed run read in order with the restart rule.

use std::fs;
use std::path::Path;

use fgvc_tensorboard::proto::{event, Event};
use fgvc_tensorboard::record::{mask, unmask, write_record, RecordReader};
use fgvc_tensorboard::{
    event_files, masked_crc32c, read_events, EventWriter, Run, TbError, FILE_VERSION,
};
use image::RgbImage;

/// Values computed with the pure-Python `masked_crc32c` and `RecordWriter` of the `tensorboard` 2.21 wheel.
#[test]
fn masked_crcs_and_framing_match_tensorflows_record_format() {
    assert_eq!(masked_crc32c(b""), 0xa282_ead8);
    assert_eq!(masked_crc32c(b"a"), 0x28e4_6e78);
    assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
    assert_eq!(masked_crc32c(&24u64.to_le_bytes()), 0x224b_7fa3);
    // The standard CRC32C check value, unmasked.
    assert_eq!(unmask(masked_crc32c(b"123456789")), 0xe306_9283);
    for crc in [0u32, 1, 0xe306_9283, u32::MAX] {
        assert_eq!(unmask(mask(crc)), crc);
        assert_ne!(mask(crc), crc);
    }
    let mut framed = Vec::new();
    write_record(&mut framed, b"123456789").unwrap();
    assert_eq!(
        framed,
        [
            9, 0, 0, 0, 0, 0, 0, 0, 55, 249, 113, 57, 49, 50, 51, 52, 53, 54, 55, 56, 57, 229, 176,
            138, 199
        ]
    );
}

fn only_file(dir: &Path) -> std::path::PathBuf {
    let files = event_files(dir).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

#[test]
fn a_new_file_is_named_as_tensorboard_expects_and_starts_with_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let tb = dir.path().join("nested/tb");
    let writer = EventWriter::create(&tb).unwrap();
    let name = writer
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    drop(writer);
    // events.out.tfevents.<10-digit secs>.<host>.<pid>.<n>
    let parts: Vec<&str> = name.split('.').collect();
    assert_eq!(&parts[..3], ["events", "out", "tfevents"], "{name}");
    assert_eq!(parts[3].len(), 10, "{name}");
    assert!(parts[3].bytes().all(|b| b.is_ascii_digit()), "{name}");
    assert_eq!(parts[parts.len() - 2], std::process::id().to_string());
    assert_eq!(parts[parts.len() - 1], "0");
    let events = read_events(&only_file(&tb)).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].what,
        Some(event::What::FileVersion(FILE_VERSION.into()))
    );
    assert!(events[0].wall_time > 1.6e9);
}

#[test]
fn scalars_read_back_at_their_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(dir.path()).unwrap();
    for step in 0..5i64 {
        w.add_scalar("train/loss", step * 10, 2.0 / (step + 1) as f64)
            .unwrap();
    }
    w.add_scalar("lr/default", 40, 1e-3).unwrap();
    drop(w); // flushes
    let run = Run::read(dir.path()).unwrap();
    let tags: Vec<String> = run.scalar_tags().into_iter().collect();
    assert_eq!(tags, ["lr/default", "train/loss"]);
    let loss = run.scalars("train/loss");
    let got: Vec<(i64, f32)> = loss.iter().map(|p| (p.step, p.value)).collect();
    let want: Vec<(i64, f32)> = (0..5)
        .map(|s| (s * 10, (2.0 / (s + 1) as f64) as f32))
        .collect();
    assert_eq!(got, want);
    assert!(loss.windows(2).all(|w| w[0].wall_time <= w[1].wall_time));
    assert_eq!(run.scalars("lr/default")[0].value, 1e-3f32);
    assert!(run.scalars("no/such").is_empty());
}

#[test]
fn images_read_back_as_the_same_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let image = RgbImage::from_fn(7, 5, |x, y| {
        image::Rgb([x as u8 * 30, y as u8 * 50, (x * y) as u8])
    });
    let mut w = EventWriter::create(dir.path()).unwrap();
    w.add_image("augment/jigsaw2", 3, &image).unwrap();
    w.add_image_rgb("raw", 4, 2, 1, &[1, 2, 3, 4, 5, 6])
        .unwrap();
    let err = w.add_image_rgb("raw", 4, 2, 2, &[0; 3]).unwrap_err();
    assert!(matches!(err, TbError::Image { .. }), "{err}");
    w.flush().unwrap();
    let run = Run::read(dir.path()).unwrap();
    let tags: Vec<String> = run.image_tags().into_iter().collect();
    assert_eq!(tags, ["augment/jigsaw2", "raw"]);
    let logged = &run.images("augment/jigsaw2")[0];
    assert_eq!((logged.step, logged.width, logged.height), (3, 7, 5));
    assert!(logged.encoded.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(logged.decode("augment/jigsaw2").unwrap(), image);
    let raw = run.images("raw")[0].decode("raw").unwrap();
    assert_eq!(raw.as_raw(), &[1, 2, 3, 4, 5, 6]);
    assert!(run.scalar_tags().is_empty());
}

/// Writes a file with a version event and three scalars; returns it and the offsets of its records.
fn three_scalars(dir: &Path) -> (std::path::PathBuf, Vec<u64>) {
    let mut w = EventWriter::create(dir).unwrap();
    for step in 1..=3 {
        w.add_scalar("x", step, step as f64).unwrap();
    }
    let path = w.path().to_path_buf();
    drop(w);
    let offsets = RecordReader::open(&path)
        .unwrap()
        .map(|r| r.unwrap().offset)
        .collect();
    (path, offsets)
}

#[test]
fn a_corrupted_byte_is_found_with_the_file_and_the_records_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (path, offsets) = three_scalars(dir.path());
    assert_eq!(offsets.len(), 4);
    let clean = fs::read(&path).unwrap();
    let third = offsets[2] as usize;
    for (at, what) in [
        (third + 14, "the data's CRC"),
        (third + 1, "the length's CRC"),
    ] {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        let err = read_events(&path).unwrap_err();
        match &err {
            TbError::Corrupt {
                path: p, offset, ..
            } => {
                assert_eq!((p.as_path(), *offset), (path.as_path(), third as u64));
            }
            other => panic!("expected a corrupt record, got {other}"),
        }
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(
            text.contains(&format!("at byte {third}")) && text.contains(what),
            "{text}"
        );
        // A log directory with a corrupted record is an error too, not a silent gap.
        assert!(Run::read(dir.path()).is_err());
    }
    // Valid framing around data that is not an Event.
    let mut bytes = clean[..offsets[1] as usize].to_vec();
    write_record(&mut bytes, &[0xff; 5]).unwrap();
    fs::write(&path, &bytes).unwrap();
    let err = read_events(&path).unwrap_err();
    assert!(
        matches!(err, TbError::Decode { offset, .. } if offset == offsets[1]),
        "{err}"
    );
    // A file whose first event is not the version.
    let mut bytes = Vec::new();
    write_record(
        &mut bytes,
        &prost::Message::encode_to_vec(&Event::default()),
    )
    .unwrap();
    fs::write(&path, &bytes).unwrap();
    let err = read_events(&path).unwrap_err().to_string();
    assert!(err.contains("file_version"), "{err}");
}

#[test]
fn a_torn_last_record_is_an_error_alone_and_a_gap_at_the_end_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let (path, offsets) = three_scalars(dir.path());
    let len = fs::metadata(&path).unwrap().len();
    let last = *offsets.last().unwrap();
    // Cut inside the last record's data, then inside its header.
    for cut in [len - 3, last + 5] {
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..cut as usize]).unwrap();
        let err = read_events(&path).unwrap_err();
        assert!(
            matches!(err, TbError::Truncated { offset, len, .. } if offset == last && len == cut),
            "{err}"
        );
        let run = Run::read(dir.path()).unwrap();
        assert_eq!(run.torn(), [(path.clone(), last)]);
        let steps: Vec<i64> = run.scalars("x").iter().map(|p| p.step).collect();
        assert_eq!(steps, [1, 2]);
    }
}

#[test]
fn a_resumed_run_adds_a_file_and_its_restart_drops_the_orphaned_steps() {
    let dir = tempfile::tempdir().unwrap();
    // The first process logs steps 1..=6 and dies; its last checkpoint was at step 4.
    let mut first = EventWriter::create(dir.path()).unwrap();
    for step in 1..=6 {
        first.add_scalar("loss", step, step as f64).unwrap();
    }
    first.add_image_rgb("img", 5, 1, 1, &[9, 9, 9]).unwrap();
    let first_path = first.path().to_path_buf();
    drop(first);
    let first_bytes = fs::read(&first_path).unwrap();
    // The resumed process starts at step 5 again, in a new file next to the old one.
    let mut second = EventWriter::create(dir.path()).unwrap();
    assert_ne!(second.path(), first_path);
    second.add_restart(5).unwrap();
    for step in 5..=8 {
        second.add_scalar("loss", step, 10.0 * step as f64).unwrap();
    }
    drop(second);
    assert_eq!(
        fs::read(&first_path).unwrap(),
        first_bytes,
        "the old file changed"
    );
    let run = Run::read(dir.path()).unwrap();
    assert_eq!(run.files().len(), 2);
    assert_eq!(run.files()[0], first_path);
    let got: Vec<(i64, f32)> = run
        .scalars("loss")
        .iter()
        .map(|p| (p.step, p.value))
        .collect();
    assert_eq!(
        got,
        [
            (1, 1.0),
            (2, 2.0),
            (3, 3.0),
            (4, 4.0),
            (5, 50.0),
            (6, 60.0),
            (7, 70.0),
            (8, 80.0)
        ]
    );
    // The image of the lost step 5 is gone too.
    assert!(run.images("img").is_empty());
    assert!(run.torn().is_empty());
}

#[test]
fn an_unwritable_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("tb");
    fs::write(&blocker, "a file where the directory should be").unwrap();
    let err = EventWriter::create(&blocker)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains(&blocker.display().to_string()), "{err}");
    let err = Run::read(&dir.path().join("absent"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent"), "{err}");
}
