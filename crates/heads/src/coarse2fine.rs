//! Coarse2Fine (Eshratifar et al., arXiv 1909.02680): WS-DAN-style attention with orthogonally
//! initialised attention weights, and a learned inverse mapping from the attended feature maps to an
//! input-space map of informative regions that zooms the raw image for a second, fine pass.
//!
//! No code of the paper is public and its full text was not available, so the inverse mapping and the
//! zoom are our design (see `docs/heads.md`):
//!
//! ```text
//! A      = ReLU(BN_eps1e-3(conv1x1_orthogonal(F)))                    # (B, M, h, w) attention maps
//! P      = l2norm(signed_sqrt(A · Fᵀ / hw))                           # (B, M*C) bilinear attention pooling
//! logits = fc(100 P)                                                  # Linear(M*C -> classes, bias=False)
//! Z      = reduce(F)                                                  # 1x1 conv C -> D
//! T      = [A_k ⊙ Z]_k                                                # (B, M*D, h, w) attended features
//! S      = out(ReLU(fuse(T)))                                         # 3x3 conv M*D -> hidden, 1x1 -> 1
//! R      = sigmoid(bilinear_up(S, H, W))                              # (B, 1, H, W) region map (matmuls)
//! box    = centre and spread of R's row/column marginals              # soft, differentiable
//! X_fine = zoom(X, box)                                               # bilinear sampling matrices (matmuls)
//! ```
//!
//! The fine logits come from the same backbone and attention on `X_fine`; their loss reaches the attention
//! conv through `X_fine -> box -> R -> S -> T -> A`. Prediction averages the coarse and fine logits.

use candle_core::{Module, Result, Tensor, D};
use fgvc_ops::{relu, BatchNormConfig, Conv2d, Conv2dConfig, Init, Linear, Params};

use crate::blocks::BasicConv;
use crate::interp::{export_resize_bilinear, export_zoom, resize_bilinear, zoom};
use fgvc_onnx::{Dim, Graph, Value};

/// WS-DAN's `BasicConv2d` BatchNorm: eps 1e-3, momentum 0.1.
pub const ATTENTION_BN: BatchNormConfig = BatchNormConfig {
    eps: 1e-3,
    momentum: 0.1,
    affine: true,
};

/// Configuration of a Coarse2Fine head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coarse2FineConfig {
    /// Channels C of the feature map.
    pub in_channels: usize,
    /// Number of attention maps M (32 in WS-DAN).
    pub num_attentions: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Width D of the reduced features the attention maps gate in the inverse mapping.
    pub reduce_channels: usize,
    /// Hidden width of the inverse mapping's 3x3 conv.
    pub hidden_channels: usize,
    /// The zoom box is the region map's spread enlarged by this fraction (WS-DAN pads crops by 10 %).
    pub zoom_padding: f64,
    /// The smallest box side, as a fraction of the image side.
    pub min_zoom: f64,
    /// Initialise the attention projection orthogonally (the paper; true). False uses PyTorch's default
    /// conv init, for the ablation that measures what the orthogonal start buys.
    pub orthogonal_init: bool,
}

impl Coarse2FineConfig {
    /// WS-DAN's M = 32 with the inverse mapping's defaults (D = 8, hidden 32, padding 10 %, boxes at least
    /// a quarter of the image side).
    pub fn new(in_channels: usize, num_classes: usize) -> Self {
        Self {
            in_channels,
            num_attentions: 32,
            num_classes,
            reduce_channels: 8,
            hidden_channels: 32,
            zoom_padding: 0.1,
            min_zoom: 0.25,
            orthogonal_init: true,
        }
    }
}

/// The attention branch's outputs on one feature map.
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// Attention maps A (B, M, h, w), non-negative.
    pub maps: Tensor,
    /// Bilinear-attention-pooled part features P (B, M*C), unit L2 norm per image.
    pub parts: Tensor,
    /// Logits `fc(100 P)` (B, classes).
    pub logits: Tensor,
}

