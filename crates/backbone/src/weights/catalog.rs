//! torchvision's ImageNet checkpoints of every backbone this crate builds, keyed by the backbone's name:
//! which files hold them, where they are downloaded from, and the SHA-256 prefix each file name carries.
//! It sits with the models so a new backbone and its weights are added together; `cargo xtask weights`
//! downloads from this table.

/// A torchvision ImageNet checkpoint family: the files that hold it, tried in order. Each name ends in
/// the first hex digits of the file's SHA-256, which the download checks.
#[derive(Debug, Clone, Copy)]
pub struct WeightsSpec {
    /// torchvision's model name ([`crate::BackboneKind::name`]), and the output `<name>.safetensors`.
    pub name: &'static str,
    /// Checkpoint files under [`WEIGHTS_BASE_URL`], current torchvision file first; older re-saves of
    /// the same ImageNet weights (in the legacy format) after it.
    pub files: &'static [&'static str],
}

/// Where torchvision's checkpoints live.
pub const WEIGHTS_BASE_URL: &str = "https://download.pytorch.org/models/";

/// The `IMAGENET1K_V1` weights of every backbone `fgvc-backbone` builds, in [`crate::BackboneKind::ALL`]'s
/// order.
pub const WEIGHTS: &[WeightsSpec] = &[
    WeightsSpec {
        name: "resnet18",
        files: &["resnet18-f37072fd.pth", "resnet18-5c106cde.pth"],
    },
    WeightsSpec {
        name: "resnet34",
        files: &["resnet34-b627a593.pth", "resnet34-333f7ec4.pth"],
    },
    WeightsSpec {
        name: "resnet50",
        files: &["resnet50-0676ba61.pth", "resnet50-19c8e357.pth"],
    },
    WeightsSpec {
        name: "resnet101",
        files: &["resnet101-63fe2227.pth", "resnet101-5d3b4d8f.pth"],
    },
    WeightsSpec {
        name: "vgg16",
        files: &["vgg16-397923af.pth"],
    },
    WeightsSpec {
        name: "vgg16_bn",
        files: &["vgg16_bn-6c64b313.pth"],
    },
    WeightsSpec {
        name: "mobilenet_v2",
        files: &["mobilenet_v2-b0353104.pth"],
    },
];

/// The SHA-256 prefix a torchvision file name carries (`resnet50-0676ba61.pth` -> `0676ba61`).
///
/// ```
/// use fgvc_backbone::weights::catalog::sha256_prefix;
///
/// assert_eq!(sha256_prefix("resnet50-0676ba61.pth"), Some("0676ba61"));
/// assert_eq!(sha256_prefix("model.pth"), None);
/// ```
pub fn sha256_prefix(file: &str) -> Option<&str> {
    let stem = file.strip_suffix(".pth")?;
    let (_, hash) = stem.rsplit_once('-')?;
    (hash.len() >= 6 && hash.chars().all(|c| c.is_ascii_hexdigit())).then_some(hash)
}

/// The weights of the backbone called `name` (exactly torchvision's name: `"vgg16_bn"`).
///
/// ```
/// use fgvc_backbone::weights::catalog::{weights, WEIGHTS_BASE_URL};
///
/// let spec = weights("mobilenet_v2").expect("every backbone has weights");
/// assert_eq!(format!("{WEIGHTS_BASE_URL}{}", spec.files[0]), "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth");
/// ```
pub fn weights(name: &str) -> Option<&'static WeightsSpec> {
    WEIGHTS.iter().find(|w| w.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackboneKind;

    #[test]
    fn table_is_well_formed() {
        for w in WEIGHTS {
            for f in w.files {
                assert!(sha256_prefix(f).is_some(), "{f}");
                assert!(f.starts_with(&format!("{}-", w.name)), "{f}");
            }
        }
        assert_eq!(sha256_prefix("mobilenet_v2-b0353104.pth"), Some("b0353104"));
        assert_eq!(sha256_prefix("model.pth"), None);
    }

    #[test]
    fn every_backbone_has_weights_under_its_name() {
        let names: Vec<&str> = WEIGHTS.iter().map(|w| w.name).collect();
        let kinds: Vec<&str> = BackboneKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, kinds);
        for kind in BackboneKind::ALL {
            assert_eq!(weights(kind.name()).map(|w| w.name), Some(kind.name()));
        }
        assert!(weights("resnet152").is_none());
    }
}
