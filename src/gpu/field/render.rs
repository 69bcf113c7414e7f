//! Rendering over packed samples (nerfacc's layout, `shaders/render.wgsl`). The frame's rays go
//! in chunks whose sample lists fit one storage binding; per chunk a march counts each ray's
//! occupied samples, a GPU prefix sum lays them out, a second march writes them, the field is
//! evaluated once per sample, in tiles (an indirect dispatch sized on the GPU), and each ray
//! composites its contiguous samples. Each chunk's sample total comes back with the image: a chunk whose
//! samples outgrew its buffers is rendered again with larger ones (rare: buffers keep headroom
//! over the densest chunk seen and are reused while they fit).

use super::{CameraUniform, ChunkUniform, FrameUniform, GpuField, WorkUniform};
use crate::camera::Camera;
use crate::error::{Error, Result};
use crate::field::march::pcg_hash;
use crate::field::{Background, RenderSettings};
use crate::gpu::buffers::{dispatch_size, download_ranges, storage, uniform, values_of};
use crate::gpu::launch::{Groups, Launches};
use crate::gpu::scan::{DispatchUniform, PrefixSum};
use crate::gpu::shader::{
    BACKWARD_TILE, BACKWARD_TILES_PER_GROUP, EVAL_TILE, EVAL_TILES_PER_GROUP,
};
use crate::gpu::GpuContext;
use bytemuck::Zeroable;

/// `SampleGrad` in `shaders/render.wgsl`: 8 floats, the largest per-sample record.
pub(super) const SAMPLE_GRAD_BYTES: u64 = 32;
/// Bytes per sample of the forward lists: (position, t) and (σ, albedo).
const POINT_BYTES: u64 = 16;
/// Sample buffers hold this much more than the densest chunk seen needed.
const HEADROOM: f64 = 1.25;
/// Spare samples per chunk beyond the headroom.
const SLACK: u64 = 64;
/// Samples of one chunk at most: ≈ 4 GB of sample buffers, whatever the binding limit.
const MAX_CHUNK_SAMPLES: u64 = 1 << 26;
/// Samples per `eval_samples` workgroup.
const SAMPLES_PER_EVAL_GROUP: u32 = EVAL_TILE * EVAL_TILES_PER_GROUP;
/// Samples per `field_backward` workgroup.
pub(super) const SAMPLES_PER_BACKWARD_GROUP: u32 = BACKWARD_TILE * BACKWARD_TILES_PER_GROUP;

/// What a batch of cameras rendered to, per pixel, view-major then row-major.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// rgb over the background, opacity.
    pub color: Vec<[f32; 4]>,
    pub depth: Vec<f32>,
}

/// The rays of one chunk and the samples its buffers hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPlan {
    pub first_ray: u32,
    pub rays: u32,
    pub capacity: u32,
}

/// Splits `rays` rays expected to march `per_ray` samples each into even chunks whose sample
/// buffers (headroom included) hold at most `max_samples`.
pub fn plan_chunks(rays: u32, per_ray: f64, max_samples: u64) -> Vec<ChunkPlan> {
    let per_ray = per_ray.max(1e-3) * HEADROOM;
    let fit = ((max_samples.saturating_sub(SLACK)) as f64 / per_ray).floor();
    let count = (rays as f64 / fit.max(1.0)).ceil().max(1.0) as u32;
    let each = rays.div_ceil(count).max(1);
    (0..rays.div_ceil(each).max(1))
        .map(|c| {
            let first_ray = c * each;
            let n = each.min(rays - first_ray);
            let want = (n as f64 * per_ray).ceil() as u64 + SLACK;
            ChunkPlan {
                first_ray,
                rays: n,
                capacity: want.min(max_samples) as u32,
            }
        })
        .collect()
}

