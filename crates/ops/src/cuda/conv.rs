//! Convolution on CUDA through cuDNN: forward, backward-data (the input gradient) and backward-filter (the
//! weight gradient), dense or depthwise (cuDNN's group count equal to the channels), f32 in NCHW.
//!
//! Each op is the `cuda_fwd` of the same custom op the CPU runs, so autograd and the model code are shared.

use std::ffi::c_void;

use candle_core::cuda_backend::cudarc::driver::{CudaView, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::{Layout, Result, Shape};

pub(crate) use super::cudnn::Pass;
use super::cudnn::{handle, Convolution};
use crate::conv_cpu::Geometry;

/// The f32 elements of `s` from `l`'s offset (the caller made the tensor contiguous).
fn view<'a>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, f32>> {
    if !l.is_contiguous() {
        candle_core::bail!("fgvc-ops: a cuDNN convolution input is not contiguous")
    }
    let slice = s.as_cuda_slice::<f32>()?;
    Ok(slice.slice(l.start_offset()..l.start_offset() + l.shape().elem_count()))
}

/// A workspace of `bytes` on `dev` (none for zero).
fn workspace(
    dev: &CudaDevice,
    bytes: usize,
) -> Result<Option<candle_core::cuda_backend::cudarc::driver::CudaSlice<u8>>> {
    if bytes == 0 {
        return Ok(None);
    }
    // SAFETY: cuDNN writes the workspace before it reads it.
    Ok(Some(unsafe { dev.alloc::<u8>(bytes)? }))
}

/// One pass of the convolution `g`: `Forward` takes (x, w) and gives y, `BackwardData` takes (dy, w) and
/// gives dx, `BackwardFilter` takes (x, dy) and gives dw.
pub(crate) fn launch(
    pass: Pass,
    g: &Geometry,
    depthwise: bool,
    (s1, l1): (&CudaStorage, &Layout),
    (s2, l2): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let dev = &s1.device;
    let stream = dev.cuda_stream();
    let h = handle(dev)?;
    let conv = Convolution::new(g, depthwise)?;
    let algo = conv.algorithm(&h, pass)?;
    let bytes = conv.workspace_bytes(&h, algo)?;
    let mut ws = workspace(dev, bytes)?;
    let out_dims = conv.output_dims(pass);
    let (a, b) = (view(s1, l1)?, view(s2, l2)?);
    // SAFETY: cuDNN writes every element of the output (beta = 0).
    let mut out = unsafe { dev.alloc::<f32>(out_dims.iter().product())? };
    {
        let (ap, _ga) = a.device_ptr(&stream);
        let (bp, _gb) = b.device_ptr(&stream);
        let (op, _go) = out.device_ptr_mut(&stream);
        let (wsp, _gws) = match ws.as_mut() {
            Some(ws) => {
                let (p, guard) = ws.device_ptr_mut(&stream);
                (p as *mut c_void, Some(guard))
            }
            None => (std::ptr::null_mut(), None),
        };
        // SAFETY: the views and the output are packed NCHW f32 buffers of the convolution's shapes on
        // candle's stream, to which the handle is bound; the workspace holds `bytes`.
        unsafe {
            conv.run(
                &h,
                algo,
                ap as *const c_void,
                bp as *const c_void,
                op as *mut c_void,
                wsp,
                bytes,
            )?
        };
    }
    Ok((
        CudaStorage::wrap_cuda_slice(out, dev.clone()),
        Shape::from(out_dims.to_vec()),
    ))
}
