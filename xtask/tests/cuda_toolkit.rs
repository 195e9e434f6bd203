//! `cargo xtask cuda-toolkit` against wheels made here and served on loopback: the install, its
//! idempotence, the runtime upgrade, refusals of tampered and hostile wheels, and the link stubs.

mod support;

use std::collections::HashMap;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use support::http::{route, Server};
use support::quiet;
use xtask::cuda_toolkit::wheels::{Linked, Release, Role, Wheel};
use xtask::cuda_toolkit::{install, installed, stubs, Options};
use zip::write::SimpleFileOptions;

fn scratch(test: &str) -> PathBuf {
    support::scratch("xtask-cuda-toolkit", test)
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A wheel holding `members` (name, mode, bytes).
fn wheel(members: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, mode, body) in members {
        let opts = SimpleFileOptions::default().unix_permissions(*mode);
        zip.start_file(*name, opts).unwrap();
        zip.write_all(body).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

const NVCC: &[u8] = b"#!/bin/sh\necho 'Cuda compilation tools, release 0.0, V0.0.1'\n";

/// The compiler wheel (an `nvcc` that reports 0.0.1, a header, a versioned library) and a runtime wheel.
fn fake_wheels() -> Vec<(&'static str, Vec<u8>, Role)> {
    vec![
        (
            "fake_nvcc-0.0.1-py3-none-manylinux_x86_64.whl",
            wheel(&[
                ("nvidia/cu13/bin/nvcc", 0o755, NVCC),
                ("nvidia/cu13/include/cuda.h", 0o644, b"#define CUDA 1\n"),
                ("nvidia/cu13/lib/libcudart.so.13", 0o644, b"not really ELF"),
                ("fake_nvcc-0.0.1.dist-info/RECORD", 0o644, b"x"),
            ]),
            Role::Compiler,
        ),
        (
            "fake_cudnn-0.0.1-py3-none-manylinux_x86_64.whl",
            wheel(&[("nvidia/cudnn/lib/libcudnn.so.9", 0o644, b"not really ELF")]),
            Role::Runtime,
        ),
    ]
}

fn release_of(wheels: &[(&'static str, Vec<u8>, Role)]) -> Release {
    Release {
        name: "0.0.1",
        wheels: wheels
            .iter()
            .map(|(file, body, role)| Wheel {
                project: "fake",
                version: "0.0.1",
                file,
                pypi_dir: "00/00/none",
                size: body.len() as u64,
                sha256: leak(
                    Sha256::digest(body)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                ),
                role: *role,
            })
            .collect(),
        linked: &[],
    }
}

fn options(dir: &Path, runtime: bool) -> Options {
    Options {
        dir: dir.to_path_buf(),
        runtime,
        from: Vec::new(),
        mirror: Vec::new(),
    }
}

#[test]
fn the_toolkit_installs_from_a_mirror_once_and_upgrades_to_the_runtime() {
    let dir = scratch("install");
    let wheels = fake_wheels();
    let release = release_of(&wheels);
    let server = Server::start(HashMap::from_iter(
        wheels
            .iter()
            .map(|(f, body, _)| (leak(format!("/{f}")), route(body, true))),
    ));
    let mut opts = options(&dir, false);
    opts.mirror = vec![server.url("")];

    let t = install(&quiet(), &release, &opts).unwrap();
    assert_eq!(t.root, dir.join("0.0.1"));
    assert!(!t.runtime);
    let out = Command::new(t.nvcc()).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("V0.0.1"));
    assert!(t.root.join("include/cuda.h").is_file());
    assert!(!t.root.join("fake_nvcc-0.0.1.dist-info").exists());
    let link = t.root.join("lib/libcudart.so");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from("libcudart.so.13")
    );
    // Only the compiler wheel was fetched.
    assert_eq!(server.requests().len(), 1);
    let env = t.env();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("CUDA_ROOT"), Some(t.root.clone().into_os_string()));
    assert!(get("PATH")
        .unwrap()
        .to_string_lossy()
        .starts_with(&*t.root.join("bin").to_string_lossy()));
    assert!(get("LD_LIBRARY_PATH").is_none());
    assert!(t.exports().contains("export CUDA_ROOT='"));

    // The second call finds the install and asks nothing of the network.
    assert_eq!(install(&quiet(), &release, &opts).unwrap(), t);
    assert_eq!(server.requests().len(), 1);
    assert_eq!(installed(&release, &dir, false), Some(t.clone()));
    assert_eq!(installed(&release, &dir, true), None);

    // Asking for the runtime fetches its wheel only, and replaces the install with a complete one.
    let rt = install(&quiet(), &release, &options_with_mirror(&dir, &server)).unwrap();
    assert!(rt.runtime && rt.root == t.root);
    assert!(rt.root.join("lib/libcudnn.so.9").is_file());
    assert!(rt.root.join("lib/libcudart.so").is_symlink());
    assert_eq!(server.requests().len(), 2);
    assert!(rt.env().iter().any(|(k, _)| k == "LD_LIBRARY_PATH"));
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn options_with_mirror(dir: &Path, server: &Server) -> Options {
    let mut opts = options(dir, true);
    opts.mirror = vec![server.url("")];
    opts
}

#[test]
fn a_tampered_wheel_is_refused_by_name_and_nothing_is_installed() {
    let dir = scratch("tampered");
    let wheels = fake_wheels();
    let release = release_of(&wheels);
    let supplied = dir.join("supplied");
    std::fs::create_dir_all(&supplied).unwrap();
    let mut body = wheels[0].1.clone();
    let last = body.len() - 1;
    body[last] ^= 1;
    std::fs::write(supplied.join(wheels[0].0), &body).unwrap();
    let mut opts = options(&dir.join("cache"), false);
    opts.from = vec![supplied];
    let err = format!("{:#}", install(&quiet(), &release, &opts).unwrap_err());
    assert!(err.contains(wheels[0].0) && err.contains("sha256"), "{err}");
    assert!(!dir.join("cache/0.0.1").exists());
}

#[test]
fn a_wheel_member_outside_the_toolkit_is_refused_before_anything_is_written() {
    let dir = scratch("hostile");
    for (i, bad) in [
        "nvidia/cu13/../../../escaped",
        "/tmp/absolute",
        "elsewhere/file",
    ]
    .iter()
    .enumerate()
    {
        let mut wheels = fake_wheels();
        wheels[0].1 = wheel(&[
            ("nvidia/cu13/bin/nvcc", 0o755, NVCC),
            (bad, 0o644, b"payload"),
        ]);
        let release = release_of(&wheels);
        let supplied = dir.join(format!("supplied{i}"));
        std::fs::create_dir_all(&supplied).unwrap();
        std::fs::write(supplied.join(wheels[0].0), &wheels[0].1).unwrap();
        let cache = dir.join(format!("cache{i}"));
        let mut opts = options(&cache, false);
        opts.from = vec![supplied];
        let err = format!("{:#}", install(&quiet(), &release, &opts).unwrap_err());
        assert!(
            err.contains("refusing") && err.contains(wheels[0].0),
            "{err}"
        );
        assert!(!cache.join("0.0.1").exists());
        let staged: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
        assert!(staged.is_empty(), "a staging folder was left behind");
    }
    assert!(!dir.join("escaped").exists());
}

#[test]
fn a_link_stub_lets_a_program_link_and_names_the_real_library() {
    let dir = scratch("stubs");
    let cudarc = dir.join("cudarc");
    let sys = cudarc.join("src/driver/sys");
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::write(
        sys.join("mod.rs"),
        "pub unsafe fn cuInit(f: u32) -> u32 {\n    extern \"C\" {\n        fn cuInit(f: u32) -> u32;\n        \
         fn cuDeviceGet(d: *mut i32, o: i32) -> u32;\n    }\n    cuInit(f)\n}\n",
    )
    .unwrap();
    let lib = Linked {
        link_name: "cuda",
        soname: "libcuda.so.1",
        cudarc_module: "driver",
    };
    let out = dir.join("stubs");
    let made = stubs::write_stubs(&cudarc, &[lib], &out).unwrap();
    assert_eq!(made, [("cuda".to_string(), 2)]);

    let main = dir.join("main.c");
    std::fs::write(
        &main,
        "int cuInit(unsigned);\nint cuDeviceGet(int*, int);\nint main(void) { int d; cuInit(0); return cuDeviceGet(&d, 0); }\n",
    )
    .unwrap();
    let exe = dir.join("main");
    let status = Command::new("cc")
        .arg(&main)
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", out.display()))
        .arg("-lcuda")
        .status()
        .unwrap();
    assert!(status.success(), "linking against the stub failed");
    let dynamic = Command::new("readelf")
        .arg("-d")
        .arg(&exe)
        .output()
        .unwrap();
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert!(
        dynamic.contains("Shared library: [libcuda.so.1]"),
        "{dynamic}"
    );
}
