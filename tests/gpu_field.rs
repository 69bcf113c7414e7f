//! The wgpu field, renderer, backward pass and optimiser against the f64 reference, the
//! reference against finite differences, and a reconstruction of a known object. Runs on any
//! adapter (lavapipe in CI); every buffer starts as noise.

use dream3d::camera::{Camera, CameraRanges, Ray};
use dream3d::field::reference::{
    backward_composited, backward_ray, backward_rays, composite, render_ray, render_rays, samples,
    RayOutput, ReferenceField, Sample,
};
use dream3d::field::{Background, FieldConfig, OccupancyGrid, RenderSettings};
use dream3d::gpu::{AdamConfig, GpuContext, GpuField};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::sync::Arc;

/// A small field that exercises every code path: dense and hashed levels, both MLPs.
fn small_config() -> FieldConfig {
    FieldConfig {
        levels: 4,
        features_per_level: 2,
        log2_table_size: 10,
        base_resolution: 4,
        per_level_scale: 2.0,
        hidden: 16,
        ..FieldConfig::default()
    }
}

/// Parameters large enough that the field is far from empty and every term matters.
fn random_params(config: &FieldConfig, seed: u64) -> Vec<f32> {
    let layout = config.layout();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..layout.len)
        .map(|i| {
            if i < layout.grid_params() {
                rng.random_range(-1.0..1.0)
            } else {
                rng.random_range(-0.5..0.5)
            }
        })
        .collect()
}

/// As [`random_params`], with the hash levels' amplitude falling by `decay` per level, as in a
/// trained field whose fine levels hold small residuals.
fn decaying_params(config: &FieldConfig, seed: u64, decay: f64) -> Vec<f32> {
    let mut params = random_params(config, seed);
    let f = config.features_per_level as usize;
    for (l, level) in config.layout().levels.iter().enumerate() {
        let start = level.offset as usize * f;
        for p in &mut params[start..start + level.size as usize * f] {
            *p *= decay.powi(l as i32) as f32;
        }
    }
    params
}

fn context() -> Arc<GpuContext> {
    context_with_optional_features(true)
}

/// With `optional` false the kernels use their fallbacks for devices without f32 atomics
/// (a compare-exchange loop) and without subgroup operations (sums in workgroup memory).
fn context_with_optional_features(optional: bool) -> Arc<GpuContext> {
    let mut ctx =
        GpuContext::new().expect("a wgpu adapter (lavapipe: apt install mesa-vulkan-drivers)");
    ctx.poison_buffers = true;
    if !optional {
        ctx.float_atomics = false;
        ctx.subgroup_min_size = None;
    }
    eprintln!("adapter: {}", ctx.describe());
    Arc::new(ctx)
}

fn cameras() -> Vec<Camera> {
    vec![
        Camera::orbit(15.0, 30.0, 2.5, 45.0),
        Camera::orbit(-20.0, 200.0, 2.0, 60.0),
    ]
}

const W: u32 = 12;
const H: u32 = 10;

fn rays(cams: &[Camera]) -> Vec<Ray> {
    cams.iter()
        .flat_map(|c| (0..H).flat_map(move |y| (0..W).map(move |x| c.ray(W, H, x, y))))
        .collect()
}

