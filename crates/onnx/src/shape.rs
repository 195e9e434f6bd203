//! Static shapes with symbolic dimensions (the dynamic batch), and numpy broadcasting over them.

use crate::error::{shape_error, Result};

/// One dimension of a graph value: a fixed size or a named symbol (`"N"`, the batch).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A size known when the graph is built.
    Fixed(usize),
    /// A size known only at run time, by name (`dim_param` in ONNX).
    Symbol(String),
}

impl Dim {
    /// A symbolic dimension called `name`.
    pub fn symbol(name: &str) -> Self {
        Dim::Symbol(name.into())
    }

    /// The size, when fixed.
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Symbol(_) => None,
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Self {
        Dim::Fixed(n)
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
        }
    }
}

/// `[N, 3, 224, 224]`-style text of a shape.
pub fn show(shape: &[Dim]) -> String {
    let dims: Vec<String> = shape.iter().map(Dim::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// Fixed sizes of `shape`, or an error for `op` naming the symbolic one.
pub fn fixed(op: &str, shape: &[Dim]) -> Result<Vec<usize>> {
    shape
        .iter()
        .map(|d| match d.fixed() {
            Some(n) => Ok(n),
            None => shape_error(op, format!("needs fixed sizes, got {}", show(shape))),
        })
        .collect()
}

/// The numpy broadcast of two shapes (ONNX's multidirectional broadcasting).
pub fn broadcast(op: &str, a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>> {
    let rank = a.len().max(b.len());
    let at = |s: &[Dim], i: usize| -> Dim {
        let pad = rank - s.len();
        if i < pad {
            Dim::Fixed(1)
        } else {
            s[i - pad].clone()
        }
    };
    (0..rank)
        .map(|i| {
            let (x, y) = (at(a, i), at(b, i));
            match (&x, &y) {
                _ if x == y => Ok(x),
                (Dim::Fixed(1), _) => Ok(y),
                (_, Dim::Fixed(1)) => Ok(x),
                _ => shape_error(
                    op,
                    format!("shapes {} and {} do not broadcast", show(a), show(b)),
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy_and_keeps_symbols() {
        let n = Dim::symbol("N");
        let a = [n.clone(), Dim::Fixed(3), Dim::Fixed(1)];
        let b = [Dim::Fixed(4)];
        assert_eq!(
            broadcast("Add", &a, &b).unwrap(),
            [n.clone(), Dim::Fixed(3), Dim::Fixed(4)]
        );
        let err = broadcast("Add", &a, &[Dim::Fixed(2), Dim::Fixed(1)]).unwrap_err();
        assert!(err.to_string().contains("[N, 3, 1] and [2, 1]"), "{err}");
    }
}
