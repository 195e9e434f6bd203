//! The standard ONNX operators the exporters use, each computing its output shape (and checking its
//! inputs) as the ONNX specification of [`crate::OPSET`] defines it.

use crate::error::{shape_error, Result};
use crate::graph::{Graph, Value};
use crate::proto::{attribute_proto::AttributeType, AttributeProto};
use crate::shape::{broadcast, fixed, show, Dim};

/// An `INTS` attribute.
pub fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values.to_vec(),
        ..AttributeProto::default()
    }
}

/// An `INT` attribute.
pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..AttributeProto::default()
    }
}

/// A `FLOAT` attribute.
pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(value),
        ..AttributeProto::default()
    }
}

/// The geometry of a 2-d convolution, per axis `(height, width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Stride.
    pub strides: (usize, usize),
    /// Zero padding on each side.
    pub pads: (usize, usize),
    /// Dilation.
    pub dilations: (usize, usize),
    /// Groups (1: dense; the channel count: depthwise).
    pub group: usize,
}

fn pooled(op: &str, len: usize, k: usize, s: usize, p: usize, d: usize) -> Result<usize> {
    let span = d * (k - 1) + 1;
    if k == 0 || s == 0 || len + 2 * p < span {
        return shape_error(
            op,
            format!("window {k} (stride {s}, pad {p}) does not fit {len}"),
        );
    }
    Ok((len + 2 * p - span) / s + 1)
}