/// One chunk's buffers, reused by later renders while they fit.
struct ChunkBuffers {
    plan: ChunkPlan,
    uniform: wgpu::Buffer,
    /// Per ray, plus one: marched counts, scanned in place into first slots (the extra entry
    /// becomes the total).
    offsets: wgpu::Buffer,
    /// Per ray, plus one: samples composited (up to early termination).
    used: wgpu::Buffer,
    /// Per ray, plus one: `used` scanned, the gradient list's layout.
    grad_offsets: wgpu::Buffer,
    points: wgpu::Buffer,
    values: wgpu::Buffer,
    eval_args: wgpu::Buffer,
    eval_dispatch: wgpu::Buffer,
    backward_args: wgpu::Buffer,
    backward_dispatch: wgpu::Buffer,
    backward_work: wgpu::Buffer,
    scan: PrefixSum,
}

impl ChunkBuffers {
    fn new(ctx: &GpuContext, plan: ChunkPlan) -> Self {
        let per_ray = 4 * (plan.rays as u64 + 1);
        let samples = plan.capacity as u64;
        let dispatch = |per_group| DispatchUniform {
            at: plan.rays,
            limit: plan.capacity,
            per_group,
            pad: 0,
        };
        Self {
            uniform: uniform(
                ctx,
                "chunk",
                &ChunkUniform {
                    first_ray: plan.first_ray,
                    rays: plan.rays,
                    capacity: plan.capacity,
                    pad: 0,
                },
            ),
            offsets: storage(ctx, "sample offsets", per_ray),
            used: storage(ctx, "samples used", per_ray),
            grad_offsets: storage(ctx, "gradient offsets", per_ray),
            points: storage(ctx, "sample points", POINT_BYTES * samples),
            values: storage(ctx, "sample values", POINT_BYTES * samples),
            eval_args: storage(ctx, "eval dispatch", 12),
            eval_dispatch: uniform(ctx, "eval dispatch", &dispatch(SAMPLES_PER_EVAL_GROUP)),
            backward_args: storage(ctx, "backward dispatch", 12),
            backward_dispatch: uniform(
                ctx,
                "backward dispatch",
                &dispatch(SAMPLES_PER_BACKWARD_GROUP),
            ),
            backward_work: uniform(
                ctx,
                "backward work",
                &WorkUniform {
                    at: plan.rays,
                    pad: [0; 3],
                },
            ),
            scan: PrefixSum::new(ctx, plan.rays + 1),
            plan,
        }
    }

    /// These buffers serve `plan`: the same rays, at least its capacity.
    fn serves(&self, plan: &ChunkPlan) -> bool {
        self.plan.first_ray == plan.first_ray
            && self.plan.rays == plan.rays
            && self.plan.capacity >= plan.capacity
    }
}

/// Frame-wide buffers, grown when a larger frame comes.
struct FrameBuffers {
    rays: u32,
    views: u32,
    chunks: u32,
    frame: wgpu::Buffer,
    cameras: wgpu::Buffer,
    color: wgpu::Buffer,
    depth: wgpu::Buffer,
    grad_color: wgpu::Buffer,
    /// Each chunk's marched total, copied out of its offsets for the host.
    totals: wgpu::Buffer,
}

impl FrameBuffers {
    fn new(ctx: &GpuContext, rays: u32, views: u32, chunks: u32) -> Self {
        let n = rays as u64;
        Self {
            rays,
            views,
            chunks,
            frame: uniform(ctx, "frame", &FrameUniform::zeroed()),
            cameras: storage(
                ctx,
                "cameras",
                views as u64 * std::mem::size_of::<CameraUniform>() as u64,
            ),
            color: storage(ctx, "color", 16 * n),
            depth: storage(ctx, "depth", 4 * n),
            grad_color: storage(ctx, "grad color", 16 * n),
            totals: storage(ctx, "chunk totals", 4 * chunks as u64),
        }
    }
}

/// The last render, kept for its backward pass.
pub(super) struct LastRender {
    pub frame: FrameUniform,
    /// Samples each chunk marched.
    pub totals: Vec<u64>,
}

/// Buffers kept across renders, and the last render's layout.
#[derive(Default)]
pub(super) struct FrameState {
    buffers: Option<FrameBuffers>,
    chunks: Vec<ChunkBuffers>,
    /// Samples per ray of the densest chunk of the last render (sizes the next one).
    densest: Option<f64>,
    pub last: Option<LastRender>,
    /// The backward's per-sample gradients, shared by the chunks in turn.
    sample_grads: Option<(wgpu::Buffer, u64)>,
}

