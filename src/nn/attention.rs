//! Multi-head attention and a softmax that keeps its gradient.

use super::frozen::FrozenOp;
use super::linear::Linear;
use candle_core::{Result as CResult, Tensor, D};

/// Softmax over the last dimension after adding an optional constant `mask` (broadcast over
/// the leading dims). Candle's fused softmax is fast but detached from the graph; this runs it
/// on the forward and back-propagates with `dx = y ⊙ (g − Σ g⊙y)`, storing only `y`.
pub fn softmax_last_dim(x: &Tensor, mask: Option<&Tensor>) -> CResult<Tensor> {
    let mask = mask.cloned();
    let forward = move |x: &Tensor| match &mask {
        Some(m) => candle_nn::ops::softmax_last_dim(&x.broadcast_add(m)?),
        None => candle_nn::ops::softmax_last_dim(x),
    };
    let backward = |_: &Tensor, y: &Tensor, g: &Tensor| {
        let dot = (g * y)?.sum_keepdim(D::Minus1)?;
        y * g.broadcast_sub(&dot)?
    };
    FrozenOp::new("softmax", forward, backward).apply(x, &[])
}

/// Largest attention-score tensor materialised at once (elements); longer queries are processed
/// in row chunks (MVDream's joint attention over 4 × 32² tokens would otherwise hold
/// B·H·4096² scores).
const MAX_SCORES: usize = 1 << 25;

/// `softmax(q kᵀ / √d + mask) v` with `heads` heads; q: B × N × H·d, k, v: B × M × H·d.
pub fn scaled_dot_product(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
) -> CResult<Tensor> {
    let (b, n, _) = q.dims3()?;
    let m = k.dim(1)?;
    let rows = (MAX_SCORES / (b * heads * m).max(1)).max(1);
    if n <= rows || mask.is_some() {
        return attend(q, k, v, heads, mask);
    }
    attend_in_chunks(q, k, v, heads, rows)
}

/// Attention over query rows `rows` at a time (the same result, less memory at once).
fn attend_in_chunks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    rows: usize,
) -> CResult<Tensor> {
    let n = q.dim(1)?;
    let chunks = (0..n)
        .step_by(rows)
        .map(|start| attend(&q.narrow(1, start, rows.min(n - start))?, k, v, heads, None))
        .collect::<CResult<Vec<_>>>()?;
    Tensor::cat(&chunks, 1)
}

fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
) -> CResult<Tensor> {
    let (b, n, inner) = q.dims3()?;
    let head_dim = inner / heads;
    let split = |t: &Tensor| -> CResult<Tensor> {
        let m = t.dim(1)?;
        t.reshape((b, m, heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()
    };
    let q = (split(q)? * (head_dim as f64).powf(-0.5))?;
    let scores = q.matmul(&split(k)?.t()?)?;
    let probs = softmax_last_dim(&scores, mask)?;
    probs
        .matmul(&split(v)?)?
        .transpose(1, 2)?
        .reshape((b, n, inner))
}

/// Projections around [`scaled_dot_product`]: self-attention when `context` is `None`.
#[derive(Clone)]
pub struct Attention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    pub heads: usize,
}

impl Attention {
    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        mask: Option<&Tensor>,
    ) -> CResult<Tensor> {
        let context = context.unwrap_or(x);
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(context)?;
        let v = self.to_v.forward(context)?;
        self.to_out
            .forward(&scaled_dot_product(&q, &k, &v, self.heads, mask)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn chunked_attention_equals_the_whole() {
        let t = || Tensor::randn(0f32, 1.0, (2, 37, 16), &Device::Cpu).unwrap();
        let (q, k, v) = (t(), t(), t());
        let whole = attend(&q, &k, &v, 4, None).unwrap();
        let chunked = attend_in_chunks(&q, &k, &v, 4, 5).unwrap();
        let err = (whole - chunked)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(err < 1e-6, "{err}");
    }
}