/// The outputs of a coarse and a fine pass.
#[derive(Debug, Clone)]
pub struct Coarse2FineOutput {
    /// The coarse pass on the raw images.
    pub coarse: AttentionOutput,
    /// Region map R (B, 1, H, W) in (0, 1), from the inverse mapping.
    pub region: Tensor,
    /// Zoom boxes (B, 4) as `(y0, x0, y1, x1)` in pixel-edge coordinates.
    pub boxes: Tensor,
    /// The zoomed images (B, 3, H, W) fed to the fine pass.
    pub zoomed: Tensor,
    /// The fine pass on the zoomed images.
    pub fine: AttentionOutput,
}

impl Coarse2FineOutput {
    /// The prediction: the mean of the coarse and fine logits.
    pub fn prediction(&self) -> Result<Tensor> {
        self.coarse.logits.add(&self.fine.logits)?.affine(0.5, 0.)
    }
}

/// Bilinear attention pooling: `P[b, m, c] = mean_hw(A[b, m] F[b, c])`, signed square root
/// `sign(P) sqrt(|P| + 1e-12)`, then L2 normalisation over all M*C values (WS-DAN's `BAP`).
pub fn bilinear_attention_pool(features: &Tensor, maps: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = features.dims4()?;
    let (bm, m, hm, wm) = maps.dims4()?;
    if (bm, hm, wm) != (b, h, w) {
        candle_core::bail!(
            "BAP: maps {:?} do not match features {:?}",
            maps.dims(),
            features.dims()
        )
    }
    let a = maps.reshape((b, m, h * w))?;
    let f = features.reshape((b, c, h * w))?;
    let p = a
        .matmul(&f.transpose(1, 2)?)?
        .affine(1.0 / (h * w) as f64, 0.)?
        .reshape((b, m * c))?;
    // sign() has no gradient in candle (it is pruned), which is right: d/dP sign(P) sqrt(|P|) = 1/(2 sqrt|P|).
    let p = p.sign()?.mul(&p.abs()?.affine(1.0, 1e-12)?.sqrt()?)?;
    // F.normalize's max(||p||, 1e-12), written as sqrt(max(||p||², 1e-24)): the same values, but an image whose
    // P is all zero (every attention map dead) gets a zero gradient instead of sqrt's 0/0 = NaN at 0.
    let norm = p.sqr()?.sum_keepdim(1)?.clamp(1e-24f32, f32::MAX)?.sqrt()?;
    p.broadcast_div(&norm)
}

/// The ONNX graph of [`bilinear_attention_pool`] on graph values.
pub fn export_bilinear_attention_pool(
    g: &mut Graph,
    features: &Value,
    maps: &Value,
) -> fgvc_onnx::Result<Value> {
    let op = "BAP";
    let b = features.shape()[0].clone();
    let (c, h, w) = (
        features.fixed_dim(op, 1)?,
        features.fixed_dim(op, 2)?,
        features.fixed_dim(op, 3)?,
    );
    let m = maps.fixed_dim(op, 1)?;
    let a = g.reshape(maps, &[b.clone(), Dim::Fixed(m), Dim::Fixed(h * w)])?;
    let f = g.reshape(features, &[b.clone(), Dim::Fixed(c), Dim::Fixed(h * w)])?;
    let ft = g.transpose(&f, &[0, 2, 1])?;
    let p = g.matmul(&a, &ft)?;
    let p = g.affine(&p, (1.0 / (h * w) as f64) as f32, 0.0)?;
    let p = g.reshape(&p, &[b, Dim::Fixed(m * c)])?;
    let sign = g.unary("Sign", &p);
    let abs = g.unary("Abs", &p);
    let abs = g.affine(&abs, 1.0, 1e-12)?;
    let root = g.unary("Sqrt", &abs);
    let p = g.mul(&sign, &root)?;
    let sq = g.mul(&p, &p)?;
    let sum = g.reduce_sum(&sq, &[1], true)?;
    let sum = g.clip(&sum, 1e-24, f32::MAX)?;
    let norm = g.unary("Sqrt", &sum);
    g.div(&p, &norm)
}

