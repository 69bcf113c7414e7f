//! Differentiable ops whose parameters are frozen.
//!
//! Candle's backward pass computes (and keeps) a gradient for *both* operands of every matmul,
//! conv and broadcast op, so frozen weights cost a weight-sized gradient each and the backward
//! time of a second matmul. A [`FrozenOp`] is a custom op on the activation alone: its forward
//! runs ordinary candle ops on a detached copy of the input, and its backward returns only the
//! input gradient, computed by a closed form supplied by the layer.

use candle_core::{
    backend::BackendStorage, CpuStorage, CudaStorage, CustomOp1, Layout, MetalStorage, Result,
    Shape, Storage, Tensor,
};

type Forward = dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync;
/// `(input, output, output gradient) -> input gradient`.
type Backward = dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync;

/// A unary op with a hand-written input gradient. The closures capture the frozen tensors.
pub struct FrozenOp {
    name: &'static str,
    forward: Box<Forward>,
    backward: Box<Backward>,
}

impl FrozenOp {
    pub fn new(
        name: &'static str,
        forward: impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static,
        backward: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            forward: Box::new(forward),
            backward: Box::new(backward),
        }
    }

    /// Applies the op to `x`. When one of `params` is trainable (a `Var` or derived from one)
    /// the forward runs as ordinary tracked ops so that its gradient flows; untracked inputs
    /// skip the custom-op machinery entirely.
    pub fn apply(self, x: &Tensor, params: &[&Tensor]) -> Result<Tensor> {
        if !x.track_op() || params.iter().any(|p| p.track_op()) {
            return (self.forward)(x);
        }
        dense(x)?.apply_op1(self)
    }

    /// Runs the forward on a detached tensor that owns a copy of `storage`.
    fn run<S: BackendStorage>(
        &self,
        storage: &S,
        layout: &Layout,
        wrap: fn(S) -> Storage,
        unwrap: fn(&Storage) -> Option<&S>,
    ) -> Result<(S, Shape)> {
        let input = Tensor::from_storage(
            wrap(storage.try_clone(layout)?),
            layout.shape().clone(),
            candle_core::op::BackpropOp::none(),
            false,
        );
        let output = dense(&(self.forward)(&input)?)?;
        let (out_storage, out_layout) = output.storage_and_layout();
        let out = unwrap(&out_storage).expect("a frozen op stays on its input's device");
        Ok((out.try_clone(out_layout)?, out_layout.shape().clone()))
    }
}

impl CustomOp1 for FrozenOp {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run(storage, layout, Storage::Cpu, |s| match s {
            Storage::Cpu(s) => Some(s),
            _ => None,
        })
    }

    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        self.run(storage, layout, Storage::Cuda, |s| match s {
            Storage::Cuda(s) => Some(s),
            _ => None,
        })
    }

    fn metal_fwd(&self, storage: &MetalStorage, layout: &Layout) -> Result<(MetalStorage, Shape)> {
        self.run(storage, layout, Storage::Metal, |s| match s {
            Storage::Metal(s) => Some(s),
            _ => None,
        })
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        (self.backward)(&arg.detach(), &res.detach(), grad_res).map(Some)
    }
}

/// `x` itself when its storage can be read as a dense row-major buffer from offset 0 (what
/// `Tensor::from_storage` assumes), else a dense copy.
fn dense(x: &Tensor) -> Result<Tensor> {
    if x.is_contiguous() && x.layout().start_offset() == 0 {
        Ok(x.clone())
    } else {
        x.force_contiguous()
    }
}
