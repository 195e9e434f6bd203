//! Downloads, resume, mirrors, verification, extraction and weight conversion against a local HTTP server
//! started by each test ([`support::http`]).

mod support;

use std::collections::HashMap;
use std::path::PathBuf;

use md5::Md5;
use sha2::{Digest, Sha256};
use support::http::{route, Server};
use support::quiet;
use xtask::catalog::{Artifact, DatasetSpec, Unpack, WeightsSpec};
use xtask::download::{part_path, Expected};
use xtask::extract::extract_tar_gz;

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn expected_for(body: &[u8]) -> Expected {
    Expected {
        size: Some(body.len() as u64),
        md5: Some(hex(&Md5::digest(body))),
        sha256: Some(hex(&Sha256::digest(body))),
        sha256_prefix: None,
    }
}

fn scratch(test: &str) -> PathBuf {
    support::scratch("xtask-tests", test)
}

#[test]
fn complete_download_is_verified_and_renamed() {
    let body = payload(300_000);
    let server = Server::start(HashMap::from([("/f.bin", route(&body, true))]));
    let dir = scratch("complete");
    let dest = dir.join("f.bin");
    quiet()
        .fetch(&[server.url("/f.bin")], &dest, &expected_for(&body))
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(!part_path(&dest).exists());
    // A second run finds the verified file and does not download again.
    quiet()
        .fetch(&[server.url("/f.bin")], &dest, &expected_for(&body))
        .unwrap();
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn dropped_connections_resume_with_range() {
    let body = payload(200_000);
    let mut r = route(&body, true);
    r.drops = 2;
    r.drop_after = 50_000;
    let server = Server::start(HashMap::from([("/f.bin", r)]));
    let dir = scratch("resume");
    let dest = dir.join("f.bin");
    quiet()
        .fetch(&[server.url("/f.bin")], &dest, &expected_for(&body))
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let ranges: Vec<Option<String>> = server.requests().into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        ranges,
        [
            None,
            Some("bytes=50000-".into()),
            Some("bytes=100000-".into())
        ]
    );
}

#[test]
fn a_partial_file_from_an_earlier_run_is_resumed() {
    let body = payload(120_000);
    let server = Server::start(HashMap::from([("/f.bin", route(&body, true))]));
    let dir = scratch("earlier-run");
    let dest = dir.join("f.bin");
    std::fs::write(part_path(&dest), &body[..40_000]).unwrap();
    quiet()
        .fetch(&[server.url("/f.bin")], &dest, &expected_for(&body))
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(
        server.requests(),
        [("/f.bin".to_string(), Some("bytes=40000-".to_string()))]
    );
}

#[test]
fn a_server_ignoring_range_restarts_from_zero() {
    let body = payload(90_000);
    let server = Server::start(HashMap::from([("/f.bin", route(&body, false))]));
    let dir = scratch("no-range");
    let dest = dir.join("f.bin");
    // A stale partial file whose bytes are wrong: it must not survive in the result.
    std::fs::write(part_path(&dest), vec![0xffu8; 30_000]).unwrap();
    quiet()
        .fetch(&[server.url("/f.bin")], &dest, &expected_for(&body))
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(server.requests()[0].1.as_deref(), Some("bytes=30000-"));
}

#[test]
fn too_many_drops_keep_the_partial_file_for_later() {
    let body = payload(100_000);
    let mut r = route(&body, true);
    r.drops = 100;
    r.drop_after = 10_000;
    let server = Server::start(HashMap::from([("/f.bin", r)]));
    let dir = scratch("give-up");
    let dest = dir.join("f.bin");
    let mut dl = quiet();
    dl.max_resumes = 2;
    let err = format!(
        "{:#}",
        dl.fetch(&[server.url("/f.bin")], &dest, &expected_for(&body))
            .unwrap_err()
    );
    assert!(
        err.contains("connection lost 3 times") && err.contains("run again to resume"),
        "{err}"
    );
    assert_eq!(std::fs::metadata(part_path(&dest)).unwrap().len(), 30_000);
    assert!(!dest.exists());
}

#[test]
fn checksum_mismatch_deletes_the_file_and_says_so() {
    let body = payload(10_000);
    let server = Server::start(HashMap::from([("/f.bin", route(&body, true))]));
    let dir = scratch("mismatch");
    let dest = dir.join("f.bin");
    for (field, want) in [
        ("md5", expected_for(&body)),
        ("sha256", expected_for(&body)),
    ] {
        let mut want = want;
        if field == "md5" {
            want.md5 = Some("0".repeat(32));
        } else {
            want.sha256 = Some("0".repeat(64));
        }
        let err = format!(
            "{:#}",
            quiet()
                .fetch(&[server.url("/f.bin")], &dest, &want)
                .unwrap_err()
        );
        assert!(
            err.contains("checksum mismatch") && err.contains(field) && err.contains("deleted"),
            "{err}"
        );
        assert!(!dest.exists() && !part_path(&dest).exists());
    }
    // A size the server does not offer is refused before anything is written.
    let want = Expected {
        size: Some(5),
        ..Expected::default()
    };
    let err = format!(
        "{:#}",
        quiet()
            .fetch(&[server.url("/f.bin")], &dest, &want)
            .unwrap_err()
    );
    assert!(err.contains("offers 10000 bytes, expected 5"), "{err}");
}