/// The learned inverse mapping from attended feature maps to an input-space region map (our design).
#[derive(Debug, Clone)]
pub struct InverseMapping {
    reduce: Conv2d,
    fuse: Conv2d,
    out: Conv2d,
    num_attentions: usize,
    reduce_channels: usize,
}

impl InverseMapping {
    /// `reduce` 1x1 (C -> D, no bias), `fuse` 3x3 (M*D -> hidden, bias), `out` 1x1 (hidden -> 1, bias), all
    /// with PyTorch's default initialisation.
    pub fn new(in_c: usize, m: usize, d: usize, hidden: usize, p: &Params) -> Result<Self> {
        Ok(Self {
            reduce: Conv2d::new(in_c, d, 1, Conv2dConfig::default(), false, &p.pp("reduce"))?,
            fuse: Conv2d::new(m * d, hidden, 3, Conv2dConfig::same(1), true, &p.pp("fuse"))?,
            out: Conv2d::new(hidden, 1, 1, Conv2dConfig::default(), true, &p.pp("out"))?,
            num_attentions: m,
            reduce_channels: d,
        })
    }

    /// Region logits at the feature resolution (B, 1, h, w) from the features F and attention maps A.
    pub fn feature_logits(&self, features: &Tensor, maps: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = features.dims4()?;
        let (m, d) = (self.num_attentions, self.reduce_channels);
        let z = self.reduce.forward(features)?; // (B, D, h, w)
        let attended = maps
            .unsqueeze(2)?
            .broadcast_mul(&z.unsqueeze(1)?)?
            .reshape((b, m * d, h, w))?;
        self.out.forward(&relu(&self.fuse.forward(&attended)?)?)
    }

    /// The ONNX graph of [`InverseMapping::forward`] on graph values.
    pub fn export(
        &self,
        g: &mut Graph,
        features: &Value,
        maps: &Value,
        height: usize,
        width: usize,
    ) -> fgvc_onnx::Result<Value> {
        let b = features.shape()[0].clone();
        let (h, w) = (
            features.fixed_dim("inverse", 2)?,
            features.fixed_dim("inverse", 3)?,
        );
        let (m, d) = (self.num_attentions, self.reduce_channels);
        let z = self.reduce.export(g, features)?;
        let a = g.unsqueeze(maps, 2)?;
        let z = g.unsqueeze(&z, 1)?;
        let attended = g.mul(&a, &z)?;
        let attended = g.reshape(
            &attended,
            &[b, Dim::Fixed(m * d), Dim::Fixed(h), Dim::Fixed(w)],
        )?;
        let y = self.fuse.export(g, &attended)?;
        let y = g.relu(&y);
        let logits = self.out.export(g, &y)?;
        let up = export_resize_bilinear(g, &logits, height, width)?;
        Ok(g.sigmoid(&up))
    }

    /// The region map R = sigmoid(bilinear upsampling of the logits to `(height, width)`): (B, 1, H, W).
    pub fn forward(
        &self,
        features: &Tensor,
        maps: &Tensor,
        height: usize,
        width: usize,
    ) -> Result<Tensor> {
        candle_nn::ops::sigmoid(&resize_bilinear(
            &self.feature_logits(features, maps)?,
            height,
            width,
        )?)
    }
}