impl FrameState {
    fn prepare_frame(&mut self, ctx: &GpuContext, rays: u32, views: u32, chunks: u32) {
        let fits = self
            .buffers
            .as_ref()
            .is_some_and(|b| b.rays >= rays && b.views >= views && b.chunks >= chunks);
        if !fits {
            let old = self.buffers.as_ref();
            self.buffers = Some(FrameBuffers::new(
                ctx,
                rays.max(old.map_or(0, |b| b.rays)),
                views.max(old.map_or(0, |b| b.views)),
                chunks.max(old.map_or(0, |b| b.chunks)),
            ));
        }
    }

    fn prepare_chunks(&mut self, ctx: &GpuContext, plan: &[ChunkPlan]) {
        self.chunks.truncate(plan.len());
        for (i, p) in plan.iter().enumerate() {
            match self.chunks.get(i) {
                Some(c) if c.serves(p) => {}
                Some(_) => self.chunks[i] = ChunkBuffers::new(ctx, *p),
                None => self.chunks.push(ChunkBuffers::new(ctx, *p)),
            }
        }
    }

    fn buffers(&self) -> &FrameBuffers {
        self.buffers
            .as_ref()
            .expect("frame buffers are prepared first")
    }

    /// Grows the gradient list to hold `samples`; returns it.
    fn reserve_sample_grads(&mut self, ctx: &GpuContext, samples: u64) -> &wgpu::Buffer {
        if self.sample_grads.as_ref().is_none_or(|(_, n)| *n < samples) {
            let n = samples.max(1);
            self.sample_grads = Some((storage(ctx, "sample grads", SAMPLE_GRAD_BYTES * n), n));
        }
        &self.sample_grads.as_ref().expect("allocated above").0
    }
}

impl GpuField {
    fn background(&self) -> [f32; 4] {
        match self.config.background {
            Background::Solid([r, g, b]) => [r, g, b, 0.0],
            Background::Neural { .. } => [0.0; 4],
        }
    }

    /// Renders `cameras` at width × height and keeps what the backward pass needs.
    pub fn render(
        &mut self,
        cameras: &[Camera],
        width: u32,
        height: u32,
        settings: &RenderSettings,
    ) -> Result<Rendered> {
        let rays = u32::try_from(cameras.len() as u64 * width as u64 * height as u64)
            .map_err(|_| Error::Input(format!("{} views of {width}×{height} pixels are more rays than one render takes (2³² − 1)", cameras.len())))?;
        let frame = FrameUniform {
            rays,
            width,
            height,
            samples_per_ray: settings.samples_per_ray,
            early_stop: settings.early_stop,
            jitter_seed: settings.stratified_seed.map_or(0, pcg_hash),
            stratified: u32::from(settings.stratified_seed.is_some()),
            use_occupancy: u32::from(self.use_occupancy),
            background: match settings.background {
                Some([r, g, b]) => [r, g, b, 1.0],
                None => self.background(),
            },
        };
        let camera_data: Vec<CameraUniform> = cameras
            .iter()
            .map(|c| CameraUniform {
                rows: std::array::from_fn(|r| std::array::from_fn(|k| c.c2w[(r, k)] as f32)),
                intrinsics: [c.focal(height) as f32, width as f32, height as f32, 0.0],
            })
            .collect();
        let ctx = self.ctx.clone();
        let max_samples = (ctx.max_binding / SAMPLE_GRAD_BYTES).min(MAX_CHUNK_SAMPLES);
        let worst = settings.samples_per_ray as f64;
        let mut per_ray = self.frames.densest.unwrap_or(worst / 4.0).min(worst);
        self.frames.last = None;
        loop {
            let plan = plan_chunks(rays, per_ray, max_samples);
            self.frames
                .prepare_frame(&ctx, rays, cameras.len() as u32, plan.len() as u32);
            self.frames.prepare_chunks(&ctx, &plan);
            let b = self.frames.buffers();
            ctx.queue
                .write_buffer(&b.frame, 0, bytemuck::bytes_of(&frame));
            ctx.queue
                .write_buffer(&b.cameras, 0, bytemuck::cast_slice(&camera_data));
            let mut launches = Launches::new(&ctx);
            for (i, c) in self.frames.chunks.iter().enumerate() {
                self.record_forward(&mut launches, b, c, i as u64);
            }
            launches.submit();
            let n = rays as u64;
            let data = self.readback.read(
                &ctx,
                &[
                    (&b.color, 0, 16 * n),
                    (&b.depth, 0, 4 * n),
                    (&b.totals, 0, 4 * plan.len() as u64),
                ],
            )?;
            let totals: Vec<u64> = values_of::<u32>(&data[2])
                .into_iter()
                .map(u64::from)
                .collect();
            let densest = self
                .frames
                .chunks
                .iter()
                .zip(&totals)
                .map(|(c, &t)| t as f64 / c.plan.rays as f64)
                .fold(0.0, f64::max);
            let overflow = self
                .frames
                .chunks
                .iter()
                .zip(&totals)
                .any(|(c, &t)| t > c.plan.capacity as u64);
            self.frames.densest = Some(densest);
            if overflow {
                per_ray = densest.max(per_ray * HEADROOM).min(worst);
                continue;
            }
            self.frames.last = Some(LastRender { frame, totals });
            return Ok(Rendered {
                color: values_of(&data[0]),
                depth: values_of(&data[1]),
            });
        }
    }

