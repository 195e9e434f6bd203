//! cuDNN through cudarc's raw API: a handle per thread and device on candle's stream, descriptors that
//! destroy themselves, and convolution algorithms chosen once per shape among the deterministic ones.
//!
//! cudarc's safe wrappers hide the raw descriptors its algorithm queries need, and pick cuDNN's first
//! heuristic whether or not it is deterministic; so this module keeps its own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::rc::Rc;

use candle_core::cuda_backend::cudarc::cudnn::result::{self, CudnnError};
use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::{CudaDevice, DeviceId};
use candle_core::Result;

use crate::conv_cpu::Geometry;

/// A cuDNN handle bound to one candle device's stream.
pub(crate) struct Handle {
    raw: sys::cudnnHandle_t,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by `create_handle` and destroyed only here.
        unsafe {
            let _ = result::destroy_handle(self.raw);
        }
    }
}

thread_local! {
    // cuDNN handles are not thread-safe, so each thread has its own, as candle does.
    static HANDLES: RefCell<HashMap<DeviceId, Rc<Handle>>> = RefCell::new(HashMap::new());
    static ALGOS: RefCell<HashMap<AlgoKey, Algo>> = RefCell::new(HashMap::new());
}

/// This thread's handle for `dev`, created on first use.
pub(crate) fn handle(dev: &CudaDevice) -> Result<Rc<Handle>> {
    HANDLES.with(|h| {
        if let Some(found) = h.borrow().get(&dev.id()) {
            return Ok(found.clone());
        }
        let raw = result::create_handle().map_err(candle_core::Error::wrap)?;
        let made = Rc::new(Handle { raw });
        // SAFETY: the handle is live, and candle's stream outlives the device that owns it.
        unsafe { result::set_stream(raw, dev.cuda_stream().cu_stream() as sys::cudaStream_t) }
            .map_err(candle_core::Error::wrap)?;
        h.borrow_mut().insert(dev.id(), made.clone());
        Ok(made)
    })
}

/// An NCHW f32 tensor descriptor.
struct TensorDesc(sys::cudnnTensorDescriptor_t);

impl TensorDesc {
    /// A packed NCHW f32 tensor of `dims`.
    fn nchw(dims: [usize; 4]) -> Result<Self> {
        let raw = result::create_tensor_descriptor().map_err(candle_core::Error::wrap)?;
        let d = Self(raw);
        // SAFETY: `raw` was just created.
        unsafe {
            result::set_tensor4d_descriptor(
                raw,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                dims_c(dims)?,
            )
        }
        .map_err(candle_core::Error::wrap)?;
        Ok(d)
    }
}

impl Drop for TensorDesc {
    fn drop(&mut self) {
        // SAFETY: created in `nchw`, destroyed only here.
        unsafe {
            let _ = result::destroy_tensor_descriptor(self.0);
        }
    }
}

/// A KCRS f32 filter descriptor.
struct FilterDesc(sys::cudnnFilterDescriptor_t);

impl FilterDesc {
    /// Filters `(C_out, C_in / groups, kH, kW)`.
    fn kcrs(dims: [usize; 4]) -> Result<Self> {
        let raw = result::create_filter_descriptor().map_err(candle_core::Error::wrap)?;
        let d = Self(raw);
        // SAFETY: `raw` was just created.
        unsafe {
            result::set_filter4d_descriptor(
                raw,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                dims_c(dims)?,
            )
        }
        .map_err(candle_core::Error::wrap)?;
        Ok(d)
    }
}

impl Drop for FilterDesc {
    fn drop(&mut self) {
        // SAFETY: created in `kcrs`, destroyed only here.
        unsafe {
            let _ = result::destroy_filter_descriptor(self.0);
        }
    }
}

/// A 2-D cross-correlation (PyTorch's convolution) with f32 accumulation.
struct ConvDesc(sys::cudnnConvolutionDescriptor_t);

impl ConvDesc {
    /// The convolution of `g` in `groups` groups; TF32 tensor cores allowed when `tf32`.
    fn new(g: &Geometry, groups: usize, tf32: bool) -> Result<Self> {
        let raw = result::create_convolution_descriptor().map_err(candle_core::Error::wrap)?;
        let d = Self(raw);
        let c = to_c;
        let group_count = c(groups)?;
        let math = if tf32 {
            sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
        } else {
            sys::cudnnMathType_t::CUDNN_FMA_MATH
        };
        // SAFETY: `raw` was just created.
        unsafe {
            result::set_convolution2d_descriptor(
                raw,
                c(g.ph)?,
                c(g.pw)?,
                c(g.sh)?,
                c(g.sw)?,
                c(g.dh)?,
                c(g.dw)?,
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            )
            .and_then(|()| result::set_convolution_group_count(raw, group_count))
            .and_then(|()| result::set_convolution_math_type(raw, math))
        }
        .map_err(candle_core::Error::wrap)?;
        Ok(d)
    }
}