#[test]
fn mirrors_are_tried_in_order() {
    let body = payload(20_000);
    let server = Server::start(HashMap::from([("/good/f.bin", route(&body, true))]));
    let dir = scratch("mirrors");
    let dest = dir.join("f.bin");
    let urls = [server.url("/gone/f.bin"), server.url("/good/f.bin")];
    quiet().fetch(&urls, &dest, &expected_for(&body)).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let paths: Vec<String> = server.requests().into_iter().map(|(p, _)| p).collect();
    assert_eq!(paths, ["/gone/f.bin", "/good/f.bin"]);

    let err = format!(
        "{:#}",
        quiet()
            .fetch(&urls[..1], &dir.join("g.bin"), &expected_for(&body))
            .unwrap_err()
    );
    assert!(
        err.contains("every source failed") && err.contains("/gone/f.bin: HTTP 404"),
        "{err}"
    );
}

/// A gzip-compressed tar with the given entries: (path, kind, data-or-link-target).
fn tar_gz(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, kind, data) in entries {
        let mut header = tar::Header::new_gnu();
        // Written raw: the builder's own setters refuse `..` and absolute paths, which these tests need.
        let name = &mut header.as_gnu_mut().unwrap().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        if *kind == tar::EntryType::Symlink {
            let link = &mut header.as_gnu_mut().unwrap().linkname;
            link[..data.len()].copy_from_slice(data);
            header.set_size(0);
            header.set_cksum();
            builder.append(&header, std::io::empty()).unwrap();
        } else {
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
    }
    builder.into_inner().unwrap().finish().unwrap()
}

#[test]
fn extraction_places_everything_or_nothing() {
    use tar::EntryType::{Directory, Regular, Symlink};
    let dir = scratch("extract");
    let good = dir.join("good.tgz");
    std::fs::write(
        &good,
        tar_gz(&[
            ("root/", Directory, b""),
            ("root/images.txt", Regular, b"1 a.jpg\n"),
            ("root/sub/link", Symlink, b"../images.txt"),
            ("attributes.txt", Regular, b"attrs"),
        ]),
    )
    .unwrap();
    let dest = dir.join("data");
    let mut tops = extract_tar_gz(&good, &dest).unwrap();
    tops.sort();
    assert_eq!(tops, ["attributes.txt", "root"]);
    assert_eq!(
        std::fs::read(dest.join("root/images.txt")).unwrap(),
        b"1 a.jpg\n"
    );
    assert_eq!(
        std::fs::read(dest.join("root/sub/link")).unwrap(),
        b"1 a.jpg\n"
    );

    for (name, evil, why) in [
        (
            "dotdot",
            ("../evil.txt", Regular, &b"x"[..]),
            "escapes the target directory",
        ),
        (
            "nested-dotdot",
            ("inner/../../evil.txt", Regular, &b"x"[..]),
            "escapes the target directory",
        ),
        (
            "absolute",
            ("/tmp/fgvc-evil.txt", Regular, &b"x"[..]),
            "escapes the target directory",
        ),
        (
            "symlink",
            ("inner/link", Symlink, &b"../../outside"[..]),
            "outside the target directory",
        ),
        (
            "abs-symlink",
            ("inner/link", Symlink, &b"/etc/passwd"[..]),
            "outside the target directory",
        ),
    ] {
        let archive = dir.join(format!("{name}.tgz"));
        std::fs::write(
            &archive,
            tar_gz(&[("inner/ok.txt", Regular, b"fine"), evil]),
        )
        .unwrap();
        let dest = dir.join(format!("out-{name}"));
        let err = format!("{:#}", extract_tar_gz(&archive, &dest).unwrap_err());
        assert!(
            err.contains("refusing archive entry") && err.contains(why),
            "{name}: {err}"
        );
        // Nothing half-extracted: the destination is empty, no temporary directory is left.
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0, "{name}");
        assert!(!dir.join("evil.txt").exists());
    }

    let corrupt = dir.join("corrupt.tgz");
    let mut bytes = std::fs::read(&good).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&corrupt, bytes).unwrap();
    let dest = dir.join("out-corrupt");
    assert!(extract_tar_gz(&corrupt, &dest).is_err());
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[test]
fn a_dataset_is_downloaded_unpacked_and_then_left_alone() {
    let archive = tar_gz(&[(
        "tiny_root/images.txt",
        tar::EntryType::Regular,
        b"1 a.jpg\n",
    )]);
    let labels = b"labels".to_vec();
    let server = Server::start(HashMap::from([("/mirror/tiny.tgz", route(&archive, true))]));
    let artifact =
        |file: &'static str, body: &[u8], urls: &'static [&'static str], unpack, creates| {
            Artifact {
                file,
                size: body.len() as u64,
                md5: leak(hex(&Md5::digest(body))),
                sha256: Some(leak(hex(&Sha256::digest(body)))),
                urls,
                unpack,
                creates,
            }
        };
    let artifacts: &'static [Artifact] = Box::leak(Box::new([
        artifact("tiny.tgz", &archive, &[], Unpack::TarGz, "tiny_root"),
        artifact("labels.mat", &labels, &[], Unpack::Copy, "labels.mat"),
    ]));
    let spec = DatasetSpec {
        name: "tiny",
        title: "Tiny",
        subdir: "tiny",
        root: "tiny/tiny_root",
        artifacts,
        manual: Some("Get labels.mat from the lab's page."),
    };
    let dir = scratch("dataset");
    let mirrors = [server.url("/gone"), server.url("/mirror")];
    let dl = quiet();
    // labels.mat has no source: the archive is installed, then the manual step is explained.
    let err = format!(
        "{:#}",
        xtask::install_dataset(&dl, &spec, &dir, &[], &mirrors).unwrap_err()
    );
    assert!(
        err.contains("labels.mat cannot be downloaded automatically") && err.contains("lab's page"),
        "{err}"
    );
    assert!(dir.join("tiny/tiny_root/images.txt").is_file());
    assert!(dir.join("downloads/tiny.tgz").is_file());

    // A supplied file with the wrong content is refused.
    let supplied = dir.join("supplied");
    std::fs::create_dir_all(&supplied).unwrap();
    std::fs::write(supplied.join("labels.mat"), b"labelz").unwrap();
    let err = format!(
        "{:#}",
        xtask::install_dataset(&dl, &spec, &dir, std::slice::from_ref(&supplied), &mirrors)
            .unwrap_err()
    );
    assert!(
        err.contains("is not the expected labels.mat") && err.contains("md5"),
        "{err}"
    );
    std::fs::write(supplied.join("labels.mat"), &labels).unwrap();
    xtask::install_dataset(&dl, &spec, &dir, &[supplied], &mirrors).unwrap();
    assert_eq!(std::fs::read(dir.join("tiny/labels.mat")).unwrap(), labels);
    // Everything in place: no further requests.
    let before = server.requests().len();
    xtask::install_dataset(&dl, &spec, &dir, &[], &mirrors).unwrap();
    assert_eq!(server.requests().len(), before);
}

