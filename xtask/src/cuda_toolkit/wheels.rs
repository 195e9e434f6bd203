//! The CUDA toolkit releases `cargo xtask cuda-toolkit` installs: NVIDIA's wheels on PyPI, pinned by
//! size and SHA-256, and the sonames of the libraries that candle's cudarc links.

/// What a wheel is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Needed to build: nvcc, cicc, the headers, the CUDA runtime.
    Compiler,
    /// Needed only to run without a system CUDA: cuBLAS, cuRAND, NVRTC, cuDNN.
    Runtime,
}

/// One pinned wheel.
#[derive(Clone, Debug)]
pub struct Wheel {
    /// The PyPI project.
    pub project: &'static str,
    /// Its version.
    pub version: &'static str,
    /// The wheel's file name.
    pub file: &'static str,
    /// The folder under PyPI's `packages/` that holds it (its hash path).
    pub pypi_dir: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex, as PyPI publishes it.
    pub sha256: &'static str,
    /// What it is for.
    pub role: Role,
}

/// A library that cudarc links (`-l<link_name>`) and the soname the real one has in this release. The
/// link stub carries that soname, so the binary loads the real library at run time.
#[derive(Clone, Copy, Debug)]
pub struct Linked {
    /// The name after `-l`.
    pub link_name: &'static str,
    /// The real library's soname (what the binary will ask the loader for).
    pub soname: &'static str,
    /// cudarc's module whose `sys` bindings declare the library's functions.
    pub cudarc_module: &'static str,
}

/// One toolkit release: its wheels and libraries.
#[derive(Clone, Debug)]
pub struct Release {
    /// The nvcc version, also the install folder's name (`13.0.88`).
    pub name: &'static str,
    /// The wheels, compiler and runtime.
    pub wheels: Vec<Wheel>,
    /// What candle's cudarc (with `cudnn` and `nccl`) links.
    pub linked: &'static [Linked],
}

impl Wheel {
    /// Where PyPI serves it.
    pub fn url(&self) -> String {
        format!("{PYPI}{}/{}", self.pypi_dir, self.file)
    }
}

impl Release {
    /// The wheels to install: the compiler's, plus the runtime libraries' when `runtime`.
    pub fn needed(&self, runtime: bool) -> impl Iterator<Item = &Wheel> {
        self.wheels
            .iter()
            .filter(move |w| runtime || w.role == Role::Compiler)
    }
}

/// The versions `--version` accepts, newest first.
pub const VERSIONS: &[&str] = &["13.0"];

const PYPI: &str = "https://files.pythonhosted.org/packages/";

/// The libraries candle 0.11's cudarc links in CUDA 13, with cuDNN 9 and NCCL 2.
const LINKED_13: &[Linked] = &[
    Linked {
        link_name: "cuda",
        soname: "libcuda.so.1",
        cudarc_module: "driver",
    },
    Linked {
        link_name: "cublas",
        soname: "libcublas.so.13",
        cudarc_module: "cublas",
    },
    Linked {
        link_name: "cublasLt",
        soname: "libcublasLt.so.13",
        cudarc_module: "cublaslt",
    },
    Linked {
        link_name: "curand",
        soname: "libcurand.so.10",
        cudarc_module: "curand",
    },
    Linked {
        link_name: "nvrtc",
        soname: "libnvrtc.so.13",
        cudarc_module: "nvrtc",
    },
    Linked {
        link_name: "cudnn",
        soname: "libcudnn.so.9",
        cudarc_module: "cudnn",
    },
    Linked {
        link_name: "nccl",
        soname: "libnccl.so.2",
        cudarc_module: "nccl",
    },
];

/// The release `version` names: `13.0` or its exact nvcc version `13.0.88`.
pub fn release(version: &str) -> Option<Release> {
    match version {
        "13.0" | "13.0.88" => Some(cuda_13_0()),
        _ => None,
    }
}