    /// March, scan, march again writing, evaluate, composite: chunk `c`, the `index`-th.
    fn record_forward(
        &self,
        launches: &mut Launches,
        b: &FrameBuffers,
        c: &ChunkBuffers,
        index: u64,
    ) {
        let k = &self.kernels;
        let ray_groups = Groups::Grid(dispatch_size(c.plan.rays.div_ceil(64)));
        let march = [
            (0, &b.frame),
            (1, &b.cameras),
            (4, &self.occupancy_bits),
            (7, &c.offsets),
            (10, &c.uniform),
            (11, &c.points),
        ];
        launches.launch(&k.count_samples, &march, ray_groups);
        c.scan.record(&k.scan, launches, &c.offsets);
        launches.launch(&k.write_samples, &march, ray_groups);
        k.scan
            .record_dispatch_args(launches, &c.eval_dispatch, &c.offsets, &c.eval_args);
        launches.launch(
            &k.eval_samples,
            &[
                (2, &self.params),
                (3, &self.levels),
                (7, &c.offsets),
                (10, &c.uniform),
                (11, &c.points),
                (12, &c.values),
            ],
            Groups::Indirect(&c.eval_args),
        );
        launches.launch(
            &k.composite,
            &[
                (0, &b.frame),
                (1, &b.cameras),
                (2, &self.params),
                (5, &b.color),
                (6, &b.depth),
                (7, &c.offsets),
                (10, &c.uniform),
                (11, &c.points),
                (12, &c.values),
                (13, &c.used),
            ],
            ray_groups,
        );
        launches.copy(&c.offsets, 4 * c.plan.rays as u64, &b.totals, 4 * index, 4);
    }

    /// Records the backward of every chunk of the last render: the gradient list's layout
    /// (scan of the samples used), per-sample gradients, then the field's.
    pub(super) fn record_chunk_backwards(&mut self, launches: &mut Launches) {
        let ctx = self.ctx.clone();
        let largest = self
            .frames
            .chunks
            .iter()
            .map(|c| c.plan.capacity as u64)
            .max()
            .unwrap_or(0);
        let sample_grads = self.frames.reserve_sample_grads(&ctx, largest).clone();
        let sample_grads = &sample_grads;
        let frames = &self.frames;
        let b = frames.buffers();
        let k = &self.kernels;
        for c in &frames.chunks {
            launches.copy(&c.used, 0, &c.grad_offsets, 0, 4 * (c.plan.rays as u64 + 1));
            c.scan.record(&k.scan, launches, &c.grad_offsets);
            launches.launch(
                &k.composite_backward,
                &[
                    (0, &b.frame),
                    (1, &b.cameras),
                    (2, &self.params),
                    (7, &c.offsets),
                    (8, &b.grad_color),
                    (9, sample_grads),
                    (10, &c.uniform),
                    (11, &c.points),
                    (12, &c.values),
                    (13, &c.used),
                    (14, &c.grad_offsets),
                ],
                Groups::Grid(dispatch_size(c.plan.rays.div_ceil(64))),
            );
            k.scan.record_dispatch_args(
                launches,
                &c.backward_dispatch,
                &c.grad_offsets,
                &c.backward_args,
            );
            launches.launch(
                &k.field_backward,
                &[
                    (0, &c.backward_work),
                    (1, &self.params),
                    (2, &self.levels),
                    (3, sample_grads),
                    (4, &self.grads),
                    (5, &c.grad_offsets),
                ],
                Groups::Indirect(&c.backward_args),
            );
        }
    }