impl Drop for ConvDesc {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed only here.
        unsafe {
            let _ = result::destroy_convolution_descriptor(self.0);
        }
    }
}

fn to_c(v: usize) -> Result<c_int> {
    c_int::try_from(v)
        .map_err(|_| candle_core::Error::Msg(format!("cuDNN: size {v} exceeds a C int")))
}

fn dims_c(d: [usize; 4]) -> Result<[c_int; 4]> {
    Ok([to_c(d[0])?, to_c(d[1])?, to_c(d[2])?, to_c(d[3])?])
}

/// Which of the three convolution passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Pass {
    /// (x, w) -> y.
    Forward,
    /// (dy, w) -> dx.
    BackwardData,
    /// (x, dy) -> dw.
    BackwardFilter,
}

/// A chosen algorithm; its variant is its pass.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    BackwardData(sys::cudnnConvolutionBwdDataAlgo_t),
    BackwardFilter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// What an algorithm choice depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct AlgoKey {
    pass: Pass,
    geom: Geometry,
    groups: usize,
    tf32: bool,
}

/// One convolution as cuDNN sees it: its descriptors, and what its algorithm choice is keyed by.
pub(crate) struct Convolution {
    x: TensorDesc,
    w: FilterDesc,
    y: TensorDesc,
    conv: ConvDesc,
    key: AlgoKey,
}

impl Convolution {
    /// The convolution `g`, depthwise (one group per channel) or dense, with TF32 as [`crate::tf32`] says.
    pub(crate) fn new(g: &Geometry, depthwise: bool) -> Result<Self> {
        let groups = if depthwise { g.ci } else { 1 };
        let tf32 = crate::tf32();
        Ok(Self {
            x: TensorDesc::nchw([g.n, g.ci, g.h, g.w])?,
            w: FilterDesc::kcrs([g.co, g.ci / groups, g.kh, g.kw])?,
            y: TensorDesc::nchw([g.n, g.co, g.oh, g.ow])?,
            conv: ConvDesc::new(g, groups, tf32)?,
            key: AlgoKey {
                pass: Pass::Forward,
                geom: *g,
                groups,
                tf32,
            },
        })
    }

    /// The dims of `pass`'s output: y, dx or dw.
    pub(crate) fn output_dims(&self, pass: Pass) -> [usize; 4] {
        let g = &self.key.geom;
        match pass {
            Pass::Forward => [g.n, g.co, g.oh, g.ow],
            Pass::BackwardData => [g.n, g.ci, g.h, g.w],
            Pass::BackwardFilter => [g.co, g.ci / self.key.groups, g.kh, g.kw],
        }
    }

    /// `pass`'s algorithm: the first deterministic one of cuDNN's ranked heuristics, chosen once per shape
    /// and thread.
    pub(crate) fn algorithm(&self, h: &Handle, pass: Pass) -> Result<Algo> {
        let key = AlgoKey { pass, ..self.key };
        if let Some(a) = ALGOS.with(|m| m.borrow().get(&key).copied()) {
            return Ok(a);
        }
        let (x, w, y, c) = (self.x.0, self.w.0, self.y.0, self.conv.0);
        let g = &self.key.geom;
        use sys::cudnnConvolutionBwdDataAlgo_t as D;
        use sys::cudnnConvolutionBwdFilterAlgo_t as F;
        use sys::cudnnConvolutionFwdAlgo_t as Y;
        // SAFETY (each query): the handle and descriptors are live; cuDNN writes at most `n` records.
        let a = match pass {
            Pass::Forward => ranked(
                Y::CUDNN_CONVOLUTION_FWD_ALGO_COUNT as usize,
                |p, n, got| unsafe {
                    result::get_convolution_forward_algorithm(h.raw, x, w, c, y, n, got, p)
                },
                |p: &sys::cudnnConvolutionFwdAlgoPerf_t| {
                    (p.status, p.determinism, Algo::Forward(p.algo))
                },
                pass,
                g,
            ),
            Pass::BackwardData => ranked(
                D::CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT as usize,
                |p, n, got| unsafe {
                    result::get_convolution_backward_data_algorithm(h.raw, w, y, c, x, n, got, p)
                },
                |p: &sys::cudnnConvolutionBwdDataAlgoPerf_t| {
                    (p.status, p.determinism, Algo::BackwardData(p.algo))
                },
                pass,
                g,
            ),
            Pass::BackwardFilter => ranked(
                F::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT as usize,
                |p, n, got| unsafe {
                    result::get_convolution_backward_filter_algorithm(h.raw, x, y, c, w, n, got, p)
                },
                |p: &sys::cudnnConvolutionBwdFilterAlgoPerf_t| {
                    (p.status, p.determinism, Algo::BackwardFilter(p.algo))
                },
                pass,
                g,
            ),
        }?;
        ALGOS.with(|m| m.borrow_mut().insert(key, a));
        Ok(a)
    }

