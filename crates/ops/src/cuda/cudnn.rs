//! cuDNN through cudarc's raw API: a handle per thread and device on candle's stream, descriptors that
//! destroy themselves, and convolution algorithms chosen once per shape among the deterministic ones.
//!
//! cudarc's safe wrappers hide the raw descriptors its algorithm queries need, and pick cuDNN's first
//! heuristic whether or not it is deterministic; so this module keeps its own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_int;
use std::rc::Rc;

use candle_core::cuda_backend::cudarc::cudnn::result::{self, CudnnError};
use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::{CudaDevice, DeviceId};
use candle_core::Result;

use crate::conv_cpu::Geometry;

/// A cuDNN handle bound to one candle device's stream.
pub(crate) struct Handle {
    pub(crate) raw: sys::cudnnHandle_t,
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
pub(crate) struct TensorDesc(pub(crate) sys::cudnnTensorDescriptor_t);

impl TensorDesc {
    /// A packed NCHW f32 tensor of `dims`.
    pub(crate) fn nchw(dims: [usize; 4]) -> Result<Self> {
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
pub(crate) struct FilterDesc(pub(crate) sys::cudnnFilterDescriptor_t);

impl FilterDesc {
    /// Filters `(C_out, C_in / groups, kH, kW)`.
    pub(crate) fn kcrs(dims: [usize; 4]) -> Result<Self> {
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
pub(crate) struct ConvDesc(pub(crate) sys::cudnnConvolutionDescriptor_t);

impl ConvDesc {
    /// The convolution of `g` in `groups` groups; TF32 tensor cores allowed when `tf32`.
    pub(crate) fn new(g: &Geometry, groups: usize, tf32: bool) -> Result<Self> {
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
    Forward,
    BackwardData,
    BackwardFilter,
}

/// What an algorithm choice depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct AlgoKey {
    pass: Pass,
    geom: Geometry,
    groups: usize,
    tf32: bool,
}

/// A chosen algorithm, of one of the passes.
#[derive(Clone, Copy, Debug)]
enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    BackwardData(sys::cudnnConvolutionBwdDataAlgo_t),
    BackwardFilter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// The first of cuDNN's heuristic candidates (best first) that succeeded and is deterministic.
fn first_deterministic<P, A>(
    perf: &[P],
    fields: impl Fn(&P) -> (sys::cudnnStatus_t, sys::cudnnDeterminism_t, A),
    pass: Pass,
    g: &Geometry,
) -> Result<A> {
    perf.iter()
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

/// The algorithms of one convolution's three passes, each chosen once per shape and thread.
pub(crate) struct Algorithms<'a> {
    pub(crate) handle: &'a Handle,
    pub(crate) x: &'a TensorDesc,
    pub(crate) w: &'a FilterDesc,
    pub(crate) conv: &'a ConvDesc,
    pub(crate) y: &'a TensorDesc,
    pub(crate) geom: Geometry,
    pub(crate) groups: usize,
    pub(crate) tf32: bool,
}

impl Algorithms<'_> {
    fn cached(&self, pass: Pass, query: impl FnOnce() -> Result<Algo>) -> Result<Algo> {
        let key = AlgoKey {
            pass,
            geom: self.geom,
            groups: self.groups,
            tf32: self.tf32,
        };
        if let Some(a) = ALGOS.with(|m| m.borrow().get(&key).copied()) {
            return Ok(a);
        }
        let a = query()?;
        ALGOS.with(|m| m.borrow_mut().insert(key, a));
        Ok(a)
    }

    /// Asks cuDNN for its ranked candidates of one pass (`query` fills up to `count` records at the pointer
    /// and says how many it wrote) and keeps the first deterministic one, cached for the shape.
    fn choose<P: Copy>(
        &self,
        pass: Pass,
        count: usize,
        query: impl FnOnce(*mut P, c_int, &mut c_int) -> std::result::Result<(), CudnnError>,
        fields: impl Fn(&P) -> (sys::cudnnStatus_t, sys::cudnnDeterminism_t, Algo),
    ) -> Result<Algo> {
        self.cached(pass, || {
            // SAFETY: all-zero is a valid perf record (integers, and enums whose 0 is a variant).
            let mut perf: Vec<P> = vec![unsafe { std::mem::zeroed() }; count];
            let mut n: c_int = 0;
            query(perf.as_mut_ptr(), count as c_int, &mut n).map_err(candle_core::Error::wrap)?;
            let returned = &perf[..n.clamp(0, count as c_int) as usize];
            first_deterministic(returned, fields, pass, &self.geom)
        })
    }

    /// The forward algorithm.
    pub(crate) fn forward(&self) -> Result<sys::cudnnConvolutionFwdAlgo_t> {
        let count = sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_COUNT as usize;
        // SAFETY (the query): the handle and descriptors are live; cuDNN writes at most `c` records.
        let a = self.choose(
            Pass::Forward,
            count,
            |p, c, n| unsafe {
                result::get_convolution_forward_algorithm(
                    self.handle.raw,
                    self.x.0,
                    self.w.0,
                    self.conv.0,
                    self.y.0,
                    c,
                    n,
                    p,
                )
            },
            |p: &sys::cudnnConvolutionFwdAlgoPerf_t| {
                (p.status, p.determinism, Algo::Forward(p.algo))
            },
        )?;
        match a {
            Algo::Forward(a) => Ok(a),
            _ => unreachable!("the forward key holds a forward algorithm"),
        }
    }

    /// The backward-data algorithm.
    pub(crate) fn backward_data(&self) -> Result<sys::cudnnConvolutionBwdDataAlgo_t> {
        let count =
            sys::cudnnConvolutionBwdDataAlgo_t::CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT as usize;
        // SAFETY: as in `forward`.
        let a = self.choose(
            Pass::BackwardData,
            count,
            |p, c, n| unsafe {
                result::get_convolution_backward_data_algorithm(
                    self.handle.raw,
                    self.w.0,
                    self.y.0,
                    self.conv.0,
                    self.x.0,
                    c,
                    n,
                    p,
                )
            },
            |p: &sys::cudnnConvolutionBwdDataAlgoPerf_t| {
                (p.status, p.determinism, Algo::BackwardData(p.algo))
            },
        )?;
        match a {
            Algo::BackwardData(a) => Ok(a),
            _ => unreachable!("the backward-data key holds a backward-data algorithm"),
        }
    }

    /// The backward-filter algorithm.
    pub(crate) fn backward_filter(&self) -> Result<sys::cudnnConvolutionBwdFilterAlgo_t> {
        let count =
            sys::cudnnConvolutionBwdFilterAlgo_t::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT as usize;
        // SAFETY: as in `forward`.
        let a = self.choose(
            Pass::BackwardFilter,
            count,
            |p, c, n| unsafe {
                result::get_convolution_backward_filter_algorithm(
                    self.handle.raw,
                    self.x.0,
                    self.y.0,
                    self.conv.0,
                    self.w.0,
                    c,
                    n,
                    p,
                )
            },
            |p: &sys::cudnnConvolutionBwdFilterAlgoPerf_t| {
                (p.status, p.determinism, Algo::BackwardFilter(p.algo))
            },
        )?;
        match a {
            Algo::BackwardFilter(a) => Ok(a),
            _ => unreachable!("the backward-filter key holds a backward-filter algorithm"),
        }
    }
}