fn fixture(name: &str) -> PathBuf {
    xtask::workspace_root()
        .join("crates/backbone/tests/fixtures/pth")
        .join(name)
}

fn values(tensors: &[(String, candle_core::Tensor)]) -> Vec<(String, Vec<f64>)> {
    let mut v: Vec<(String, Vec<f64>)> = tensors
        .iter()
        .map(|(n, t)| {
            let flat = t
                .flatten_all()
                .unwrap()
                .to_dtype(candle_core::DType::F64)
                .unwrap();
            (n.clone(), flat.to_vec1().unwrap())
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn weights_are_downloaded_checked_by_name_and_converted() {
    let legacy = std::fs::read(fixture("tiny_legacy.pth")).unwrap();
    let sha = hex(&Sha256::digest(&legacy));
    let good = leak(format!("tiny-{}.pth", &sha[..8]));
    let bad = leak("tiny-00000000.pth".to_string());
    let server = Server::start(HashMap::from([
        (leak(format!("/models/{good}")), route(&legacy, true)),
        (leak(format!("/models/{bad}")), route(&legacy, true)),
    ]));
    let dir = scratch("weights");
    let mirrors = [server.url("/models")];
    // The first file's name promises another hash: it is refused and the next file is used.
    let spec = WeightsSpec {
        name: "tiny",
        files: Box::leak(Box::new([bad, good])),
    };
    let out = xtask::install_weights(&quiet(), &spec, &dir, &mirrors, false).unwrap();
    assert_eq!(out, dir.join("tiny.safetensors"));
    assert!(!dir.join(bad).exists() && dir.join(good).exists());
    let converted = fgvc_backbone::weights::read_checkpoint(&out, None).unwrap();
    assert_eq!(
        converted.format,
        fgvc_backbone::weights::Format::Safetensors
    );
    let reference = fgvc_backbone::weights::read_tensors(fixture("tiny.safetensors")).unwrap();
    assert_eq!(values(&converted.tensors), values(&reference));

    // The tiny model is no ResNet-18: the check against fgvc-backbone's model says where they differ.
    let err = format!("{:#}", xtask::check_weights("resnet18", &out).unwrap_err());
    assert!(
        err.contains("shape mismatch for `bn1.bias`: the model has [64], the file has [4]"),
        "{err}"
    );
}

#[test]
fn convert_reads_nested_legacy_checkpoints() {
    let dir = scratch("convert");
    let out = dir.join("out.safetensors");
    let n = fgvc_backbone::weights::convert_to_safetensors(
        fixture("tiny_nested_legacy.pth"),
        None,
        &out,
    )
    .unwrap();
    assert_eq!(n, 15);
    let reference = fgvc_backbone::weights::read_tensors(fixture("tiny.safetensors")).unwrap();
    assert_eq!(
        values(&fgvc_backbone::weights::read_tensors(&out).unwrap()),
        values(&reference)
    );
}