    /// The frame buffers of the last render: frame uniform, cameras, colour and the gradient
    /// input.
    pub(super) fn frame_buffers(&self) -> [&wgpu::Buffer; 4] {
        let b = self.frames.buffers();
        [&b.frame, &b.cameras, &b.color, &b.grad_color]
    }

    pub(super) fn last_render(&self) -> Result<&LastRender> {
        self.frames.last.as_ref().ok_or_else(|| {
            Error::Gpu(
                "nothing rendered yet: backward passes and sample counts follow a render".into(),
            )
        })
    }

    /// How the last render split its rays.
    pub fn last_chunks(&self) -> Result<Vec<ChunkPlan>> {
        self.last_render()?;
        Ok(self.frames.chunks.iter().map(|c| c.plan).collect())
    }

    /// The field samples each ray of the last render composited (up to early termination).
    pub fn last_sample_counts(&self) -> Result<Vec<u32>> {
        self.last_render()?;
        let ranges: Vec<_> = self
            .frames
            .chunks
            .iter()
            .map(|c| (&c.used, 0, 4 * c.plan.rays as u64))
            .collect();
        Ok(download_ranges(&self.ctx, &ranges)?
            .iter()
            .flat_map(|d| values_of::<u32>(d))
            .collect())
    }

    /// Every sample the last render marched, per ray: (position, t) in the order the ray
    /// composited them, read from the ray's own slots of the packed list.
    pub fn last_marched_samples(&self) -> Result<Vec<Vec<[f32; 4]>>> {
        let last = self.last_render()?;
        let chunks = &self.frames.chunks;
        let ranges: Vec<_> = chunks
            .iter()
            .zip(&last.totals)
            .flat_map(|(c, &total)| {
                [
                    (&c.offsets, 0, 4 * (c.plan.rays as u64 + 1)),
                    (&c.points, 0, POINT_BYTES * total),
                ]
            })
            .collect();
        let data = download_ranges(&self.ctx, &ranges)?;
        let mut out = Vec::with_capacity(last.frame.rays as usize);
        for (c, pair) in chunks.iter().zip(data.chunks(2)) {
            let offsets: Vec<u32> = values_of(&pair[0]);
            let points: Vec<[f32; 4]> = values_of(&pair[1]);
            for r in 0..c.plan.rays as usize {
                out.push(points[offsets[r] as usize..offsets[r + 1] as usize].to_vec());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_ray_once_within_the_sample_limit() {
        for (rays, per_ray, max) in [(1000, 10.0, 4000), (7, 500.0, 1 << 20), (65_536, 0.0, 1000)] {
            let plan = plan_chunks(rays, per_ray, max);
            let mut next = 0;
            for c in &plan {
                assert_eq!(c.first_ray, next, "{plan:?}");
                assert!(c.rays > 0 && c.capacity as u64 <= max, "{plan:?}");
                assert!(
                    c.capacity as f64 >= (c.rays as f64 * per_ray).min(max as f64 - SLACK as f64),
                    "{plan:?}"
                );
                next += c.rays;
            }
            assert_eq!(next, rays);
        }
        assert_eq!(plan_chunks(1000, 10.0, 4000).len(), 4);
        assert_eq!(plan_chunks(1000, 10.0, 1 << 20).len(), 1);
    }
}
