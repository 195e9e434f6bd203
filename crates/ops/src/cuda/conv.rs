//! Convolution on CUDA through cuDNN: forward, backward-data (the input gradient) and backward-filter (the
//! weight gradient), dense or depthwise (cuDNN's group count equal to the channels), f32 in NCHW.
//!
//! Each op is the `cuda_fwd` of the same custom op the CPU runs, so autograd and the model code are shared.

use std::ffi::c_void;

use candle_core::cuda_backend::cudarc::cudnn::result;
use candle_core::cuda_backend::cudarc::driver::{CudaView, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::{Layout, Result, Shape};

pub(crate) use super::cudnn::Pass;
use super::cudnn::{handle, Algorithms, ConvDesc, FilterDesc, TensorDesc};
use crate::conv_cpu::Geometry;

/// The descriptors of one convolution.
struct Descs {
    x: TensorDesc,
    w: FilterDesc,
    y: TensorDesc,
    conv: ConvDesc,
    groups: usize,
    tf32: bool,
}

impl Descs {
    fn new(g: &Geometry, depthwise: bool) -> Result<Self> {
        let groups = if depthwise { g.ci } else { 1 };
        let tf32 = crate::tf32();
        Ok(Self {
            x: TensorDesc::nchw([g.n, g.ci, g.h, g.w])?,
            w: FilterDesc::kcrs([g.co, g.ci / groups, g.kh, g.kw])?,
            y: TensorDesc::nchw([g.n, g.co, g.oh, g.ow])?,
            conv: ConvDesc::new(g, groups, tf32)?,
            groups,
            tf32,
        })
    }
}

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

const ONE: f32 = 1.0;
const ZERO: f32 = 0.0;

fn scale(v: &f32) -> *const c_void {
    v as *const f32 as *const c_void
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
    let d = Descs::new(g, depthwise)?;
    let algos = Algorithms {
        handle: &h,
        x: &d.x,
        w: &d.w,
        conv: &d.conv,
        y: &d.y,
        geom: *g,
        groups: d.groups,
        tf32: d.tf32,
    };
    let wrap = candle_core::Error::wrap;
    // SAFETY (every workspace query): the handle and descriptors are live.
    let (out_dims, bytes) = match pass {
        Pass::Forward => {
            let a = algos.forward()?;
            let b = unsafe {
                result::get_convolution_forward_workspace_size(
                    h.raw, d.x.0, d.w.0, d.conv.0, d.y.0, a,
                )
            };
            ([g.n, g.co, g.oh, g.ow], b.map_err(wrap)?)
        }
        Pass::BackwardData => {
            let a = algos.backward_data()?;
            let b = unsafe {
                result::get_convolution_backward_data_workspace_size(
                    h.raw, d.w.0, d.y.0, d.conv.0, d.x.0, a,
                )
            };
            ([g.n, g.ci, g.h, g.w], b.map_err(wrap)?)
        }
        Pass::BackwardFilter => {
            let a = algos.backward_filter()?;
            let b = unsafe {
                result::get_convolution_backward_filter_workspace_size(
                    h.raw, d.x.0, d.y.0, d.conv.0, d.w.0, a,
                )
            };
            ([g.co, g.ci / d.groups, g.kh, g.kw], b.map_err(wrap)?)
        }
    };
    let mut ws = workspace(dev, bytes)?;
    let (a, b) = (view(s1, l1)?, view(s2, l2)?);
    // SAFETY: cuDNN writes every element of the output (beta = 0).
    let mut out = unsafe { dev.alloc::<f32>(out_dims.iter().product())? };
    {
        let (ap, _ga) = a.device_ptr(&stream);
        let (bp, _gb) = b.device_ptr(&stream);
        let (op, _go) = out.device_ptr_mut(&stream);
        let (ap, bp, op) = (ap as *const c_void, bp as *const c_void, op as *mut c_void);
        let (wsp, _gws) = match ws.as_mut() {
            Some(ws) => {
                let (p, guard) = ws.device_ptr_mut(&stream);
                (p as *mut c_void, Some(guard))
            }
            None => (std::ptr::null_mut(), None),
        };
        let (one, zero) = (scale(&ONE), scale(&ZERO));
        // SAFETY: the pointers and descriptors describe the same packed NCHW f32 buffers, all used on
        // candle's stream, to which the handle is bound; the algorithms were cached for these shapes.
        let done = unsafe {
            match pass {
                Pass::Forward => result::convolution_forward(
                    h.raw,
                    one,
                    d.x.0,
                    ap,
                    d.w.0,
                    bp,
                    d.conv.0,
                    algos.forward()?,
                    wsp,
                    bytes,
                    zero,
                    d.y.0,
                    op,
                ),
                Pass::BackwardData => result::convolution_backward_data(
                    h.raw,
                    one,
                    d.w.0,
                    bp,
                    d.y.0,
                    ap,
                    d.conv.0,
                    algos.backward_data()?,
                    wsp,
                    bytes,
                    zero,
                    d.x.0,
                    op,
                ),
                Pass::BackwardFilter => result::convolution_backward_filter(
                    h.raw,
                    one,
                    d.x.0,
                    ap,
                    d.y.0,
                    bp,
                    d.conv.0,
                    algos.backward_filter()?,
                    wsp,
                    bytes,
                    zero,
                    d.w.0,
                    op,
                ),
            }
        };
        done.map_err(wrap)?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(out, dev.clone()),
        Shape::from(out_dims.to_vec()),
    ))
}