fn settings() -> RenderSettings {
    RenderSettings {
        samples_per_ray: 48,
        early_stop: 1e-4,
        stratified_seed: Some(7),
        background: None,
    }
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// max |a − b| / max |b|.
fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Samples nearer than this to a ReLU kink (a hidden unit's |pre-activation| relative to the
/// magnitude of its terms; see `FieldSample::kink_margin`) may take the other side of it in
/// f32, and each such sample moves its unit's whole term (seen: a pre-activation of 5.9e-7 in
/// a 512-sample ray cost its density W1 entry 1.7 %). f32 rounds a 32-term dot product to
/// ~32·2⁻²⁴ ≈ 2e-6 of its terms' magnitude.
const KINK_MARGIN: f64 = 2e-5;

/// `grad_color` with the rays that composite a sample within [`KINK_MARGIN`] of a kink left
/// out (zeroed), so that f32 and f64 differentiate the same function; the share left out.
fn away_from_kinks(
    reference: &ReferenceField,
    marched: &[Vec<Sample>],
    outputs: &[RayOutput],
    grad_color: &mut [[f32; 4]],
) -> f64 {
    let near: Vec<bool> = marched
        .par_iter()
        .zip(outputs)
        .map(|(m, out)| {
            m.iter()
                .take(out.samples as usize)
                .any(|(_, _, p)| reference.eval(*p).kink_margin < KINK_MARGIN)
        })
        .collect();
    for (g, _) in grad_color.iter_mut().zip(&near).filter(|(_, n)| **n) {
        *g = [0.0; 4];
    }
    near.iter().filter(|&&n| n).count() as f64 / marched.len() as f64
}

/// Every ray marched the reference's samples: the same count, each (position, t) within 1e-5
/// (with poisoned buffers, a sample another ray wrote into these slots would not be).
fn assert_same_march(got: &[Vec<[f32; 4]>], want: &[Vec<Sample>], what: &str) {
    let mut largest = 0f64;
    for (i, (got, want)) in got.iter().zip(want).enumerate() {
        assert_eq!(got.len(), want.len(), "{what}: ray {i}'s samples");
        for (k, (p, (t, _, x))) in got.iter().zip(want).enumerate() {
            let off = (0..3).fold((p[3] as f64 - t).abs(), |m, a| {
                m.max((p[a] as f64 - x[a]).abs())
            });
            assert!(
                off < 1e-5,
                "{what}: ray {i} sample {k} is {p:?}, not ({x:?}, {t})"
            );
            largest = largest.max(off);
        }
    }
    eprintln!("{what}: largest position error {largest:.1e}");
}

/// Each ray's samples as the reference marches them.
fn reference_march(
    reference: &ReferenceField,
    rays: &[Ray],
    s: &RenderSettings,
    occupancy: Option<&OccupancyGrid>,
) -> Vec<Vec<Sample>> {
    rays.par_iter()
        .enumerate()
        .map(|(i, r)| samples(reference, r, s, occupancy, i as u32))
        .collect()
}

/// Gradient tolerance of the MLPs and the background, relative to a group's largest entry.
const GROUP_TOLERANCE: f64 = 2e-5;

/// The field's parameter groups (each hash-grid level, each MLP matrix, the background) and
/// their tolerances. A level's is wider by its resolution: the kernels compute a sample's place
/// in the grid in f32, which rounds it to ~resolution·2⁻²⁴ of a cell (10⁻⁴ at the 2¹¹-cell
/// levels), and the trilinear weights and their gradients move with it.
fn parameter_groups(config: &FieldConfig) -> Vec<(String, std::ops::Range<usize>, f64)> {
    let l = config.layout();
    let f = config.features_per_level as usize;
    let mut groups: Vec<(String, std::ops::Range<usize>, f64)> = l
        .levels
        .iter()
        .enumerate()
        .map(|(i, level)| {
            let start = level.offset as usize * f;
            let rounding = level.resolution as f64 * 2f64.powi(-24);
            (
                format!("hash level {i}"),
                start..start + level.size as usize * f,
                GROUP_TOLERANCE + 8.0 * rounding,
            )
        })
        .collect();
    let at = |v: u32| v as usize;
    groups.extend(
        [
            ("density W1", at(l.density_w1)..at(l.density_w2)),
            ("density W2", at(l.density_w2)..at(l.albedo_w1)),
            ("albedo W1", at(l.albedo_w1)..at(l.albedo_w2)),
            ("albedo W2", at(l.albedo_w2)..at(l.background_w1)),
            ("background", at(l.background_w1)..at(l.len)),
        ]
        .map(|(name, range)| (name.to_string(), range, GROUP_TOLERANCE)),
    );
    groups.retain(|(_, r, _)| !r.is_empty());
    groups
}

/// Gradients within each parameter group's tolerance of the reference, relative to that
/// group's largest reference entry (a group the reference leaves at zero must stay at zero).
fn assert_groups_close(config: &FieldConfig, got: &[f64], want: &[f64], what: &str) {
    let errors: Vec<(String, f64, f64)> = parameter_groups(config)
        .into_iter()
        .map(|(name, range, tolerance)| {
            let (g, w) = (&got[range.clone()], &want[range]);
            let scale = w.iter().fold(0f64, |m, v| m.max(v.abs()));
            let diff = g.iter().zip(w).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
            (
                name,
                if scale > 0.0 { diff / scale } else { diff },
                tolerance,
            )
        })
        .collect();
    let report: Vec<String> = errors
        .iter()
        .map(|(n, e, _)| format!("{n} {e:.1e}"))
        .collect();
    eprintln!("{what}: {}", report.join(", "));
    for (name, err, tolerance) in errors {
        assert!(
            err < tolerance,
            "{what}: {name} gradient relative error {err:.2e} (tolerance {tolerance:.1e})"
        );
    }
}

#[test]
fn gpu_forward_and_gradients_match_the_reference() {
    check_random_field(small_config(), settings());
}

#[test]
fn gpu_neural_background_matches_the_reference() {
    let config = FieldConfig {
        background: Background::neural(),
        ..small_config()
    };
    check_random_field(config.clone(), settings());
    // Training's random-colour augmentation: a solid colour instead, and no gradient for the
    // background network.
    let augmented = RenderSettings {
        background: Some([0.2, 0.5, 0.9]),
        ..settings()
    };
    check_random_field(config, augmented);
}

/// The sizes `generate` trains (16 levels, 2¹⁹-entry tables, 64 hidden units, 512 samples per
/// ray), seen by a random batch of training cameras. On lavapipe this needs the kernels to stay
/// below its 65 535 loop iterations per invocation (past them, rays silently stopped at 30
/// samples). The levels' amplitudes halve level by level, as a trained field's fine levels hold
/// small residuals: full-amplitude noise 4096 cells across puts most samples within f32
/// rounding of some ReLU kink (over 45 % of the rays were left out even at 2e-5).
#[test]
fn default_size_field_matches_the_reference_from_training_cameras() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let cams = CameraRanges::default().sample(&mut rng);
    let s = RenderSettings {
        samples_per_ray: 512,
        ..settings()
    };
    let config = FieldConfig::default();
    let params = decaying_params(&config, 1, 0.5);
    check_against_reference(config, s, &cams, Positions::Gpu, &params);
}

/// Fewer hidden units than the backward kernel's tile of samples (each thread loads several),
/// and an encoding width that is not a multiple of four.
#[test]
fn narrow_mlps_match_the_reference() {
    let config = FieldConfig {
        levels: 3,
        hidden: 8,
        ..small_config()
    };
    check_random_field(config, settings());
}

/// [`check_against_reference`] on [`random_params`], seen by [`cameras`], the whole pipeline.
fn check_random_field(config: FieldConfig, s: RenderSettings) {
    let params = random_params(&config, 1);
    check_against_reference(config, s, &cameras(), Positions::Reference, &params);
}

/// Where the reference takes its sample positions from.
#[derive(Clone, Copy, PartialEq)]
enum Positions {
    /// Its own f64 march: the whole pipeline is compared.
    Reference,
    /// The GPU's f32 march, once that is checked against its own (within 1e-5): at the finest
    /// levels (4096 cells across) an f32 position's rounding alone moves the trilinear weights
    /// by ~10⁻⁴, which the comparison of the compositing and backward must not see.
    Gpu,
}

/// Forward within 1e-4 of the reference relative to its largest magnitude, gradients within
/// each parameter group's tolerance; a repeatable backward; the same with the fallbacks for
/// devices without f32 atomics or subgroups.
fn check_against_reference(
    config: FieldConfig,
    s: RenderSettings,
    cams: &[Camera],
    positions: Positions,
    params: &[f32],
) {
    let ctx = context();
    let mut field = GpuField::new(ctx, config.clone(), params).unwrap();
    let got = field.render(cams, W, H, &s).unwrap();

    let p64 = to_f64(params);
    let reference = ReferenceField::new(&config, &p64);
    let all_rays = rays(cams);
    let marched = reference_march(&reference, &all_rays, &s, None);
    let gpu_marched = field.last_marched_samples().unwrap();
    assert_same_march(&gpu_marched, &marched, "march");
    let marched: Vec<Vec<Sample>> = match positions {
        Positions::Reference => marched,
        Positions::Gpu => gpu_marched
            .iter()
            .zip(&marched)
            .map(|(got, want)| {
                got.iter()
                    .zip(want)
                    .map(|(p, (_, delta, _))| {
                        (p[3] as f64, *delta, [p[0], p[1], p[2]].map(f64::from))
                    })
                    .collect()
            })
            .collect(),
    };
    let want: Vec<RayOutput> = all_rays
        .par_iter()
        .zip(&marched)
        .map(|(r, m)| composite(&reference, r, &s, m))
        .collect();
    let want_flat: Vec<f64> = want
        .iter()
        .flat_map(|o| [o.rgb[0], o.rgb[1], o.rgb[2], o.opacity, o.depth])
        .collect();
    let got_flat: Vec<f64> = got
        .color
        .iter()
        .zip(&got.depth)
        .flat_map(|(c, d)| [c[0], c[1], c[2], c[3], *d].map(f64::from))
        .collect();
    assert!(
        want.iter().any(|o| o.opacity > 0.5) && want.iter().any(|o| o.opacity < 0.5),
        "a mixed scene"
    );
    let err = relative_error(&got_flat, &want_flat);
    eprintln!("forward: relative error {err:.2e}");
    assert!(err < 1e-4, "forward relative error {err}");
    let counts: Vec<u32> = want.iter().map(|o| o.samples).collect();
    assert_eq!(
        field.last_sample_counts().unwrap(),
        counts,
        "samples per ray"
    );

    // Gradients of Σ g·(rgb, opacity) for random g.
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut grad_color: Vec<[f32; 4]> = (0..got.color.len())
        .map(|_| std::array::from_fn(|_| rng.random_range(-1.0..1.0)))
        .collect();
    let left_out = away_from_kinks(&reference, &marched, &want, &mut grad_color);
    eprintln!("rays left out near a ReLU kink: {:.1} %", 100.0 * left_out);
    field.reset_optimizer();
    field.backward(&grad_color).unwrap();
    let got_grads = to_f64(&field.grads().unwrap());
    let g64: Vec<[f64; 4]> = grad_color.iter().map(|g| g.map(f64::from)).collect();
    let want_grads = backward_composited(&reference, &all_rays, &s, &marched, &want, &g64);
    assert_groups_close(&config, &got_grads, &want_grads, "gradients");

    // Only the order of the atomic additions may differ between two backward passes.
    field.reset_optimizer();
    field.backward(&grad_color).unwrap();
    let again = to_f64(&field.grads().unwrap());
    let err = relative_error(&again, &got_grads);
    eprintln!("gradients of a second pass: relative difference {err:.2e}");
    assert!(err < 1e-6, "backward is not repeatable: {err}");

    // The fallbacks for devices without f32 atomics or subgroups give the same gradients.
    let mut fallback = GpuField::new(
        context_with_optional_features(false),
        config.clone(),
        params,
    )
    .unwrap();
    fallback.render(cams, W, H, &s).unwrap();
    fallback.backward(&grad_color).unwrap();
    assert_groups_close(
        &config,
        &to_f64(&fallback.grads().unwrap()),
        &want_grads,
        "gradients without f32 atomics or subgroups",
    );
}

/// A device whose storage bindings hold fewer samples than a render has: the frame is rendered
/// in chunks of rays and the backward pass adds up the same gradients.
#[test]
fn backward_in_chunks_matches_the_reference() {
    let config = small_config();
    let params = random_params(&config, 13);
    let mut ctx =
        GpuContext::new().expect("a wgpu adapter (lavapipe: apt install mesa-vulkan-drivers)");
    ctx.poison_buffers = true;
    ctx.max_binding = 64 * 1024;
    let mut field = GpuField::new(Arc::new(ctx), config.clone(), &params).unwrap();
    let cams = cameras();
    let s = settings();
    let out = field.render(&cams, W, H, &s).unwrap();
    let chunks = field.last_chunks().unwrap();
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    let p64 = to_f64(&params);
    let reference = ReferenceField::new(&config, &p64);
    let all_rays = rays(&cams);
    let want = render_rays(&reference, &all_rays, &s, None);
    let mut g: Vec<[f32; 4]> = out.color.iter().map(|c| [c[2], 0.3, -c[0], c[3]]).collect();
    away_from_kinks(
        &reference,
        &reference_march(&reference, &all_rays, &s, None),
        &want,
        &mut g,
    );
    field.backward(&g).unwrap();
    let g64: Vec<[f64; 4]> = g.iter().map(|g| g.map(f64::from)).collect();
    let want_grads = backward_rays(&reference, &all_rays, &s, None, &want, &g64);
    let got = to_f64(&field.grads().unwrap());
    assert_groups_close(&config, &got, &want_grads, "gradients in chunks");
}

/// The packed layout against the per-ray specification (the reference marches and composites one
/// ray at a time): rays that miss the box (no samples), a ray down the box's diagonal (every
/// step), one chunk of more rays than a scan block, and many chunks. Buffers start as noise and
/// each ray's slots must hold exactly its own samples, so a write past a ray's slots shows.
#[test]
fn packed_samples_match_the_per_ray_reference() {
    let config = small_config();
    let params = random_params(&config, 21);
    let p64 = to_f64(&params);
    let reference = ReferenceField::new(&config, &p64);
    // Odd sizes put a pixel centre on the optical axis: the first camera's looks down the
    // diagonal from (1, 1, 1). The wide second view has corners that miss the box.
    let (w, h) = (41, 33);
    let cams = vec![
        Camera::orbit(35.264_389_682_754_654, 45.0, 3.0, 30.0),
        Camera::orbit(-10.0, 120.0, 1.8, 100.0),
    ];
    let all_rays: Vec<Ray> = cams
        .iter()
        .flat_map(|c| (0..h).flat_map(move |y| (0..w).map(move |x| c.ray(w, h, x, y))))
        .collect();
    // No early stop: compositing uses every marched sample, so the whole march is compared.
    let s = RenderSettings {
        early_stop: 0.0,
        ..settings()
    };
    let want = render_rays(&reference, &all_rays, &s, None);
    let counts: Vec<u32> = want.iter().map(|o| o.samples).collect();
    assert!(counts.contains(&0), "a ray misses the box");
    let diagonal = counts[(h / 2 * w + w / 2) as usize];
    assert_eq!(
        diagonal, s.samples_per_ray,
        "the diagonal ray takes every step"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(22);
    let mut g: Vec<[f32; 4]> = (0..all_rays.len())
        .map(|_| std::array::from_fn(|_| rng.random_range(-1.0..1.0)))
        .collect();
    away_from_kinks(
        &reference,
        &reference_march(&reference, &all_rays, &s, None),
        &want,
        &mut g,
    );
    let g64: Vec<[f64; 4]> = g.iter().map(|g| g.map(f64::from)).collect();
    let want_grads = backward_rays(&reference, &all_rays, &s, None, &want, &g64);
    let want_color: Vec<f64> = want
        .iter()
        .flat_map(|o| [o.rgb[0], o.rgb[1], o.rgb[2], o.opacity, o.depth])
        .collect();

    for max_binding in [None, Some(48 * 1024)] {
        let mut ctx =
            GpuContext::new().expect("a wgpu adapter (lavapipe: apt install mesa-vulkan-drivers)");
        ctx.poison_buffers = true;
        if let Some(bytes) = max_binding {
            ctx.max_binding = bytes;
        }
        let mut field = GpuField::new(Arc::new(ctx), config.clone(), &params).unwrap();
        let out = field.render(&cams, w, h, &s).unwrap();
        let chunks = field.last_chunks().unwrap();
        match max_binding {
            None => assert!(
                chunks.len() == 1 && chunks[0].rays > 1024,
                "one chunk across scan blocks: {chunks:?}"
            ),
            Some(_) => assert!(chunks.len() >= 8, "many chunks: {chunks:?}"),
        }
        let what = format!("{} chunk(s)", chunks.len());
        assert_eq!(
            field.last_sample_counts().unwrap(),
            counts,
            "{what}: samples per ray"
        );
        let marched = field.last_marched_samples().unwrap();
        assert_same_march(
            &marched,
            &reference_march(&reference, &all_rays, &s, None),
            &what,
        );
        let got_color: Vec<f64> = out
            .color
            .iter()
            .zip(&out.depth)
            .flat_map(|(c, d)| [c[0], c[1], c[2], c[3], *d].map(f64::from))
            .collect();
        let err = relative_error(&got_color, &want_color);
        assert!(err < 1e-4, "{what}: forward relative error {err}");
        field.backward(&g).unwrap();
        let got = to_f64(&field.grads().unwrap());
        assert_groups_close(&config, &got, &want_grads, &what);
    }
}

#[test]
fn reference_gradients_match_finite_differences() {
    let config = FieldConfig {
        background: Background::neural(),
        ..small_config()
    };
    let params = to_f64(&random_params(&config, 3));
    let cams = cameras();
    // No early termination: it makes the rendered value a step function of the parameters.
    let s = RenderSettings {
        early_stop: 0.0,
        ..settings()
    };
    let all_rays = rays(&cams);
    let picked: Vec<(u32, Ray)> = all_rays
        .iter()
        .enumerate()
        .step_by(7)
        .map(|(i, r)| (i as u32, *r))
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let g: Vec<[f64; 4]> = picked
        .iter()
        .map(|_| std::array::from_fn(|_| rng.random_range(-1.0..1.0)))
        .collect();
    let loss = |p: &[f64]| -> f64 {
        let field = ReferenceField::new(&config, p);
        picked
            .iter()
            .zip(&g)
            .map(|((i, r), g)| {
                let o = render_ray(&field, r, &s, None, *i);
                g[0] * o.rgb[0] + g[1] * o.rgb[1] + g[2] * o.rgb[2] + g[3] * o.opacity
            })
            .sum()
    };
    let field = ReferenceField::new(&config, &params);
    let mut grads = vec![0.0; params.len()];
    for ((i, r), g) in picked.iter().zip(&g) {
        let out = render_ray(&field, r, &s, None, *i);
        backward_ray(
            &field,
            r,
            &s,
            None,
            *i,
            &out,
            [g[0], g[1], g[2]],
            g[3],
            &mut grads,
        );
    }
    // The largest grid gradients, and random MLP weights.
    let layout = config.layout();
    let mut order: Vec<usize> = (0..layout.grid_params() as usize).collect();
    order.sort_by(|a, b| grads[*b].abs().total_cmp(&grads[*a].abs()));
    let mut check: Vec<usize> = order[..12].to_vec();
    let mlps = layout.grid_params() as usize..layout.background_w1 as usize;
    check.extend((0..12).map(|_| rng.random_range(mlps.clone())));
    let background = layout.background_w1 as usize..params.len();
    check.extend((0..8).map(|_| rng.random_range(background.clone())));
    let eps = 1e-6;
    for i in check {
        let mut p = params.clone();
        p[i] += eps;
        let up = loss(&p);
        p[i] -= 2.0 * eps;
        let down = loss(&p);
        let fd = (up - down) / (2.0 * eps);
        let tol = 1e-6 + 1e-5 * fd.abs().max(grads[i].abs());
        assert!(
            (fd - grads[i]).abs() < tol,
            "param {i}: analytic {} vs finite difference {fd}",
            grads[i]
        );
    }
}

#[test]
fn occupancy_skipping_matches_the_reference() {
    let config = small_config();
    let params = random_params(&config, 5);
    let mut field = GpuField::new(context(), config.clone(), &params).unwrap();
    field.update_occupancy(11, 48, None, 0.95, 0.01).unwrap();
    let grid: OccupancyGrid = field.occupancy.clone();
    let fraction = grid.occupied_fraction();
    assert!(
        fraction > 0.0 && fraction < 1.0,
        "occupied fraction {fraction}"
    );
    let cams = cameras();
    let s = settings();
    let got = field.render(&cams, W, H, &s).unwrap();
    let p64 = to_f64(&params);
    let reference = ReferenceField::new(&config, &p64);
    let all_rays = rays(&cams);
    let want = render_rays(&reference, &all_rays, &s, Some(&grid));
    let unskipped = render_rays(&reference, &all_rays, &s, None);
    let skipped: u32 = (0..want.len())
        .map(|i| unskipped[i].samples - want[i].samples)
        .sum();
    assert!(skipped > 0, "the grid skipped no sample");
    let want_flat: Vec<f64> = want
        .iter()
        .flat_map(|o| [o.rgb[0], o.rgb[1], o.rgb[2], o.opacity])
        .collect();
    let got_flat: Vec<f64> = got.color.iter().flat_map(|c| c.map(f64::from)).collect();
    let err = relative_error(&got_flat, &want_flat);
    assert!(err < 1e-4, "relative error {err} with occupancy skipping");

    // Exactly the reference's samples: the march steps over empty cells whole.
    let marched = reference_march(&reference, &all_rays, &s, Some(&grid));
    assert_same_march(
        &field.last_marched_samples().unwrap(),
        &marched,
        "march with occupancy skipping",
    );
    let mut g: Vec<[f32; 4]> = got.color.iter().map(|c| [c[0], -c[1], 0.5, c[3]]).collect();
    away_from_kinks(&reference, &marched, &want, &mut g);
    field.backward(&g).unwrap();
    let g64: Vec<[f64; 4]> = g.iter().map(|g| g.map(f64::from)).collect();
    let want_grads = backward_rays(&reference, &all_rays, &s, Some(&grid), &want, &g64);
    let got = to_f64(&field.grads().unwrap());
    assert_groups_close(&config, &got, &want_grads, "with occupancy skipping");
}

#[test]
fn point_queries_match_the_reference() {
    let config = FieldConfig {
        background: Background::neural(),
        ..small_config()
    };
    let params = random_params(&config, 10);
    let field = GpuField::new(context(), config.clone(), &params).unwrap();
    let p64 = to_f64(&params);
    let reference = ReferenceField::new(&config, &p64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let points: Vec<[f32; 3]> = (0..300)
        .map(|_| std::array::from_fn(|_| rng.random_range(-1.0..1.0)))
        .collect();
    let got: Vec<f64> = field
        .query(&points)
        .unwrap()
        .iter()
        .flat_map(|v| v.map(f64::from))
        .collect();
    let want: Vec<f64> = points
        .iter()
        .flat_map(|p| {
            let s = reference.eval(p.map(f64::from));
            [s.rgb[0], s.rgb[1], s.rgb[2], s.sigma]
        })
        .collect();
    let err = relative_error(&got, &want);
    assert!(err < 1e-5, "relative error {err}");
}

/// The mesh stage's texture path: albedo gradients at surface points into the field's
/// parameters, against the reference's backward with no density gradient.
#[test]
fn albedo_gradients_at_points_match_the_reference() {
    let config = small_config();
    let params = random_params(&config, 14);
    let mut field = GpuField::new(context(), config.clone(), &params).unwrap();
    let p64 = to_f64(&params);
    let reference = ReferenceField::new(&config, &p64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    // More points than one backward workgroup takes, so several groups add into the same rows.
    let points: Vec<[f32; 3]> = (0..700)
        .map(|_| std::array::from_fn(|_| rng.random_range(-0.9..0.9)))
        .collect();
    let grad: Vec<[f32; 3]> = (0..points.len())
        .map(|_| std::array::from_fn(|_| rng.random_range(-1.0..1.0)))
        .collect();
    let albedo: Vec<[f32; 3]> = field
        .query(&points)
        .unwrap()
        .iter()
        .map(|v| [v[0], v[1], v[2]])
        .collect();
    field.albedo_backward(&points, &albedo, &grad).unwrap();
    let got = to_f64(&field.grads().unwrap());
    let mut want = vec![0.0; p64.len()];
    for ((p, g), a) in points.iter().zip(&grad).zip(&albedo) {
        let s = reference.eval(p.map(f64::from));
        for (want, got) in s.rgb.iter().zip(a) {
            assert!((want - f64::from(*got)).abs() < 1e-5, "albedo at {p:?}");
        }
        reference.backward(&s, 0.0, g.map(f64::from), &mut want);
    }
    assert_groups_close(&config, &got, &want, "albedo backward");
}

#[test]
fn density_grids_match_the_reference_and_read_zero_in_empty_cells() {
    let config = small_config();
    let params = random_params(&config, 7);
    let mut field = GpuField::new(context(), config.clone(), &params).unwrap();
    let p64 = to_f64(&params);
    let reference = ReferenceField::new(&config, &p64);
    let n = 9;
    let r = config.radius as f64;
    let point = |i: usize| {
        let c = [i % n, i / n % n, i / (n * n)];
        c.map(|k| -r + 2.0 * r * k as f64 / (n - 1) as f64)
    };
    let want: Vec<f64> = (0..n * n * n)
        .map(|i| reference.eval(point(i)).sigma)
        .collect();
    let got = to_f64(&field.density_grid(n as u32).unwrap());
    let err = relative_error(&got, &want);
    assert!(err < 1e-5, "relative error {err}");

    field.update_occupancy(3, 48, None, 0.95, 0.01).unwrap();
    let grid = field.occupancy.clone();
    let skipped = field.density_grid(n as u32).unwrap();
    let mut empty = 0;
    for (i, (&s, &w)) in skipped.iter().zip(&want).enumerate() {
        if grid.occupied(point(i), r) {
            assert!((s as f64 - w).abs() <= 1e-5 * w.abs().max(1.0), "point {i}");
        } else {
            assert_eq!(s, 0.0, "point {i} lies in an empty cell");
            empty += 1;
        }
    }
    assert!(
        empty > 0 && empty < n * n * n,
        "{empty} points in empty cells"
    );
}

#[test]
fn adam_step_follows_the_adamw_formula() {
    let config = small_config();
    let params = random_params(&config, 6);
    let mut field = GpuField::new(context(), config.clone(), &params).unwrap();
    let cams = cameras();
    let s = settings();
    let adam = AdamConfig::default();
    let mut m = vec![0f64; params.len()];
    let mut v = vec![0f64; params.len()];
    let mut want = to_f64(&params);
    for step in 1..=2 {
        let out = field.render(&cams, W, H, &s).unwrap();
        let g: Vec<[f32; 4]> = out
            .color
            .iter()
            .map(|c| [c[0] - 0.5, c[1], -c[2], c[3]])
            .collect();
        field.backward(&g).unwrap();
        let grads = to_f64(&field.grads().unwrap());
        field.adam_step(&adam).unwrap();
        for i in 0..want.len() {
            let lr = if (i as u32) < field.layout.grid_params() {
                adam.lr_grid
            } else {
                adam.lr_mlp
            };
            let [b1, b2] = adam.betas;
            m[i] = b1 * m[i] + (1.0 - b1) * grads[i];
            v[i] = b2 * v[i] + (1.0 - b2) * grads[i] * grads[i];
            want[i] *= 1.0 - lr * adam.weight_decay;
            let m_hat = m[i] / (1.0 - b1.powi(step));
            let v_hat = v[i] / (1.0 - b2.powi(step));
            want[i] -= lr * m_hat / (v_hat.sqrt() + adam.eps);
        }
        assert!(
            field.grads().unwrap().iter().all(|&g| g == 0.0),
            "the step clears the gradients"
        );
        let got = to_f64(&field.params().unwrap());
        let err = got
            .iter()
            .zip(&want)
            .fold(0f64, |e, (a, b)| e.max((a - b).abs()));
        assert!(err < 1e-5, "step {step}: parameters differ by {err}");
    }
}

#[test]
fn checkpoints_restore_parameters_optimizer_state_and_occupancy() {
    let config = small_config();
    let ctx = context();
    let mut field = GpuField::new(ctx.clone(), config.clone(), &random_params(&config, 8)).unwrap();
    field.update_occupancy(1, 48, None, 0.95, 0.01).unwrap();
    let cams = cameras();
    let out = field.render(&cams, W, H, &settings()).unwrap();
    field
        .backward(&vec![[0.1, -0.2, 0.3, 0.05]; out.color.len()])
        .unwrap();
    field.adam_step(&AdamConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("field.safetensors");
    field.save(&path).unwrap();
    let mut back = GpuField::load(ctx, &path).unwrap();
    assert_eq!(back.step, 1);
    assert_eq!(back.params().unwrap(), field.params().unwrap());
    assert_eq!(back.moments().unwrap(), field.moments().unwrap());
    assert_eq!(back.occupancy, field.occupancy);
    let a = field.render(&cams, W, H, &settings()).unwrap();
    let b = back.render(&cams, W, H, &settings()).unwrap();
    assert_eq!(a.color, b.color);
}
