//! [`Explain`] for the built-in methods: which feature maps each named prediction reads, and each method's own
//! panels (Coarse2Fine's attention maps, region map and zoom; DCL's region alignment where it is trained).

use candle_core::{Tensor, D};
use fgvc_backbone::Backbone;
use fgvc_heads::dcl::LocationHead;

use super::{Explain, FeatureMap, Panel, PanelContent, StageOf, Taps};
use crate::error::{Result, TrainError};
use crate::method::Predictions;
use crate::methods::baseline::Baseline;
use crate::methods::coarse2fine::Coarse2FineMethod;
use crate::methods::dcl::{Dcl, DclPrediction};
use crate::methods::pmg::{stage_predictions, Pmg};
use crate::methods::rmg_pmsi::RmgPmsi;

/// Coarse2Fine's attention maps shown one by one: the strongest few.
const STRONGEST_ATTENTIONS: usize = 3;

/// The last `count` stage maps of `images` with their stage names.
fn last_stages(
    backbone: &dyn Backbone,
    images: &Tensor,
    count: usize,
    prefix: &str,
) -> Result<Vec<FeatureMap>> {
    let stages = backbone.forward_stages(images, false)?;
    let names = backbone.stage_names();
    if stages.len() < count || names.len() != stages.len() {
        return Err(TrainError::Msg(format!(
            "explain: the backbone returned {} stage maps, the heads read {count}",
            stages.len()
        )));
    }
    let skip = stages.len() - count;
    Ok(stages
        .into_iter()
        .zip(names)
        .enumerate()
        .skip(skip)
        .map(|(index, (map, name))| {
            let of = StageOf {
                input: images.clone(),
                index,
                prefix: prefix.to_string(),
            };
            FeatureMap::stage(format!("{prefix}{name}"), map, of)
        })
        .collect())
}

/// Checks that `heads` got `expected` maps.
fn check_maps(method: &str, maps: &[Tensor], expected: usize) -> Result<()> {
    if maps.len() == expected {
        Ok(())
    } else {
        Err(TrainError::Msg(format!(
            "explain: {method} reads {expected} feature map(s), got {}",
            maps.len()
        )))
    }
}

impl Explain for Baseline {
    fn backbone(&self) -> Option<&dyn Backbone> {
        Some(self.backbone())
    }

    /// The deepest stage, which the pool and the classifier read.
    fn taps(&self, images: &Tensor) -> Result<Taps> {
        Ok(Taps {
            maps: last_stages(self.backbone(), images, 1, "")?,
            panels: Vec::new(),
        })
    }

    fn heads(&self, maps: &[Tensor]) -> Result<Predictions> {
        check_maps(crate::methods::baseline::NAME, maps, 1)?;
        let pooled = self.backbone().pool(&maps[0], false)?;
        Ok(Predictions::single(
            "logits",
            pooled.apply(self.classifier())?,
        ))
    }
}

impl Explain for Pmg {
    fn backbone(&self) -> Option<&dyn Backbone> {
        Some(self.backbone())
    }

    /// The S stages the blocks read: `classifier{l}` reads stage l, `concat` and `combined` all of them.
    fn taps(&self, images: &Tensor) -> Result<Taps> {
        let s = self.head().config().num_stages();
        Ok(Taps {
            maps: last_stages(self.backbone(), images, s, "")?,
            panels: Vec::new(),
        })
    }

    fn heads(&self, maps: &[Tensor]) -> Result<Predictions> {
        check_maps("pmg", maps, self.head().config().num_stages())?;
        let out = self.head().forward_t(maps, false)?;
        Ok(stage_predictions(
            out.combined()?,
            &out.stage_logits,
            &out.concat_logits,
        ))
    }
}

impl Explain for RmgPmsi {
    fn backbone(&self) -> Option<&dyn Backbone> {
        Some(self.backbone())
    }

    /// The S stages the blocks read; MSI couples them, so every prediction reads all of them.
    fn taps(&self, images: &Tensor) -> Result<Taps> {
        let s = self.head().config().in_channels.len();
        Ok(Taps {
            maps: last_stages(self.backbone(), images, s, "")?,
            panels: Vec::new(),
        })
    }

    fn heads(&self, maps: &[Tensor]) -> Result<Predictions> {
        check_maps("rmg-pmsi", maps, self.head().config().in_channels.len())?;
        let out = self.head().forward_t(maps, false)?;
        Ok(stage_predictions(
            out.combined()?,
            &out.stage_logits,
            &out.concat_logits,
        ))
    }
}

impl Explain for Dcl {
    fn backbone(&self) -> Option<&dyn Backbone> {
        Some(self.backbone())
    }