/// A soft box from a non-negative region map (B, 1, H, W): along each axis, the centre is the mean of the
/// map's normalised marginal and the half-side is `sqrt(3) * std * (1 + padding)` (exact for a uniform
/// block), at least `min_frac` of half the side. The box may extend past the image (the zoom pads with
/// zeros), which keeps the gradient alive when the map is flat. Returns (B, 4) `(y0, x0, y1, x1)`.
pub fn soft_box(region: &Tensor, padding: f64, min_frac: f64) -> Result<Tensor> {
    let (b, _, h, w) = region.dims4()?;
    let r = region.squeeze(1)?; // (B, H, W)
    let mass = r
        .sum_keepdim(D::Minus1)?
        .sum_keepdim(D::Minus2)?
        .clamp(1e-12f32, f32::MAX)?; // (B, 1, 1)
    let r = r.broadcast_div(&mass)?;
    let axis = |marginal: Tensor, len: usize| -> Result<(Tensor, Tensor)> {
        // marginal (B, len) sums to 1; pixel centres at i + 0.5.
        let coords: Vec<f32> = (0..len).map(|i| i as f32 + 0.5).collect();
        let coords = Tensor::from_vec(coords, (1, len), &candle_core::Device::Cpu)?
            .to_dtype(region.dtype())?
            .to_device(region.device())?;
        let centre = marginal.broadcast_mul(&coords)?.sum_keepdim(1)?; // (B, 1)
        let var = marginal
            .mul(&coords.broadcast_sub(&centre)?.sqr()?)?
            .sum_keepdim(1)?;
        let half = var.affine(3.0, 1e-6)?.sqrt()?.affine(1.0 + padding, 0.)?;
        let floor = (min_frac * len as f64 / 2.0) as f32;
        let half = half.clamp(floor, f32::MAX)?;
        Ok((centre.sub(&half)?, centre.add(&half)?))
    };
    let (y0, y1) = axis(r.sum(D::Minus1)?.reshape((b, h))?, h)?;
    let (x0, x1) = axis(r.sum(D::Minus2)?.reshape((b, w))?, w)?;
    Tensor::cat(&[y0, x0, y1, x1], 1)
}

/// The ONNX graph of [`soft_box`] on a graph value of the region map.
pub fn export_soft_box(
    g: &mut Graph,
    region: &Value,
    padding: f64,
    min_frac: f64,
) -> fgvc_onnx::Result<Value> {
    let (h, w) = (
        region.fixed_dim("soft_box", 2)?,
        region.fixed_dim("soft_box", 3)?,
    );
    let r = g.squeeze(region, 1)?; // (B, H, W)
    let mass = g.reduce_sum(&r, &[-1], true)?;
    let mass = g.reduce_sum(&mass, &[-2], true)?;
    let mass = g.clip(&mass, 1e-12, f32::MAX)?;
    let r = g.div(&r, &mass)?;
    let axis = |g: &mut Graph, marginal: Value, len: usize| -> fgvc_onnx::Result<(Value, Value)> {
        let coords: Vec<f32> = (0..len).map(|i| i as f32 + 0.5).collect();
        let coords = g.constant(&[1, len], &coords)?;
        let weighted = g.mul(&marginal, &coords)?;
        let centre = g.reduce_sum(&weighted, &[1], true)?;
        let d = g.sub(&coords, &centre)?;
        let d2 = g.mul(&d, &d)?;
        let spread = g.mul(&marginal, &d2)?;
        let var = g.reduce_sum(&spread, &[1], true)?;
        let v = g.affine(&var, 3.0, 1e-6)?;
        let root = g.unary("Sqrt", &v);
        let half = g.affine(&root, (1.0 + padding) as f32, 0.0)?;
        let floor = (min_frac * len as f64 / 2.0) as f32;
        let half = g.clip(&half, floor, f32::MAX)?;
        Ok((g.sub(&centre, &half)?, g.add(&centre, &half)?))
    };
    let rows = g.reduce_sum(&r, &[-1], false)?; // (B, H)
    let (y0, y1) = axis(g, rows, h)?;
    let cols = g.reduce_sum(&r, &[-2], false)?; // (B, W)
    let (x0, x1) = axis(g, cols, w)?;
    g.concat(&[y0, x0, y1, x1], 1)
}

/// The coarse and fine logits of a Coarse2Fine head as graph values.
#[derive(Debug, Clone)]
pub struct Coarse2FineValues {
    /// Logits of the coarse pass (B, classes).
    pub coarse: Value,
    /// Logits of the fine pass on the zoomed images (B, classes).
    pub fine: Value,
}

