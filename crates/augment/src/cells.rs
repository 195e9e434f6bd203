//! Moving the cells of a batch of images on the device: one `index_select` over row segments, so every
//! destruction costs about one copy of the batch and runs wherever the tensor lives (CPU, CUDA, Metal).

use candle_core::{DType, Tensor};

use crate::{AugmentError, Permutation, Result};

/// Destroyed images together with the permutation each one received.
#[derive(Debug, Clone)]
pub struct Destroyed {
    /// The rearranged images, same shape, dtype and device as the input.
    pub images: Tensor,
    /// One permutation per image, in batch order (batch-wide destructions repeat the same one).
    pub permutations: Vec<Permutation>,
}

impl Destroyed {
    /// Undoes the destruction: returns the original images exactly.
    pub fn restore(&self) -> Result<Tensor> {
        let inverses: Vec<Permutation> = self.permutations.iter().map(|p| p.inverse()).collect();
        permute_cells(&self.images, &inverses)
    }
}

/// Checks that `images` is a non-empty NCHW batch and returns its dimensions.
pub(crate) fn batch_dims(
    images: &Tensor,
    what: &'static str,
) -> Result<(usize, usize, usize, usize)> {
    let (n, c, h, w) = images.dims4().map_err(|_| {
        AugmentError::BadTensor(format!(
            "{what} needs an NCHW batch, got shape {:?}",
            images.dims()
        ))
    })?;
    if n == 0 {
        return Err(AugmentError::EmptyBatch { what });
    }
    if h == 0 || w == 0 || c == 0 {
        return Err(AugmentError::BadTensor(format!(
            "{what} got an image batch with an empty dimension: {:?}",
            images.dims()
        )));
    }
    Ok((n, c, h, w))
}

/// Height and width of one cell of an `n` x `n` grid over an `h` x `w` image; an error unless `n` divides both.
pub(crate) fn cell_size(n: usize, h: usize, w: usize) -> Result<(usize, usize)> {
    if n == 0 || h % n != 0 || w % n != 0 {
        return Err(AugmentError::GridDoesNotDivide {
            n,
            height: h,
            width: w,
        });
    }
    Ok((h / n, w / n))
}

/// Rearranges the cells of every image of an NCHW batch: output cell `d` of image `i` shows input cell
/// `perms[i].source_of[d]`. Pass one permutation per image, or a single one for the whole batch.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use fgvc_augment::{permute_cells, Permutation};
/// let x = Tensor::arange(0f32, 16., &Device::Cpu)?.reshape((1, 1, 4, 4))?;
/// let swap = Permutation::new(2, vec![1, 0, 3, 2])?; // swap left and right halves
/// let y = permute_cells(&x, &[swap])?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?[..4], [2., 3., 0., 1.]);
/// # Ok::<(), fgvc_augment::AugmentError>(())
/// ```
pub fn permute_cells(images: &Tensor, perms: &[Permutation]) -> Result<Tensor> {
    let (n, c, h, w) = batch_dims(images, "permute_cells")?;
    let grid = match perms {
        [] => {
            return Err(AugmentError::InvalidArgument(
                "permute_cells needs at least one permutation".into(),
            ))
        }
        [first, rest @ ..] => {
            if let Some(p) = rest.iter().find(|p| p.grid != first.grid) {
                return Err(AugmentError::InvalidArgument(format!(
                    "all permutations of a batch must share one grid, got {} and {}",
                    first.grid, p.grid
                )));
            }
            first.grid
        }
    };
    if perms.len() != 1 && perms.len() != n {
        return Err(AugmentError::InvalidArgument(format!(
            "{} permutations for a batch of {n} images: give one per image or one for the batch",
            perms.len()
        )));
    }
    let (ch, cw) = cell_size(grid, h, w)?;
    // The batch viewed as rows of `grid` segments of `cw` pixels; each output segment copies one input segment.
    // The segment pattern of one plane depends only on the permutation; each plane adds its offset.
    let plane_len = h * grid;
    let mut pattern = Vec::with_capacity(plane_len);
    let mut index = Vec::with_capacity(n * c * plane_len);
    for b in 0..n {
        if b == 0 || perms.len() != 1 {
            let perm = &perms[if perms.len() == 1 { 0 } else { b }];
            pattern.clear();
            for y in 0..h {
                let (tile_row, offset) = (y / ch, y % ch);
                pattern.extend(
                    perm.source_of[tile_row * grid..(tile_row + 1) * grid]
                        .iter()
                        .map(|&src| {
                            let src = src as usize;
                            ((src / grid) * ch + offset) * grid + src % grid
                        }),
                );
            }
        }
        for plane in b * c..(b + 1) * c {
            let base = plane * plane_len;
            index.extend(pattern.iter().map(|&p| (base + p) as u32));
        }
    }
    let index = Tensor::from_vec(index, n * c * h * grid, images.device())?;
    let segments = images.contiguous()?.reshape((n * c * h * grid, cw))?;
    Ok(segments.index_select(&index, 0)?.reshape((n, c, h, w))?)
}

/// Mean of every cell of an `grid` x `grid` tiling, summed over channels: `[N, grid*grid]` in row-major cell
/// order. DCL's official code matches regions by this statistic (`sum(ImageStat.Stat(patch).mean)`).
pub(crate) fn cell_channel_sums(images: &Tensor, grid: usize) -> Result<Tensor> {
    let (n, c, h, w) = batch_dims(images, "cell statistics")?;
    let (ch, cw) = cell_size(grid, h, w)?;
    let x = images
        .to_dtype(DType::F32)?
        .reshape((n, c, grid, ch, grid, cw))?;
    let sums = x.sum(5)?.sum(3)?.sum(1)?; // [N, grid, grid]
    Ok((sums / (ch * cw) as f64)?.reshape((n, grid * grid))?)
}