    /// The deepest stage, and, when the location loss trains it (`gamma > 0`), the region-alignment head's
    /// prediction: per region, the original region it takes the region shown there for (official head: the
    /// row-major index decoded from the swap law, `0..N²`; paper head: the row and the column, `1..=N`). On an
    /// original image a perfect head shows the identity layout.
    fn taps(&self, images: &Tensor) -> Result<Taps> {
        let maps = last_stages(self.backbone(), images, 1, "")?;
        let mut panels = Vec::new();
        if self.options().gamma > 0.0 {
            let n = self.options().grid;
            let location = self.head().forward(&maps[0].map)?.location;
            let b = location.dim(0)?;
            match self.options().location {
                LocationHead::Official => {
                    // law = (q - floor(N²/2)) / N²
                    let nn = (n * n) as f64;
                    let q = location
                        .affine(nn, ((n * n) / 2) as f64)?
                        .reshape((b, n, n))?;
                    panels.push(Panel::new(
                        "alignment",
                        PanelContent::Map {
                            values: q,
                            range: Some((0.0, (n * n - 1) as f32)),
                            discrete: true,
                        },
                    ));
                }
                LocationHead::Paper => {
                    for (i, axis) in ["row", "column"].into_iter().enumerate() {
                        panels.push(Panel::new(
                            format!("alignment {axis}"),
                            PanelContent::Map {
                                values: location.narrow(1, i, 1)?.squeeze(1)?,
                                range: Some((1.0, n as f32)),
                                discrete: true,
                            },
                        ));
                    }
                }
            }
        }
        Ok(Taps { maps, panels })
    }

    fn heads(&self, maps: &[Tensor]) -> Result<Predictions> {
        check_maps("dcl", maps, 1)?;
        let out = self.head().forward(&maps[0])?;
        let classifier = ("classifier".to_string(), out.logits.clone());
        let official = ("official".to_string(), out.official_prediction()?);
        let heads = match self.options().prediction {
            DclPrediction::Classifier => vec![classifier, official],
            DclPrediction::Official => vec![official, classifier],
        };
        Ok(Predictions { heads })
    }
}

impl Explain for Coarse2FineMethod {
    fn backbone(&self) -> Option<&dyn Backbone> {
        Some(self.backbone())
    }

    /// The deepest stage of the image (`coarse`) and of the zoomed image (`fine`, its window the zoom box);
    /// `combined` reads both. Panels: the mean of the coarse attention maps and the strongest few (by their
    /// mass), the inverse mapping's region map, the zoom box on the image and the zoomed image.
    fn taps(&self, images: &Tensor) -> Result<Taps> {
        let (_, _, h, w) = images.dims4()?;
        let coarse = last_stages(self.backbone(), images, 1, "")?.remove(0);
        let attention = self.head().attend(&coarse.map, false)?;
        let region = self.head().region_map(&coarse.map, &attention.maps, h, w)?;
        let (zoomed, boxes) = self.head().zoom_images(images, &region)?;
        let mut fine = last_stages(self.backbone(), &zoomed, 1, "zoom ")?.remove(0);
        fine.window = Some(boxes.clone());

        let maps = attention.maps.detach();
        let (b, m, _, _) = maps.dims4()?;
        let mut panels = vec![Panel::new(
            "attention mean",
            PanelContent::Map {
                values: maps.mean(1)?,
                range: None,
                discrete: false,
            },
        )];
        let mass = maps
            .sum(D::Minus1)?
            .sum(D::Minus1)?
            .to_dtype(candle_core::DType::F32)?; // [B, M]
        let mass = mass.to_vec2::<f32>()?;
        let order: Vec<Vec<usize>> = mass
            .iter()
            .map(|row| crate::predict::top_k(row, STRONGEST_ATTENTIONS))
            .collect();
        for rank in 0..STRONGEST_ATTENTIONS.min(m) {
            let index: Vec<u32> = order.iter().map(|o| o[rank] as u32).collect();
            let index = Tensor::from_vec(index, (b, 1, 1, 1), maps.device())?;
            let (_, _, mh, mw) = maps.dims4()?;
            let index = index.broadcast_as((b, 1, mh, mw))?.contiguous()?;
            let values = maps.gather(&index, 1)?.squeeze(1)?;
            let notes = order
                .iter()
                .zip(&mass)
                .map(|(o, row)| {
                    let total: f32 = row.iter().sum();
                    let share = if total > 0.0 {
                        row[o[rank]] / total
                    } else {
                        0.0
                    };
                    format!(
                        "attention map {} of {m} ({:.0}% of the attention mass)",
                        o[rank],
                        100.0 * share
                    )
                })
                .collect();
            panels.push(Panel {
                name: format!("attention #{}", rank + 1),
                notes,
                content: PanelContent::Map {
                    values,
                    range: None,
                    discrete: false,
                },
            });
        }
        panels.push(Panel::new(
            "region",
            PanelContent::Map {
                values: region.squeeze(1)?,
                range: Some((0.0, 1.0)),
                discrete: false,
            },
        ));
        panels.push(Panel::new("zoom box", PanelContent::Boxes(boxes)));
        panels.push(Panel::new("zoomed", PanelContent::Image(zoomed)));
        Ok(Taps {
            maps: vec![coarse, fine],
            panels,
        })
    }

    fn heads(&self, maps: &[Tensor]) -> Result<Predictions> {
        check_maps("coarse2fine", maps, 2)?;
        let coarse = self.head().attend(&maps[0], false)?.logits;
        let fine = self.head().attend(&maps[1], false)?.logits;
        let combined = coarse.add(&fine)?.affine(0.5, 0.0)?;
        Ok(Predictions {
            heads: vec![
                ("combined".into(), combined),
                ("coarse".into(), coarse),
                ("fine".into(), fine),
            ],
        })
    }
}