    /// The workspace bytes `algo` needs.
    pub(crate) fn workspace_bytes(&self, h: &Handle, algo: Algo) -> Result<usize> {
        let (x, w, y, c) = (self.x.0, self.w.0, self.y.0, self.conv.0);
        // SAFETY: the handle and descriptors are live.
        unsafe {
            match algo {
                Algo::Forward(a) => {
                    result::get_convolution_forward_workspace_size(h.raw, x, w, c, y, a)
                }
                Algo::BackwardData(a) => {
                    result::get_convolution_backward_data_workspace_size(h.raw, w, y, c, x, a)
                }
                Algo::BackwardFilter(a) => {
                    result::get_convolution_backward_filter_workspace_size(h.raw, x, y, c, w, a)
                }
            }
        }
        .map_err(candle_core::Error::wrap)
    }

    /// Runs `algo`'s pass: `a` and `b` are its two inputs in [`Pass`]'s order, `out` its output.
    ///
    /// # Safety
    /// The pointers hold packed NCHW f32 buffers of this convolution's shapes, used on the stream `h` is
    /// bound to; `workspace` holds `bytes` bytes (or is null with 0).
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn run(
        &self,
        h: &Handle,
        algo: Algo,
        a: *const c_void,
        b: *const c_void,
        out: *mut c_void,
        workspace: *mut c_void,
        bytes: usize,
    ) -> Result<()> {
        let (x, w, y, c) = (self.x.0, self.w.0, self.y.0, self.conv.0);
        let (one, zero) = (
            &1f32 as *const f32 as *const c_void,
            &0f32 as *const f32 as *const c_void,
        );
        match algo {
            Algo::Forward(al) => result::convolution_forward(
                h.raw, one, x, a, w, b, c, al, workspace, bytes, zero, y, out,
            ),
            Algo::BackwardData(al) => result::convolution_backward_data(
                h.raw, one, w, b, y, a, c, al, workspace, bytes, zero, x, out,
            ),
            Algo::BackwardFilter(al) => result::convolution_backward_filter(
                h.raw, one, x, a, y, b, c, al, workspace, bytes, zero, w, out,
            ),
        }
        .map_err(candle_core::Error::wrap)
    }
}

/// cuDNN's ranked candidates of one pass (`query` fills up to `count` records at the pointer and says how
/// many it wrote), and the first that succeeded and is deterministic.
fn ranked<P: Copy>(
    count: usize,
    query: impl FnOnce(*mut P, c_int, &mut c_int) -> std::result::Result<(), CudnnError>,
    fields: impl Fn(&P) -> (sys::cudnnStatus_t, sys::cudnnDeterminism_t, Algo),
    pass: Pass,
    g: &Geometry,
) -> Result<Algo> {
    // SAFETY: all-zero is a valid perf record (integers, and enums whose 0 is a variant).
    let mut perf: Vec<P> = vec![unsafe { std::mem::zeroed() }; count];
    let mut n: c_int = 0;
    query(perf.as_mut_ptr(), count as c_int, &mut n).map_err(candle_core::Error::wrap)?;
    perf[..n.clamp(0, count as c_int) as usize]
        .iter()
        .map(fields)
        .find(|(status, det, _)| {
            *status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                && *det == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC
        })
        .map(|(_, _, a)| a)
        .ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "cuDNN offers no deterministic {pass:?} algorithm for {g:?}"
            ))
        })
}