impl Coarse2FineValues {
    /// The ONNX graph of [`Coarse2FineOutput::prediction`]: the mean of the coarse and fine logits.
    pub fn prediction(&self, g: &mut Graph) -> fgvc_onnx::Result<Value> {
        let sum = g.add(&self.coarse, &self.fine)?;
        g.affine(&sum, 0.5, 0.0)
    }
}

/// The Coarse2Fine head: attention (`attentions.conv` orthogonal, `attentions.bn`), bilinear attention
/// pooling, classifier `fc`, and the inverse mapping `inverse.{reduce, fuse, out}`.
///
/// ```
/// use candle_core::{DType, Device, Module, Tensor};
/// use fgvc_heads::coarse2fine::{Coarse2Fine, Coarse2FineConfig};
/// use fgvc_ops::{Conv2d, Conv2dConfig, ParamStore};
///
/// let dev = Device::Cpu;
/// let store = ParamStore::new(9, DType::F32, &dev);
/// let p = store.root();
/// // A stand-in backbone: one stride-4 conv to 16 channels.
/// let stem = Conv2d::new(3, 16, 4, Conv2dConfig::new(4, 0), true, &p.pp("backbone"))?;
/// let mut cfg = Coarse2FineConfig::new(16, 5);
/// cfg.num_attentions = 4;
/// let head = Coarse2Fine::new(cfg, &p.pp("heads"))?;
/// let images = Tensor::randn(0f32, 1., (2, 3, 32, 32), &dev)?;
/// let out = head.forward_t(&images, |x: &Tensor| stem.forward(x)?.relu(), true)?;
/// assert_eq!(out.zoomed.dims(), &[2, 3, 32, 32]);
/// assert_eq!(out.prediction()?.dims(), &[2, 5]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Coarse2Fine {
    cfg: Coarse2FineConfig,
    attention: BasicConv,
    fc: Linear,
    inverse: InverseMapping,
}