/// CUDA 13.0, which the driver 580 series runs (PTX from a newer nvcc is refused by an older driver).
fn cuda_13_0() -> Release {
    let w = |project, version, file, pypi_dir, size, sha256, role| Wheel {
        project,
        version,
        file,
        pypi_dir,
        size,
        sha256,
        role,
    };
    use Role::*;
    Release {
        name: "13.0.88",
        wheels: vec![
            w(
                "nvidia-cuda-nvcc",
                "13.0.88",
                "nvidia_cuda_nvcc-13.0.88-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                "71/8b/a546c12881fffeba927d810598987df25d74b8b241788c7db8dfc93b0173",
                37_384_532,
                "56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03",
                Compiler,
            ),
            w(
                "nvidia-nvvm",
                "13.0.88",
                "nvidia_nvvm-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl",
                "15/b0/ee41e6d1108d959b5097163e7190c2d0f7857dea75606ce358f0275891b4",
                61_601_415,
                "c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0",
                Compiler,
            ),
            w(
                "nvidia-cuda-crt",
                "13.0.88",
                "nvidia_cuda_crt-13.0.88-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                "05/69/a1ec4d9f0747d85964206feb47bf359f48a2d6af74c0add8abba6efe3dda",
                134_086,
                "2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4",
                Compiler,
            ),
            w(
                "nvidia-cuda-runtime",
                "13.0.96",
                "nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                "2e/24/d1558f3b68b1d26e706813b1d10aa1d785e4698c425af8db8edc3dced472",
                2_243_632,
                "7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548",
                Compiler,
            ),
            w(
                "nvidia-cuda-cccl",
                "13.0.85",
                "nvidia_cuda_cccl-13.0.85-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                "ab/fb/0384bb2129bed6b1b39f8e44471c615ab5ab29b7e55817538a1d390d8f84",
                3_120_526,
                "e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649",
                Compiler,
            ),
            w(
                "nvidia-cublas",
                "13.0.2.14",
                "nvidia_cublas-13.0.2.14-py3-none-manylinux_2_27_x86_64.whl",
                "28/d4/30e630055d8e0f7058cc0d39e562c965d692f4735537d3f02f45d579a280",
                420_882_912,
                "0cf238ffdbe46c00cb9aa98e7bca745c223a5ca5a53e686ac8b3e5a08fe80d6c",
                Runtime,
            ),
            w(
                "nvidia-curand",
                "10.4.0.35",
                "nvidia_curand-10.4.0.35-py3-none-manylinux_2_27_x86_64.whl",
                "a5/9f/be0a41ca4a4917abf5cb9ae0daff1a6060cc5de950aec0396de9f3b52bc5",
                59_544_258,
                "1aee33a5da6e1db083fe2b90082def8915f30f3248d5896bcec36a579d941bfc",
                Runtime,
            ),
            w(
                "nvidia-cuda-nvrtc",
                "13.0.88",
                "nvidia_cuda_nvrtc-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl",
                "c3/68/483a78f5e8f31b08fb1bb671559968c0ca3a065ac7acabfc7cee55214fd6",
                90_215_200,
                "ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575",
                Runtime,
            ),
            w(
                "nvidia-cudnn-cu13",
                "9.13.0.50",
                "nvidia_cudnn_cu13-9.13.0.50-py3-none-manylinux_2_27_x86_64.whl",
                "cf/68/2712854561170b2a81bea7b6b35cc1ae264d9794c0c218986e5c685d45f7",
                348_571_624,
                "2150b4850725d30653ec3e365f0732e3e2e3eb8633cf3bd2d3117628dea8b4f9",
                Runtime,
            ),
        ],
        linked: LINKED_13,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_version_resolves_and_its_wheels_are_well_formed() {
        for v in VERSIONS {
            let r = release(v).unwrap();
            assert!(r.name.starts_with(v));
            assert!(release(r.name).is_some());
            for w in &r.wheels {
                assert!(w.url().ends_with(w.file) && w.url().starts_with(PYPI));
                assert_eq!(w.sha256.len(), 64);
                assert!(w.file.contains(w.version) && w.file.contains("x86_64"));
                assert!(w.size > 0);
            }
            assert!(r.needed(false).count() < r.needed(true).count());
        }
        assert!(release("12.4").is_none());
    }
}