fn usize_i64(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

/// Resolves a possibly negative axis of a rank-`rank` tensor.
fn axis(op: &str, axis: i64, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank as i64 {
        return shape_error(op, format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

impl Graph {
    /// `Conv` of `x` `[N, C, H, W]` with `weight` `[O, C / group, kH, kW]` and an optional `bias` `[O]`.
    pub fn conv(
        &mut self,
        x: &Value,
        weight: &Value,
        bias: Option<&Value>,
        geometry: ConvGeometry,
    ) -> Result<Value> {
        let op = "Conv";
        if x.rank() != 4 || weight.rank() != 4 {
            return shape_error(
                op,
                format!(
                    "input {} and weight {} must be 4-d",
                    show(x.shape()),
                    show(weight.shape())
                ),
            );
        }
        let w = fixed(op, weight.shape())?;
        let (c, h, wd) = (
            x.fixed_dim(op, 1)?,
            x.fixed_dim(op, 2)?,
            x.fixed_dim(op, 3)?,
        );
        let g = geometry.group;
        if g == 0 || c != w[1] * g || w[0] % g != 0 {
            return shape_error(
                op,
                format!(
                    "input {} does not fit weight {:?} with group {g}",
                    show(x.shape()),
                    w
                ),
            );
        }
        if let Some(b) = bias {
            if b.shape() != [Dim::Fixed(w[0])] {
                return shape_error(op, format!("bias {} for {} filters", show(b.shape()), w[0]));
            }
        }
        let ConvGeometry {
            strides: (sh, sw),
            pads: (ph, pw),
            dilations: (dh, dw),
            group,
        } = geometry;
        let ho = pooled(op, h, w[2], sh, ph, dh)?;
        let wo = pooled(op, wd, w[3], sw, pw, dw)?;
        let attrs = vec![
            attr_ints("kernel_shape", &usize_i64(&w[2..])),
            attr_ints("strides", &usize_i64(&[sh, sw])),
            attr_ints("pads", &usize_i64(&[ph, pw, ph, pw])),
            attr_ints("dilations", &usize_i64(&[dh, dw])),
            attr_int("group", group as i64),
        ];
        let mut inputs = vec![x, weight];
        inputs.extend(bias);
        let shape = vec![
            x.shape()[0].clone(),
            Dim::Fixed(w[0]),
            Dim::Fixed(ho),
            Dim::Fixed(wo),
        ];
        Ok(self.node(op, &inputs, attrs, shape))
    }

    /// `Gemm`: `a [M, K] · b` (`b` `[N, K]` when `trans_b`, as a linear layer's weight; else `[K, N]`) plus
    /// an optional `c` broadcast to `[M, N]`.
    pub fn gemm(
        &mut self,
        a: &Value,
        b: &Value,
        c: Option<&Value>,
        trans_b: bool,
    ) -> Result<Value> {
        let op = "Gemm";
        if a.rank() != 2 || b.rank() != 2 {
            return shape_error(
                op,
                format!("{} and {} must be 2-d", show(a.shape()), show(b.shape())),
            );
        }
        let (k_b, n) = if trans_b {
            (&b.shape()[1], &b.shape()[0])
        } else {
            (&b.shape()[0], &b.shape()[1])
        };
        if &a.shape()[1] != k_b {
            return shape_error(
                op,
                format!(
                    "inner sizes of {} and {} differ (trans_b {trans_b})",
                    show(a.shape()),
                    show(b.shape())
                ),
            );
        }
        let shape = vec![a.shape()[0].clone(), n.clone()];
        if let Some(c) = c {
            broadcast(op, &shape, c.shape())?;
        }
        let mut inputs = vec![a, b];
        inputs.extend(c);
        Ok(self.node(
            op,
            &inputs,
            vec![attr_int("transB", i64::from(trans_b))],
            shape,
        ))
    }

    /// `MatMul` with numpy semantics on inputs of rank 2 or more (batch dimensions broadcast).
    pub fn matmul(&mut self, a: &Value, b: &Value) -> Result<Value> {
        let op = "MatMul";
        if a.rank() < 2 || b.rank() < 2 {
            return shape_error(
                op,
                format!(
                    "{} and {} must be at least 2-d",
                    show(a.shape()),
                    show(b.shape())
                ),
            );
        }
        let (ra, rb) = (a.rank(), b.rank());
        if a.shape()[ra - 1] != b.shape()[rb - 2] {
            return shape_error(
                op,
                format!(
                    "inner sizes of {} and {} differ",
                    show(a.shape()),
                    show(b.shape())
                ),
            );
        }
        let mut shape = broadcast(op, &a.shape()[..ra - 2], &b.shape()[..rb - 2])?;
        shape.push(a.shape()[ra - 2].clone());
        shape.push(b.shape()[rb - 1].clone());
        Ok(self.node(op, &[a, b], vec![], shape))
    }

    fn binary(&mut self, op: &str, a: &Value, b: &Value) -> Result<Value> {
        let shape = broadcast(op, a.shape(), b.shape())?;
        Ok(self.node(op, &[a, b], vec![], shape))
    }

    /// `Add` with broadcasting.
    pub fn add(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.binary("Add", a, b)
    }

    /// `Sub` with broadcasting.
    pub fn sub(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.binary("Sub", a, b)
    }

    /// `Mul` with broadcasting.
    pub fn mul(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.binary("Mul", a, b)
    }

    /// `Div` with broadcasting.
    pub fn div(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.binary("Div", a, b)
    }

    /// `x * scale + shift` with scalar constants (one node each, skipped when the identity).
    pub fn affine(&mut self, x: &Value, scale: f32, shift: f32) -> Result<Value> {
        let mut y = x.clone();
        if scale != 1.0 {
            let s = self.scalar(scale)?;
            y = self.mul(&y, &s)?;
        }
        if shift != 0.0 {
            let s = self.scalar(shift)?;
            y = self.add(&y, &s)?;
        }
        Ok(y)
    }

    /// An element-wise operator with no attribute (`Relu`, `Sigmoid`, `Tanh`, `Abs`, `Sign`, `Sqrt`,
    /// `Identity`).
    pub fn unary(&mut self, op: &str, x: &Value) -> Value {
        self.node(op, &[x], vec![], x.shape().to_vec())
    }

    /// `Relu`.
    pub fn relu(&mut self, x: &Value) -> Value {
        self.unary("Relu", x)
    }

    /// `Sigmoid`.
    pub fn sigmoid(&mut self, x: &Value) -> Value {
        self.unary("Sigmoid", x)
    }

    /// `Elu` with `alpha`.
    pub fn elu(&mut self, x: &Value, alpha: f32) -> Value {
        self.node(
            "Elu",
            &[x],
            vec![attr_float("alpha", alpha)],
            x.shape().to_vec(),
        )
    }

    /// `Clip` to `[min, max]`.
    pub fn clip(&mut self, x: &Value, min: f32, max: f32) -> Result<Value> {
        let lo = self.scalar(min)?;
        let hi = self.scalar(max)?;
        Ok(self.node("Clip", &[x, &lo, &hi], vec![], x.shape().to_vec()))
    }

    /// `MaxPool` of `[N, C, H, W]` with a `k` x `k` window, `stride` and `pad` on every side (`-inf`
    /// padding, floor mode).
    pub fn max_pool(&mut self, x: &Value, k: usize, stride: usize, pad: usize) -> Result<Value> {
        self.window_pool("MaxPool", x, (k, k), (stride, stride), pad)
    }

    /// `AveragePool` of `[N, C, H, W]` with a `(kH, kW)` window and stride, no padding (floor mode).
    pub fn average_pool(
        &mut self,
        x: &Value,
        k: (usize, usize),
        stride: (usize, usize),
    ) -> Result<Value> {
        self.window_pool("AveragePool", x, k, stride, 0)
    }

    fn window_pool(
        &mut self,
        op: &str,
        x: &Value,
        k: (usize, usize),
        s: (usize, usize),
        pad: usize,
    ) -> Result<Value> {
        if x.rank() != 4 {
            return shape_error(op, format!("input {} must be 4-d", show(x.shape())));
        }
        let ho = pooled(op, x.fixed_dim(op, 2)?, k.0, s.0, pad, 1)?;
        let wo = pooled(op, x.fixed_dim(op, 3)?, k.1, s.1, pad, 1)?;
        let attrs = vec![
            attr_ints("kernel_shape", &usize_i64(&[k.0, k.1])),
            attr_ints("strides", &usize_i64(&[s.0, s.1])),
            attr_ints("pads", &usize_i64(&[pad, pad, pad, pad])),
        ];
        let mut shape = x.shape()[..2].to_vec();
        shape.extend([Dim::Fixed(ho), Dim::Fixed(wo)]);
        Ok(self.node(op, &[x], attrs, shape))
    }

    /// `GlobalAveragePool` (`avg = true`) or `GlobalMaxPool` of `[N, C, H, W]`, flattened to `[N, C]`.
    pub fn global_pool(&mut self, x: &Value, avg: bool) -> Result<Value> {
        let op = if avg {
            "GlobalAveragePool"
        } else {
            "GlobalMaxPool"
        };
        if x.rank() != 4 {
            return shape_error(op, format!("input {} must be 4-d", show(x.shape())));
        }
        let mut shape = x.shape()[..2].to_vec();
        shape.extend([Dim::Fixed(1), Dim::Fixed(1)]);
        let y = self.node(op, &[x], vec![], shape);
        self.flatten(&y)
    }

    /// `Flatten` at axis 1: `[N, d1, d2, ...]` to `[N, d1 * d2 * ...]` (the trailing sizes fixed).
    pub fn flatten(&mut self, x: &Value) -> Result<Value> {
        let op = "Flatten";
        if x.rank() == 0 {
            return shape_error(op, "a scalar has no axis 1");
        }
        let rest: usize = fixed(op, &x.shape()[1..])?.iter().product();
        let shape = vec![x.shape()[0].clone(), Dim::Fixed(rest)];
        Ok(self.node(op, &[x], vec![attr_int("axis", 1)], shape))
    }

    /// `Reshape` to `shape`. A symbolic dimension must be one of the input's: it is copied (`0`) when at
    /// the same position, inferred (`-1`) otherwise, at most one so.
    pub fn reshape(&mut self, x: &Value, shape: &[Dim]) -> Result<Value> {
        let op = "Reshape";
        let fixed_count = |s: &[Dim]| -> usize { s.iter().filter_map(Dim::fixed).product() };
        let mut symbols_in: Vec<&Dim> = x.shape().iter().filter(|d| d.fixed().is_none()).collect();
        let mut target = Vec::with_capacity(shape.len());
        let mut inferred = false;
        for (i, d) in shape.iter().enumerate() {
            match d {
                Dim::Fixed(n) => target.push(*n as i64),
                Dim::Symbol(_) => {
                    let Some(pos) = symbols_in.iter().position(|s| *s == d) else {
                        return shape_error(
                            op,
                            format!("{d} is not a dimension of {}", show(x.shape())),
                        );
                    };
                    symbols_in.remove(pos);
                    if x.shape().get(i) == Some(d) {
                        target.push(0);
                    } else if !inferred {
                        inferred = true;
                        target.push(-1);
                    } else {
                        return shape_error(
                            op,
                            format!("more than one moved symbol in {}", show(shape)),
                        );
                    }
                }
            }
        }
        if !symbols_in.is_empty() || fixed_count(x.shape()) != fixed_count(shape) {
            return shape_error(
                op,
                format!("{} cannot be reshaped to {}", show(x.shape()), show(shape)),
            );
        }
        let t = self.constant_i64(&target);
        Ok(self.node(op, &[x, &t], vec![], shape.to_vec()))
    }

    /// `Transpose` by `perm`.
    pub fn transpose(&mut self, x: &Value, perm: &[usize]) -> Result<Value> {
        let op = "Transpose";
        let mut sorted = perm.to_vec();
        sorted.sort_unstable();
        if sorted != (0..x.rank()).collect::<Vec<_>>() {
            return shape_error(
                op,
                format!(
                    "{perm:?} is not a permutation of the axes of {}",
                    show(x.shape())
                ),
            );
        }
        let shape = perm.iter().map(|&p| x.shape()[p].clone()).collect();
        Ok(self.node(op, &[x], vec![attr_ints("perm", &usize_i64(perm))], shape))
    }

    /// `Concat` along `axis`; the other dimensions must agree.
    pub fn concat(&mut self, xs: &[Value], axis: i64) -> Result<Value> {
        let op = "Concat";
        let first = xs.first().ok_or_else(|| crate::ExportError::Shape {
            op: op.into(),
            message: "nothing to concatenate".into(),
        })?;
        let a = self::axis(op, axis, first.rank())?;
        let mut total = 0;
        for x in xs {
            let same_rank = x.rank() == first.rank();
            let others_agree =
                same_rank && (0..x.rank()).all(|i| i == a || x.shape()[i] == first.shape()[i]);
            if !others_agree {
                return shape_error(
                    op,
                    format!(
                        "{} and {} differ off axis {a}",
                        show(first.shape()),
                        show(x.shape())
                    ),
                );
            }
            total += x.fixed_dim(op, a)?;
        }
        let mut shape = first.shape().to_vec();
        shape[a] = Dim::Fixed(total);
        let inputs: Vec<&Value> = xs.iter().collect();
        Ok(self.node(op, &inputs, vec![attr_int("axis", a as i64)], shape))
    }

    /// `ReduceSum` over `axes`, keeping them as size 1 when `keepdims`.
    pub fn reduce_sum(&mut self, x: &Value, axes: &[i64], keepdims: bool) -> Result<Value> {
        let op = "ReduceSum";
        let axes: Vec<usize> = axes
            .iter()
            .map(|&a| axis(op, a, x.rank()))
            .collect::<Result<_>>()?;
        let mut shape = Vec::new();
        for (i, d) in x.shape().iter().enumerate() {
            if !axes.contains(&i) {
                shape.push(d.clone());
            } else if keepdims {
                shape.push(Dim::Fixed(1));
            }
        }
        let a = self.constant_i64(&usize_i64(&axes));
        Ok(self.node(
            op,
            &[x, &a],
            vec![attr_int("keepdims", i64::from(keepdims))],
            shape,
        ))
    }

    /// `Unsqueeze`: a size-1 axis inserted at `at` (of the output).
    pub fn unsqueeze(&mut self, x: &Value, at: usize) -> Result<Value> {
        if at > x.rank() {
            return shape_error(
                "Unsqueeze",
                format!("axis {at} out of range for {}", show(x.shape())),
            );
        }
        let mut shape = x.shape().to_vec();
        shape.insert(at, Dim::Fixed(1));
        let a = self.constant_i64(&[at as i64]);
        Ok(self.node("Unsqueeze", &[x, &a], vec![], shape))
    }

    /// `Squeeze` of the size-1 axis `at`.
    pub fn squeeze(&mut self, x: &Value, at: usize) -> Result<Value> {
        if x.shape().get(at) != Some(&Dim::Fixed(1)) {
            return shape_error(
                "Squeeze",
                format!("axis {at} of {} is not of size 1", show(x.shape())),
            );
        }
        let mut shape = x.shape().to_vec();
        shape.remove(at);
        let a = self.constant_i64(&[at as i64]);
        Ok(self.node("Squeeze", &[x, &a], vec![], shape))
    }

    /// `Slice` of `[start, end)` along `axis` (step 1).
    pub fn slice(&mut self, x: &Value, axis: usize, start: usize, end: usize) -> Result<Value> {
        let op = "Slice";
        let len = x.fixed_dim(op, axis)?;
        if start >= end || end > len {
            return shape_error(
                op,
                format!("[{start}, {end}) of axis {axis} of {}", show(x.shape())),
            );
        }
        let mut shape = x.shape().to_vec();
        shape[axis] = Dim::Fixed(end - start);
        let s = self.constant_i64(&[start as i64]);
        let e = self.constant_i64(&[end as i64]);
        let a = self.constant_i64(&[axis as i64]);
        Ok(self.node(op, &[x, &s, &e, &a], vec![], shape))
    }
}