impl Coarse2Fine {
    /// Builds the head under `p`. The attention conv's weight (M, C, 1, 1) is `Init::Orthogonal { gain: 1 }`
    /// (orthonormal rows when M <= C) unless `cfg.orthogonal_init` is off; `fc` and the inverse mapping use
    /// PyTorch's defaults.
    pub fn new(cfg: Coarse2FineConfig, p: &Params) -> Result<Self> {
        let c = cfg.in_channels;
        let m = cfg.num_attentions;
        if c == 0
            || m == 0
            || cfg.num_classes == 0
            || cfg.reduce_channels == 0
            || cfg.hidden_channels == 0
        {
            candle_core::bail!("Coarse2Fine: widths must be positive, got {cfg:?}")
        }
        if !(0.0..=1.0).contains(&cfg.min_zoom) || cfg.zoom_padding < 0.0 {
            candle_core::bail!(
                "Coarse2Fine: min_zoom in [0, 1] and zoom_padding >= 0 required, got {cfg:?}"
            )
        }
        let attention = BasicConv::with_conv_init(
            c,
            m,
            1,
            0,
            ATTENTION_BN,
            true,
            if cfg.orthogonal_init {
                Init::Orthogonal { gain: 1.0 }
            } else {
                Init::TORCH_DEFAULT
            },
            &p.pp("attentions"),
        )?;
        let fc = Linear::new(m * c, cfg.num_classes, false, &p.pp("fc"))?;
        let inverse = InverseMapping::new(
            c,
            m,
            cfg.reduce_channels,
            cfg.hidden_channels,
            &p.pp("inverse"),
        )?;
        Ok(Self {
            cfg,
            attention,
            fc,
            inverse,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Coarse2FineConfig {
        &self.cfg
    }

    /// The attention `BasicConv` (its `conv().weight()` is the orthogonally initialised projection).
    pub fn attention(&self) -> &BasicConv {
        &self.attention
    }

    /// The inverse mapping.
    pub fn inverse_mapping(&self) -> &InverseMapping {
        &self.inverse
    }

    /// The attention branch on a feature map (B, C, h, w): the coarse pass (stage one trains this alone).
    pub fn attend(&self, features: &Tensor, train: bool) -> Result<AttentionOutput> {
        let maps = self.attention.forward_t(features, train)?;
        let parts = bilinear_attention_pool(features, &maps)?;
        let logits = self.fc.forward(&parts.affine(100.0, 0.)?)?;
        Ok(AttentionOutput {
            maps,
            parts,
            logits,
        })
    }

    /// The region map (B, 1, H, W) of the informative regions, for images of `(height, width)`.
    pub fn region_map(
        &self,
        features: &Tensor,
        maps: &Tensor,
        height: usize,
        width: usize,
    ) -> Result<Tensor> {
        self.inverse.forward(features, maps, height, width)
    }

    /// The zoomed images: the soft box of `region` resampled to the images' size.
    pub fn zoom_images(&self, images: &Tensor, region: &Tensor) -> Result<(Tensor, Tensor)> {
        let (_, _, h, w) = images.dims4()?;
        let boxes = soft_box(region, self.cfg.zoom_padding, self.cfg.min_zoom)?;
        let zoomed = zoom(images, &boxes, h, w)?;
        Ok((zoomed, boxes))
    }

    /// The ONNX graph of [`Coarse2Fine::attend`]'s logits (and maps) in evaluation mode.
    pub fn export_attend(
        &self,
        g: &mut Graph,
        features: &Value,
    ) -> fgvc_onnx::Result<(Value, Value)> {
        let maps = self.attention.export(g, features)?;
        let parts = export_bilinear_attention_pool(g, features, &maps)?;
        let scaled = g.affine(&parts, 100.0, 0.0)?;
        Ok((self.fc.export(g, &scaled)?, maps))
    }

    /// The ONNX graph of [`Coarse2Fine::forward_t`] in evaluation mode: the coarse pass, the region map,
    /// the soft box, the zoom and the fine pass, every step the same products and element-wise ops as the
    /// forward (nothing data-dependent but values: the zoom is bilinear sampling matrices built from the box).
    /// `backbone` adds the feature extractor's nodes (called twice, sharing its initializers).
    pub fn export<F>(
        &self,
        g: &mut Graph,
        images: &Value,
        mut backbone: F,
    ) -> fgvc_onnx::Result<Coarse2FineValues>
    where
        F: FnMut(&mut Graph, &Value) -> fgvc_onnx::Result<Value>,
    {
        let (h, w) = (
            images.fixed_dim("Coarse2Fine", 2)?,
            images.fixed_dim("Coarse2Fine", 3)?,
        );
        let features = backbone(g, images)?;
        let (coarse, maps) = self.export_attend(g, &features)?;
        let region = self.inverse.export(g, &features, &maps, h, w)?;
        let boxes = export_soft_box(g, &region, self.cfg.zoom_padding, self.cfg.min_zoom)?;
        let zoomed = export_zoom(g, images, &boxes, h, w)?;
        let fine_features = backbone(g, &zoomed)?;
        let (fine, _) = self.export_attend(g, &fine_features)?;
        Ok(Coarse2FineValues { coarse, fine })
    }

    /// Stage two: the coarse pass on `images` through `backbone` (images -> feature map), the region map,
    /// the zoom, and the fine pass on the zoomed images through the same backbone and attention.
    pub fn forward_t<F>(
        &self,
        images: &Tensor,
        backbone: F,
        train: bool,
    ) -> Result<Coarse2FineOutput>
    where
        F: Fn(&Tensor) -> Result<Tensor>,
    {
        let (_, _, h, w) = images.dims4()?;
        let features = backbone(images)?;
        let coarse = self.attend(&features, train)?;
        let region = self.region_map(&features, &coarse.maps, h, w)?;
        let (zoomed, boxes) = self.zoom_images(images, &region)?;
        let fine = self.attend(&backbone(&zoomed)?, train)?;
        Ok(Coarse2FineOutput {
            coarse,
            region,
            boxes,
            zoomed,
            fine,
        })
    }
}
