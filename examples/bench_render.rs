//! Rendered field samples per second, forward and forward + backward, at 4 × 256² rays and 512
//! samples per ray, for the wgpu renderer on this machine's adapter against the f64 reference
//! on every core (on a subset of the rays; it is far slower). The full-size field is first
//! trained for a while to reproduce a ray-cast sphere, so its occupancy grid and densities are
//! those of a trained object (empty space skipped, rays stopping early inside it), not those of
//! the initial blob.
//!
//! Samples are those the rays composited (up to early termination), as the reference counts
//! them. With `--peak-gbs` (the device's measured copy bandwidth, GB/s) it also prints the
//! fraction of it the renderer reaches, counting the hash-grid bytes each sample must touch:
//! every level's 8 corners' features (forward), again when the backward recomputes the
//! encoding, and read + write of their gradients.
//!
//!     cargo run --release --example bench_render -- [--train-steps 150] [--reference-stride 64]
//!         [--peak-gbs 3000]

use anyhow::Result;
use dream3d::camera::{Camera, CameraRanges, Ray};
use dream3d::field::reference::{backward_rays, render_rays, ReferenceField};
use dream3d::field::{FieldConfig, RenderSettings};
use dream3d::gpu::{AdamConfig, GpuContext, GpuField};
use rand::SeedableRng;
use std::sync::Arc;
use std::time::Instant;

mod common;

