//! The whole 3D half learns: a field fitted by L2 on colour and opacity through the GPU
//! renderer, its backward pass and AdamW reproduces a known object (a red sphere and a blue
//! box, ray-cast analytically) from views it was not trained on.

use dream3d::camera::{Camera, Ray};
use dream3d::field::{FieldConfig, RenderSettings};
use dream3d::gpu::{AdamConfig, GpuContext, GpuField};
use rand::{Rng, SeedableRng};
use std::sync::Arc;

const SIZE: u32 = 64;

/// Distance along `ray` to the sphere (centre, radius), if hit.
fn hit_sphere(ray: &Ray, centre: [f64; 3], radius: f64) -> Option<f64> {
    let o: Vec<f64> = (0..3).map(|a| ray.origin[a] - centre[a]).collect();
    let b: f64 = (0..3).map(|a| o[a] * ray.dir[a]).sum();
    let c: f64 = (0..3).map(|a| o[a] * o[a]).sum::<f64>() - radius * radius;
    let disc = b * b - c;
    (disc > 0.0).then(|| -b - disc.sqrt()).filter(|t| *t > 0.0)
}

/// Distance along `ray` to the axis-aligned box (centre, half size), if hit (slab method).
fn hit_box(ray: &Ray, centre: [f64; 3], half: f64) -> Option<f64> {
    let (mut near, mut far) = (f64::NEG_INFINITY, f64::INFINITY);
    for ((c, o), d) in centre.iter().zip(ray.origin).zip(ray.dir) {
        let (t0, t1) = ((c - half - o) / d, (c + half - o) / d);
        near = near.max(t0.min(t1));
        far = far.min(t0.max(t1));
    }
    (near < far && near > 0.0).then_some(near)
}

/// The analytic scene along `ray`: colour over a white background, and opacity.
fn scene(ray: &Ray) -> [f32; 4] {
    let sphere = hit_sphere(ray, [0.2, 0.1, 0.0], 0.3).map(|t| (t, [0.9, 0.2, 0.15, 1.0]));
    let cube = hit_box(ray, [-0.25, -0.15, 0.05], 0.2).map(|t| (t, [0.1, 0.3, 0.85, 1.0]));
    match (sphere, cube) {
        (Some(a), Some(b)) => {
            if a.0 < b.0 {
                a.1
            } else {
                b.1
            }
        }
        (Some(a), None) | (None, Some(a)) => a.1,
        (None, None) => [1.0, 1.0, 1.0, 0.0],
    }
}

fn view(elevation: f64, azimuth: f64) -> (Camera, Vec<[f32; 4]>) {
    let cam = Camera::orbit(elevation, azimuth, 2.2, 40.0);
    let image = (0..SIZE)
        .flat_map(|y| (0..SIZE).map(move |x| (x, y)))
        .map(|(x, y)| scene(&cam.ray(SIZE, SIZE, x, y)))
        .collect();
    (cam, image)
}

/// PSNR of the colours.
fn psnr(rendered: &[[f32; 4]], target: &[[f32; 4]]) -> f64 {
    let mse = rendered
        .iter()
        .zip(target)
        .map(|(r, t)| (0..3).map(|c| ((r[c] - t[c]) as f64).powi(2)).sum::<f64>())
        .sum::<f64>()
        / (3 * target.len()) as f64;
    -10.0 * mse.log10()
}

#[test]
fn a_known_object_is_recovered_from_its_views() {
    let train: Vec<_> = (0..20)
        .map(|i| view([5.0, 25.0, -10.0, 40.0][i % 4], i as f64 * 18.0))
        .collect();
    let held_out = [view(15.0, 45.0), view(-5.0, 250.0)];
    let config = FieldConfig {
        levels: 8,
        log2_table_size: 15,
        base_resolution: 8,
        per_level_scale: 1.5,
        hidden: 16,
        ..FieldConfig::default()
    };
    let ctx = Arc::new(GpuContext::new().expect("a wgpu adapter"));
    let mut field = GpuField::new(ctx, config.clone(), &config.init_params(0)).unwrap();
    let adam = AdamConfig::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let steps = 800;
    let start = std::time::Instant::now();
    for step in 0..steps {
        let settings = RenderSettings {
            samples_per_ray: 64,
            early_stop: 1e-4,
            stratified_seed: Some(step),
        };
        if step >= 32 && step % 16 == 0 {
            field.update_occupancy(step, 64, 0.95, 0.01).unwrap();
        }
        let picked: Vec<usize> = (0..1).map(|_| rng.random_range(0..train.len())).collect();
        let cams: Vec<Camera> = picked.iter().map(|&i| train[i].0).collect();
        let out = field.render(&cams, SIZE, SIZE, &settings).unwrap();
        let target: Vec<[f32; 4]> = picked
            .iter()
            .flat_map(|&i| train[i].1.iter().copied())
            .collect();
        let n = target.len() as f32;
        let grad: Vec<[f32; 4]> = out
            .color
            .iter()
            .zip(&target)
            .map(|(r, t)| std::array::from_fn(|c| 2.0 * (r[c] - t[c]) / n))
            .collect();
        field.backward(&grad).unwrap();
        field.adam_step(&adam).unwrap();
        if step % 100 == 0 {
            eprintln!(
                "step {step}: training PSNR {:.2} dB, {:.1} s",
                psnr(&out.color, &target),
                start.elapsed().as_secs_f64()
            );
        }
    }
    let eval = RenderSettings {
        samples_per_ray: 64,
        ..RenderSettings::default()
    };
    for (cam, target) in &held_out {
        let out = field
            .render(std::slice::from_ref(cam), SIZE, SIZE, &eval)
            .unwrap();
        let p = psnr(&out.color, target);
        eprintln!("held-out view PSNR {p:.2} dB");
        assert!(p >= 25.0, "held-out PSNR {p:.2} dB < 25 dB");
    }
}
