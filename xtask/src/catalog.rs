//! The one table of everything `cargo xtask` downloads: dataset archives with their sizes, checksums and
//! mirrors, and torchvision's ImageNet checkpoints. Sources: `docs/datasets.md` (torchvision, TFDS
//! checksum lists, the datasets' pages).
//!
//! The checkpoints' half lives with the models, in [`fgvc_backbone::weights::catalog`], so that a backbone
//! and its weights are added together; it is re-exported here.

pub use fgvc_backbone::weights::catalog::{
    sha256_prefix, weights, WeightsSpec, WEIGHTS, WEIGHTS_BASE_URL,
};

/// How a downloaded file becomes part of a dataset directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpack {
    /// A `.tgz` / `.tar.gz` extracted into the dataset directory.
    TarGz,
    /// A file copied into the dataset directory as it is.
    Copy,
}

/// One file of a dataset.
#[derive(Debug, Clone, Copy)]
pub struct Artifact {
    /// The file name.
    pub file: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// MD5, hex.
    pub md5: &'static str,
    /// SHA-256, hex, where known.
    pub sha256: Option<&'static str>,
    /// Where to download it, tried in order (empty: the user must supply the file).
    pub urls: &'static [&'static str],
    /// How it is unpacked.
    pub unpack: Unpack,
    /// The path (relative to the dataset directory) that exists once it is unpacked.
    pub creates: &'static str,
}

/// A dataset `cargo xtask download` knows.
#[derive(Debug, Clone, Copy)]
pub struct DatasetSpec {
    /// The name on the command line.
    pub name: &'static str,
    /// The display name.
    pub title: &'static str,
    /// The directory under `--dir` that the files are unpacked into (`""`: `--dir` itself).
    pub subdir: &'static str,
    /// The root to pass to `fgvc data verify --root`, relative to `--dir`.
    pub root: &'static str,
    /// Its files.
    pub artifacts: &'static [Artifact],
    /// Where to get the files that cannot be downloaded automatically.
    pub manual: Option<&'static str>,
}

/// CUB-200-2011, FGVC-Aircraft 2013b and Stanford Cars.
pub const DATASETS: &[DatasetSpec] = &[
    DatasetSpec {
        name: "cub",
        title: "CUB-200-2011",
        subdir: "",
        root: "CUB_200_2011",
        artifacts: &[Artifact {
            file: "CUB_200_2011.tgz",
            size: 1_150_585_339,
            md5: "97eceeb196236b17998738112f37df78",
            sha256: Some("0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081"),
            urls: &[
                "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
                "https://s3.amazonaws.com/fast-ai-imageclas/CUB_200_2011.tgz",
            ],
            unpack: Unpack::TarGz,
            creates: "CUB_200_2011",
        }],
        manual: None,
    },
    DatasetSpec {
        name: "aircraft",
        title: "FGVC-Aircraft 2013b",
        subdir: "",
        root: "fgvc-aircraft-2013b",
        artifacts: &[Artifact {
            file: "fgvc-aircraft-2013b.tar.gz",
            size: 2_770_575_360,
            md5: "d4acdd33327262359767eeaa97a4f732",
            sha256: Some("d5f68b1b81d6d7831eb9d5c5517074176b5dfbce6bcb43dc14ed1c66a87b8d75"),
            urls: &["https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz"],
            unpack: Unpack::TarGz,
            creates: "fgvc-aircraft-2013b",
        }],
        manual: None,
    },
    DatasetSpec {
        name: "cars",
        title: "Stanford Cars",
        subdir: "stanford_cars",
        root: "stanford_cars",
        artifacts: &[
            Artifact {
                file: "cars_train.tgz",
                size: 979_269_282,
                md5: "065e5b463ae28d29e77c1b4b166cfe61",
                sha256: Some("512b227b30e2f0a8aab9e09485786ab4479582073a144998da74d64b801fd288"),
                urls: &[],
                unpack: Unpack::TarGz,
                creates: "cars_train",
            },
            Artifact {
                file: "cars_test.tgz",
                size: 977_350_468,
                md5: "4ce7ebf6a94d07f1952d94dd34c4d501",
                sha256: Some("bffea656d6f425cba3c91c6d83336e4c5f86c6cffd8975b0f375d3a10da8e243"),
                urls: &[],
                unpack: Unpack::TarGz,
                creates: "cars_test",
            },
            Artifact {
                file: "car_devkit.tgz",
                size: 330_960,
                md5: "c3b158d763b6e2245038c8ad08e45376",
                sha256: Some("b97deb463af7d58b6bfaa18b2a4de9829f0f79e8ce663dfa9261bf7810e9accd"),
                // torchvision's re-hosted copy (pytorch/vision#7545); checked against the original checksums.
                urls: &["https://github.com/pytorch/vision/files/11644847/car_devkit.tgz"],
                unpack: Unpack::TarGz,
                creates: "devkit",
            },
            Artifact {
                file: "cars_test_annos_withlabels.mat",
                size: 185_758,
                md5: "b0a2b23655a3edd16d84508592a98d10",
                sha256: Some("790f75be8ea34eeded134cc559332baf23e30e91367e9ddca97d26ed9b895f05"),
                urls: &[],
                unpack: Unpack::Copy,
                creates: "cars_test_annos_withlabels.mat",
            },
        ],
        manual: Some(
            "Stanford Cars has no working official host (ai.stanford.edu went away in 2023; pytorch/vision#7545). \
             The original archives cars_train.tgz and cars_test.tgz are mirrored by some users and on Kaggle; \
             cars_test_annos_withlabels.mat is in the GitHub repository jhpohovey/StanfordCars-Dataset. Put them \
             in one folder and run `cargo xtask download cars --from FOLDER`: they are verified against the \
             original checksums and unpacked into the torchvision layout. The Kaggle bundle \
             jessicali9530/stanford-cars-dataset (different archives) can instead be unpacked by hand into \
             data/stanford_cars; `fgvc data verify --dataset cars` accepts it. See docs/datasets.md.",
        ),
    },
];

/// The dataset called `name`.
pub fn dataset(name: &str) -> Option<&'static DatasetSpec> {
    DATASETS.iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_well_formed() {
        for d in DATASETS {
            for a in d.artifacts {
                assert_eq!(a.md5.len(), 32, "{}", a.file);
                assert!(a
                    .sha256
                    .is_none_or(|s| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())));
                assert!(a.size > 0);
            }
        }
    }
}