const VIEWS: usize = 4;
const SIZE: u32 = 256;
const TARGET_RADIUS: f64 = 0.4;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let train_steps: u64 = common::arg(&args, "--train-steps").map_or(Ok(150), |s| s.parse())?;
    let stride: usize = common::arg(&args, "--reference-stride").map_or(Ok(64), |s| s.parse())?;
    let peak_gbs: Option<f64> = common::arg(&args, "--peak-gbs")
        .map(|s| s.parse())
        .transpose()?;
    let ctx = Arc::new(GpuContext::new()?);
    let config = FieldConfig::default();
    let mut field = GpuField::new(ctx.clone(), config.clone(), &config.init_params(0))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let cameras = CameraRanges::default();

    let start = Instant::now();
    for step in 0..train_steps {
        let views = cameras.sample(&mut rng);
        let size = 64;
        let settings = RenderSettings {
            stratified_seed: Some(step as u32),
            ..RenderSettings::default()
        };
        let out = field.render(&views, size, size, &settings)?;
        let target = target_colors(&views, size);
        let n = out.color.len() as f32;
        let grad: Vec<[f32; 4]> = out
            .color
            .iter()
            .zip(&target)
            .map(|(c, t)| {
                std::array::from_fn(|k| if k < 3 { 2.0 * (c[k] - t[k]) / n } else { 0.0 })
            })
            .collect();
        field.backward(&grad)?;
        field.adam_step(&AdamConfig::default())?;
        if step % 16 == 0 {
            field.update_occupancy(step as u32, 512, None, 0.95, 0.01)?;
        }
        if (step + 1) % 25 == 0 {
            eprintln!(
                "trained {} steps, {:.0} s",
                step + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "trained {train_steps} steps at 4 × 64² in {:.1} s; occupied cells {:.1} %",
        start.elapsed().as_secs_f64(),
        100.0 * field.occupancy.occupied_fraction()
    );

    let views = cameras.sample(&mut rng);
    let settings = RenderSettings {
        stratified_seed: Some(1),
        ..RenderSettings::default()
    };
    let mut forward = vec![];
    let mut both = vec![];
    let mut samples = 0u64;
    let mut marched = 0u64;
    for _ in 0..3 {
        let start = Instant::now();
        let out = field.render(&views, SIZE, SIZE, &settings)?;
        forward.push(start.elapsed().as_secs_f64());
        samples = field.last_sample_counts()?.iter().map(|&c| c as u64).sum();
        marched = field
            .last_marched_samples()?
            .iter()
            .map(|s| s.len() as u64)
            .sum();
        let grad = vec![[1e-3f32, -1e-3, 1e-3, 0.0]; out.color.len()];
        let start = Instant::now();
        field.render(&views, SIZE, SIZE, &settings)?;
        field.backward(&grad)?;
        both.push(start.elapsed().as_secs_f64());
        field.reset_optimizer();
    }
    let gpu_forward = median(&forward);
    let gpu_both = median(&both);
    let rays = VIEWS as u64 * (SIZE * SIZE) as u64;

    // The reference on every `stride`-th ray.
    let params: Vec<f64> = field.params()?.iter().map(|&p| p as f64).collect();
    let reference = ReferenceField::new(&config, &params);
    let all: Vec<Ray> = views
        .iter()
        .flat_map(|c| (0..SIZE).flat_map(move |y| (0..SIZE).map(move |x| c.ray(SIZE, SIZE, x, y))))
        .collect();
    let subset: Vec<Ray> = all.iter().step_by(stride).copied().collect();
    let occupancy = Some(&field.occupancy);
    let start = Instant::now();
    let outputs = render_rays(&reference, &subset, &settings, occupancy);
    let reference_forward = start.elapsed().as_secs_f64();
    let reference_samples: u64 = outputs.iter().map(|o| o.samples as u64).sum();
    let grad = vec![[1e-3, -1e-3, 1e-3, 0.0]; subset.len()];
    let start = Instant::now();
    backward_rays(&reference, &subset, &settings, occupancy, &outputs, &grad);
    let reference_both = reference_forward + start.elapsed().as_secs_f64();

    let rate = |samples: u64, seconds: f64| samples as f64 / seconds / 1e6;
    println!(
        "{} rays, {:.1} samples per ray on average ({} in all) composited, {:.1} marched and evaluated",
        rays,
        samples as f64 / rays as f64,
        samples,
        marched as f64 / rays as f64,
    );
    println!("| renderer | forward | forward + backward |");
    println!("|---|---|---|");
    println!(
        "| wgpu on {} | {:.2} M samples/s ({:.2} s) | {:.2} M samples/s ({:.2} s) |",
        ctx.describe(),
        rate(samples, gpu_forward),
        gpu_forward,
        rate(samples, gpu_both),
        gpu_both
    );
    println!(
        "| f64 reference, {} threads, every {stride}th ray | {:.3} M samples/s | {:.3} M samples/s |",
        rayon::current_num_threads(),
        rate(reference_samples, reference_forward),
        rate(reference_samples, reference_both)
    );
    println!(
        "wgpu / reference: forward {:.1}×, forward + backward {:.1}×",
        rate(samples, gpu_forward) / rate(reference_samples, reference_forward),
        rate(samples, gpu_both) / rate(reference_samples, reference_both)
    );
    if let Some(peak) = peak_gbs {
        // f32 features: every level's 8 corners, per sample.
        let corners = (config.levels * 8 * config.features_per_level * 4) as f64;
        for (pass, bytes, seconds) in [
            ("forward", corners, gpu_forward),
            ("forward + backward", 4.0 * corners, gpu_both),
        ] {
            let gbs = samples as f64 * bytes / seconds / 1e9;
            println!(
                "{pass}: {bytes:.0} B per sample, {gbs:.0} GB/s touched = {:.1} % of {peak:.0} GB/s",
                100.0 * gbs / peak
            );
        }
    }
    Ok(())
}

/// The ray-cast target: a sphere coloured by its normal, on the field's default white
/// background.
fn target_colors(views: &[Camera], size: u32) -> Vec<[f32; 3]> {
    views
        .iter()
        .flat_map(|c| (0..size).flat_map(move |y| (0..size).map(move |x| c.ray(size, size, x, y))))
        .map(|ray| {
            let b = (0..3).map(|k| ray.origin[k] * ray.dir[k]).sum::<f64>();
            let c = (0..3).map(|k| ray.origin[k] * ray.origin[k]).sum::<f64>()
                - TARGET_RADIUS * TARGET_RADIUS;
            let disc = b * b - c;
            if disc <= 0.0 {
                return [1.0; 3];
            }
            let p = ray.at(-b - disc.sqrt());
            p.map(|x| (0.5 + 0.5 * x / TARGET_RADIUS) as f32)
        })
        .collect()
}

fn median(times: &[f64]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
