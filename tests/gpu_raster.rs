//! The wgpu rasteriser (visibility, barycentrics, interpolation and its backward) against the
//! f64 reference, and the reference's gradients against finite differences. Runs on any adapter
//! (lavapipe in CI); every buffer starts as noise.

use dream3d::camera::Camera;
use dream3d::dmtet::{extract, TetGrid};
use dream3d::gpu::mesh_preview::view_projection;
use dream3d::gpu::raster::GpuRasterizer;
use dream3d::gpu::surface::SurfaceRenderer;
use dream3d::gpu::GpuContext;
use dream3d::mesh::surface::VertexNormals;
use dream3d::raster::reference::{
    antialias, antialias_backward, interpolate, interpolate_backward, rasterize, triangle_clip,
    triangle_of, Barycentric, Mesh,
};
use dream3d::raster::{edge_opposites, pixel_ndc, RasterShape};
use nalgebra::Vector4;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

fn context(float_atomics: bool) -> Arc<GpuContext> {
    let mut ctx =
        GpuContext::new().expect("a wgpu adapter (lavapipe: apt install mesa-vulkan-drivers)");
    ctx.poison_buffers = true;
    ctx.float_atomics &= float_atomics;
    eprintln!("adapter: {}", ctx.describe());
    Arc::new(ctx)
}

/// A UV sphere (one vertex per pole) with a box beside it (so that surfaces hide one another),
/// in world space. The sphere's triangles come first, the box's 12 last.
fn scene() -> (Vec<[f64; 3]>, Vec<[u32; 3]>) {
    let (rings, segments) = (7u32, 11u32);
    let mut positions = vec![[0.0, 0.0, 0.6]];
    for r in 1..rings {
        let theta = std::f64::consts::PI * r as f64 / rings as f64;
        for s in 0..segments {
            let phi = 2.0 * std::f64::consts::PI * (s as f64 + 0.3 * r as f64) / segments as f64;
            positions.push([
                0.6 * theta.sin() * phi.cos(),
                0.6 * theta.sin() * phi.sin(),
                0.6 * theta.cos(),
            ]);
        }
    }
    positions.push([0.0, 0.0, -0.6]);
    let bottom = positions.len() as u32 - 1;
    let ring = |r: u32, s: u32| 1 + (r - 1) * segments + s % segments;
    let mut triangles = vec![];
    for s in 0..segments {
        triangles.push([0, ring(1, s), ring(1, s + 1)]);
        for r in 1..rings - 1 {
            triangles.push([ring(r, s), ring(r + 1, s), ring(r, s + 1)]);
            triangles.push([ring(r, s + 1), ring(r + 1, s), ring(r + 1, s + 1)]);
        }
        triangles.push([ring(rings - 1, s + 1), ring(rings - 1, s), bottom]);
    }
    let first = positions.len() as u32;
    for corner in 0..8 {
        let bit = |k: u32| if corner >> k & 1 == 1 { 0.25 } else { -0.25 };
        positions.push([1.0 + bit(0), -0.3 + bit(1), 0.2 + bit(2)]);
    }
    // The box's six faces as corner-bit quads.
    for quad in [
        [0, 1, 3, 2],
        [4, 6, 7, 5],
        [0, 4, 5, 1],
        [2, 3, 7, 6],
        [0, 2, 6, 4],
        [1, 5, 7, 3],
    ] {
        let q = quad.map(|c| first + c);
        triangles.push([q[0], q[1], q[2]]);
        triangles.push([q[0], q[2], q[3]]);
    }
    (positions, triangles)
}

/// Clip positions of `positions` for each camera, view-major.
fn clip_positions(cameras: &[Camera], positions: &[[f64; 3]]) -> Vec<[f64; 4]> {
    cameras
        .iter()
        .flat_map(|camera| {
            let m = view_projection(camera);
            positions.iter().map(move |p| {
                let c = m * Vector4::new(p[0], p[1], p[2], 1.0);
                [c.x, c.y, c.z, c.w]
            })
        })
        .collect()
}

fn to_f32<const N: usize>(v: &[[f64; N]]) -> Vec<[f32; N]> {
    v.iter().map(|a| a.map(|x| x as f32)).collect()
}

/// Pixels within `margin` pixels of a triangle's edge, where hardware rasterisers differ from
/// an exact coverage test: they snap vertices to a sub-pixel grid (lavapipe: 1/256 pixel) and
/// break ties by their own rules. A pixel is taken as near an edge when moving its sample point
/// by `margin` along x or y changes whether some triangle covers it.
fn near_edges(
    shape: RasterShape,
    clip: &[[f64; 4]],
    triangles: &[[u32; 3]],
    margin: f64,
) -> Vec<bool> {
    let vertices = clip.len() / shape.views as usize;
    let (dx, dy) = (
        2.0 * margin / shape.width as f64,
        2.0 * margin / shape.height as f64,
    );
    (0..shape.pixels())
        .map(|i| {
            let (view, x, y) = shape.locate(i);
            let [px, py] = pixel_ndc(x, y, shape.width, shape.height);
            triangles.iter().any(|&tri| {
                let p = triangle_clip(clip, vertices, view, tri);
                let covers = |ndc| {
                    Barycentric::solve(p, ndc)
                        .weights()
                        .iter()
                        .all(|w| *w >= 0.0)
                };
                let centre = covers([px, py]);
                [[px + dx, py], [px - dx, py], [px, py + dy], [px, py - dy]]
                    .into_iter()
                    .any(|ndc| covers(ndc) != centre)
            })
        })
        .collect()
}

struct Case {
    shape: RasterShape,
    clip: Vec<[f64; 4]>,
    triangles: Vec<[u32; 3]>,
    attributes: Vec<f64>,
    channels: usize,
}

fn case() -> Case {
    let (positions, triangles) = scene();
    // Two views; a width that is not a multiple of 64 (texture rows are padded to 256 bytes).
    let cameras = [
        Camera::orbit(20.0, 35.0, 1.9, 50.0),
        Camera::orbit(-10.0, 160.0, 1.6, 60.0),
    ];
    let shape = RasterShape {
        views: 2,
        width: 50,
        height: 42,
    };
    let channels = 5;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let attributes = (0..positions.len() * channels)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Case {
        shape,
        clip: clip_positions(&cameras, &positions),
        triangles,
        attributes,
        channels,
    }
}

/// The largest difference within each group, over the group's largest magnitude.
fn relative_error(gpu: &[f32], reference: &[f64]) -> f64 {
    let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = gpu
        .iter()
        .zip(reference)
        .fold(0.0f64, |m, (g, r)| m.max((*g as f64 - r).abs()));
    worst / scale
}

fn check_against_reference(float_atomics: bool) {
    let c = case();
    let mut raster = GpuRasterizer::new(context(float_atomics)).unwrap();
    let gpu = raster
        .rasterize(c.shape, &to_f32(&c.clip), &c.triangles)
        .unwrap();
    let reference = rasterize(c.shape, &c.clip, &c.triangles);
    let unclear = near_edges(c.shape, &c.clip, &c.triangles, 1.0 / 32.0);
    let covered = reference.iter().filter(|r| r[3] > 0.0).count();
    assert!(
        covered > c.shape.pixels() / 4,
        "the scene covers {covered} of {} pixels",
        c.shape.pixels()
    );
    let mut compared = 0;
    for i in 0..c.shape.pixels() {
        if unclear[i] {
            continue;
        }
        compared += 1;
        let (g, r) = (gpu[i], reference[i]);
        assert_eq!(
            g[3] as f64,
            r[3],
            "pixel {i}: triangle + 1 (GPU {g:?}, reference {r:?}, at {:?})",
            c.shape.locate(i)
        );
        for k in 0..3 {
            assert!(
                (g[k] as f64 - r[k]).abs() < 2e-5,
                "pixel {i}, component {k}: GPU {} vs reference {}",
                g[k],
                r[k]
            );
        }
    }
    eprintln!(
        "{compared} of {} pixels away from edges, {covered} covered",
        c.shape.pixels()
    );
    assert!(
        compared > c.shape.pixels() * 9 / 10,
        "only {compared} of {} pixels away from edges",
        c.shape.pixels()
    );

    // Interpolation, and its backward with a gradient that is zero on pixels near edges (where
    // the GPU may rightly see another triangle).
    let attributes: Vec<f32> = c.attributes.iter().map(|&a| a as f32).collect();
    let out = raster.interpolate(&attributes, c.channels as u32).unwrap();
    let expected = interpolate(&reference, &c.triangles, &c.attributes, c.channels);
    for i in (0..c.shape.pixels()).filter(|&i| !unclear[i]) {
        for ch in 0..c.channels {
            let at = i * c.channels + ch;
            assert!(
                (out[at] as f64 - expected[at]).abs() < 2e-5,
                "pixel {i}, channel {ch}: {} vs {}",
                out[at],
                expected[at]
            );
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let grad: Vec<f64> = (0..c.shape.pixels() * c.channels)
        .map(|at| {
            if unclear[at / c.channels] {
                0.0
            } else {
                rng.random_range(-1.0..1.0)
            }
        })
        .collect();
    let grad32: Vec<f32> = grad.iter().map(|&g| g as f32).collect();
    let (gpu_attributes, gpu_clip) = raster.interpolate_backward(&grad32).unwrap();
    let (ref_attributes, ref_clip) = interpolate_backward(
        c.shape,
        &reference,
        &c.clip,
        &c.triangles,
        &c.attributes,
        c.channels,
        &grad,
    );
    let attribute_error = relative_error(&gpu_attributes, &ref_attributes);
    let flat = |v: &[[f64; 4]]| v.iter().flatten().copied().collect::<Vec<f64>>();
    let gpu_clip_flat: Vec<f32> = gpu_clip.iter().flatten().copied().collect();
    // x, y and w separately: their scales differ (z gets no gradient).
    let component = |v: &[f32], k: usize| v.iter().skip(k).step_by(4).copied().collect::<Vec<_>>();
    let component64 =
        |v: &[f64], k: usize| v.iter().skip(k).step_by(4).copied().collect::<Vec<_>>();
    let ref_clip_flat = flat(&ref_clip);
    eprintln!("attribute gradients: relative error {attribute_error:.2e}");
    // Measured on lavapipe: 4.9e-7 (attributes), 3.7e-6 to 4.9e-6 (clip positions).
    assert!(
        attribute_error < 5e-6,
        "attribute gradients: {attribute_error:.2e}"
    );
    for (k, name) in [(0, "x"), (1, "y"), (3, "w")] {
        let e = relative_error(
            &component(&gpu_clip_flat, k),
            &component64(&ref_clip_flat, k),
        );
        eprintln!("clip {name} gradients: relative error {e:.2e}");
        assert!(e < 5e-5, "clip {name} gradients: {e:.2e}");
    }
    assert!(
        component(&gpu_clip_flat, 2).iter().all(|&z| z == 0.0),
        "depth takes no gradient"
    );
}

#[test]
fn visibility_interpolation_and_backward_match_the_reference() {
    check_against_reference(true);
}

#[test]
fn the_backward_matches_the_reference_with_emulated_float_atomics() {
    check_against_reference(false);
}

/// `channels` attributes per vertex interpolated with barycentrics solved from `clip`, each
/// pixel's triangle taken from `raster` and held fixed (as the backward passes assume).
fn interpolate_fixed(
    shape: RasterShape,
    raster: &[[f64; 4]],
    clip: &[[f64; 4]],
    triangles: &[[u32; 3]],
    attributes: &[f64],
    channels: usize,
) -> Vec<f64> {
    let vertices = clip.len() / shape.views as usize;
    let mut out = vec![0.0; raster.len() * channels];
    for (i, &r) in raster.iter().enumerate() {
        let Some(t) = triangle_of(r) else { continue };
        let (view, x, y) = shape.locate(i);
        let ndc = pixel_ndc(x, y, shape.width, shape.height);
        let tri = triangles[t];
        let b = Barycentric::solve(triangle_clip(clip, vertices, view, tri), ndc).weights();
        for (k, &v) in tri.iter().enumerate() {
            for ch in 0..channels {
                out[i * channels + ch] += b[k] * attributes[v as usize * channels + ch];
            }
        }
    }
    out
}

/// L = Σ g·interpolate(b(clip)) with each pixel's triangle held fixed.
fn loss(c: &Case, raster: &[[f64; 4]], clip: &[[f64; 4]], attributes: &[f64], grad: &[f64]) -> f64 {
    interpolate_fixed(c.shape, raster, clip, &c.triangles, attributes, c.channels)
        .iter()
        .zip(grad)
        .map(|(o, g)| o * g)
        .sum()
}

#[test]
fn reference_interpolation_gradients_match_finite_differences() {
    let c = case();
    let raster = rasterize(c.shape, &c.clip, &c.triangles);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let grad: Vec<f64> = (0..c.shape.pixels() * c.channels)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let (grad_attributes, grad_clip) = interpolate_backward(
        c.shape,
        &raster,
        &c.clip,
        &c.triangles,
        &c.attributes,
        c.channels,
        &grad,
    );
    let h = 1e-6;
    let mut checked = 0;
    for (v, vertex_grad) in grad_clip.iter().enumerate().step_by(7) {
        for k in 0..4 {
            let mut plus = c.clip.clone();
            let mut minus = c.clip.clone();
            plus[v][k] += h;
            minus[v][k] -= h;
            let fd = (loss(&c, &raster, &plus, &c.attributes, &grad)
                - loss(&c, &raster, &minus, &c.attributes, &grad))
                / (2.0 * h);
            let scale = fd.abs().max(vertex_grad[k].abs()).max(1e-3);
            assert!(
                (fd - vertex_grad[k]).abs() / scale < 1e-5,
                "clip[{v}][{k}]: finite difference {fd}, analytic {}",
                vertex_grad[k]
            );
            checked += (fd != 0.0) as usize;
        }
    }
    assert!(
        checked > 20,
        "only {checked} non-zero clip gradients checked"
    );
    for at in (0..c.attributes.len()).step_by(13) {
        let mut plus = c.attributes.clone();
        let mut minus = c.attributes.clone();
        plus[at] += h;
        minus[at] -= h;
        let fd = (loss(&c, &raster, &c.clip, &plus, &grad)
            - loss(&c, &raster, &c.clip, &minus, &grad))
            / (2.0 * h);
        let scale = fd.abs().max(1e-3);
        assert!(
            (fd - grad_attributes[at]).abs() / scale < 1e-6,
            "attribute {at}: finite difference {fd}, analytic {}",
            grad_attributes[at]
        );
    }
}

#[test]
fn bad_meshes_and_calls_out_of_order_are_errors() {
    let mut raster = GpuRasterizer::new(context(true)).unwrap();
    let shape = RasterShape {
        views: 1,
        width: 8,
        height: 8,
    };
    let clip = [[0.0, 0.0, 0.5, 1.0]; 3];
    let err = raster.interpolate(&[0.0; 3], 1).unwrap_err().to_string();
    assert!(err.contains("call rasterize first"), "{err}");
    let err = raster
        .rasterize(shape, &clip, &[[0, 1, 3]])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("triangle 0 [0, 1, 3]") && err.contains("3 vertices"),
        "{err}"
    );
    let two = RasterShape { views: 2, ..shape };
    let err = raster
        .rasterize(two, &clip, &[[0, 1, 2]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not split into 2 views"), "{err}");
    raster.rasterize(shape, &clip, &[[0, 1, 2]]).unwrap();
    let err = raster.interpolate(&[0.0; 4], 2).unwrap_err().to_string();
    assert!(err.contains("4 attribute values for 3 vertices"), "{err}");
    let err = raster
        .interpolate_backward(&[0.0; 64])
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs an interpolate"), "{err}");
}

fn random_colours(c: &Case, channels: usize, seed: u64) -> Vec<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..c.shape.pixels() * channels)
        .map(|_| rng.random_range(0.0..1.0))
        .collect()
}

fn check_antialias_against_reference(float_atomics: bool) {
    let c = case();
    let clip32 = to_f32(&c.clip);
    // The reference antialiases the GPU's own raster, from the same f32 positions: this checks
    // the antialiasing kernels, not visibility (checked above).
    let clip: Vec<[f64; 4]> = clip32.iter().map(|p| p.map(f64::from)).collect();
    let opposites = edge_opposites(&c.triangles);
    let mesh = Mesh {
        clip: &clip,
        triangles: &c.triangles,
        opposites: &opposites,
    };
    let mut raster = GpuRasterizer::new(context(float_atomics)).unwrap();
    let gpu_raster: Vec<[f64; 4]> = raster
        .rasterize(c.shape, &clip32, &c.triangles)
        .unwrap()
        .iter()
        .map(|r| r.map(f64::from))
        .collect();
    let channels = 3;
    let colours = random_colours(&c, channels, 3);
    let colours32: Vec<f32> = colours.iter().map(|&v| v as f32).collect();
    let out = raster.antialias(&colours32, channels as u32).unwrap();
    let expected = antialias(c.shape, &gpu_raster, &mesh, &colours, channels);
    let changed = (0..c.shape.pixels())
        .filter(|&p| {
            (0..channels).any(|ch| expected[p * channels + ch] != colours[p * channels + ch])
        })
        .count();
    assert!(changed > 50, "antialiasing changed only {changed} pixels");
    let error = relative_error(&out, &expected);
    eprintln!("antialiasing changed {changed} pixels; relative error {error:.2e}");
    assert!(error < 1e-5, "antialiased colours: {error:.2e}");

    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let grad: Vec<f64> = (0..out.len())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let grad32: Vec<f32> = grad.iter().map(|&g| g as f32).collect();
    let (gpu_colours, gpu_clip) = raster.antialias_backward(&grad32).unwrap();
    let (ref_colours, ref_clip) =
        antialias_backward(c.shape, &gpu_raster, &mesh, &colours, channels, &grad);
    let colour_error = relative_error(&gpu_colours, &ref_colours);
    eprintln!("colour gradients: relative error {colour_error:.2e}");
    assert!(colour_error < 1e-5, "colour gradients: {colour_error:.2e}");
    let gpu_flat: Vec<f32> = gpu_clip.iter().flatten().copied().collect();
    let ref_flat: Vec<f64> = ref_clip.iter().flatten().copied().collect();
    for (k, name) in [(0, "x"), (1, "y"), (3, "w")] {
        let gpu: Vec<f32> = gpu_flat.iter().skip(k).step_by(4).copied().collect();
        let reference: Vec<f64> = ref_flat.iter().skip(k).step_by(4).copied().collect();
        assert!(
            reference.iter().any(|&v| v != 0.0),
            "no clip {name} gradient from silhouettes"
        );
        let e = relative_error(&gpu, &reference);
        eprintln!("silhouette clip {name} gradients: relative error {e:.2e}");
        // Measured on lavapipe: 2.6e-7 to 5.6e-7.
        assert!(e < 5e-6, "silhouette clip {name} gradients: {e:.2e}");
    }
}

#[test]
fn antialiasing_and_its_backward_match_the_reference() {
    check_antialias_against_reference(true);
}

#[test]
fn antialiasing_backward_matches_the_reference_with_emulated_float_atomics() {
    check_antialias_against_reference(false);
}

#[test]
fn reference_antialiasing_gradients_match_finite_differences() {
    let c = case();
    let opposites = edge_opposites(&c.triangles);
    let raster = rasterize(c.shape, &c.clip, &c.triangles);
    let channels = 2;
    let colours = random_colours(&c, channels, 8);
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let grad: Vec<f64> = (0..colours.len())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let loss = |clip: &[[f64; 4]], colours: &[f64]| {
        let mesh = Mesh {
            clip,
            triangles: &c.triangles,
            opposites: &opposites,
        };
        let out = antialias(c.shape, &raster, &mesh, colours, channels);
        out.iter().zip(&grad).map(|(o, g)| o * g).sum::<f64>()
    };
    let mesh = Mesh {
        clip: &c.clip,
        triangles: &c.triangles,
        opposites: &opposites,
    };
    let (grad_colours, grad_clip) =
        antialias_backward(c.shape, &raster, &mesh, &colours, channels, &grad);
    // Every vertex, those the analytic gradient leaves at zero included: a missing silhouette
    // gradient must fail too.
    let h = 1e-7;
    let mut nonzero = 0;
    for (v, analytic) in grad_clip.iter().enumerate() {
        let silhouette = analytic.iter().any(|&g| g != 0.0);
        for k in [0, 1, 3] {
            let mut plus = c.clip.clone();
            let mut minus = c.clip.clone();
            plus[v][k] += h;
            minus[v][k] -= h;
            let fd = (loss(&plus, &colours) - loss(&minus, &colours)) / (2.0 * h);
            let scale = fd.abs().max(analytic[k].abs()).max(1e-2);
            assert!(
                (fd - analytic[k]).abs() / scale < 1e-5,
                "clip[{v}][{k}]: finite difference {fd}, analytic {}",
                analytic[k]
            );
            nonzero += silhouette as usize;
        }
    }
    assert!(nonzero > 30, "only {nonzero} silhouette gradients checked");
    for at in (0..colours.len()).step_by(17) {
        let mut plus = colours.clone();
        let mut minus = colours.clone();
        plus[at] += 1e-6;
        minus[at] -= 1e-6;
        let fd = (loss(&c.clip, &plus) - loss(&c.clip, &minus)) / 2e-6;
        assert!(
            (fd - grad_colours[at]).abs() < 1e-7 * fd.abs().max(1.0),
            "colour {at}: finite difference {fd}, analytic {}",
            grad_colours[at]
        );
    }
}

/// The sphere's interior edges (both triangles face the camera) are not silhouettes: without
/// the box, antialiasing changes only pixels on the sphere's outline.
#[test]
fn antialiasing_leaves_interior_edges_alone() {
    let c = case();
    let sphere: Vec<[u32; 3]> = c.triangles[..c.triangles.len() - 12].to_vec();
    let opposites = edge_opposites(&sphere);
    let raster = rasterize(c.shape, &c.clip, &sphere);
    let mesh = Mesh {
        clip: &c.clip,
        triangles: &sphere,
        opposites: &opposites,
    };
    let colours = random_colours(&c, 1, 2);
    let out = antialias(c.shape, &raster, &mesh, &colours, 1);
    let w = c.shape.width as usize;
    for p in 0..c.shape.pixels() {
        if out[p] == colours[p] {
            continue;
        }
        let (_, x, y) = c.shape.locate(p);
        let neighbours = [
            (x > 0).then(|| p - 1),
            (x + 1 < c.shape.width).then(|| p + 1),
            (y > 0).then(|| p - w),
            (y + 1 < c.shape.height).then(|| p + w),
        ];
        assert!(
            neighbours.iter().flatten().any(|&q| (raster[q][3] > 0.0) != (raster[p][3] > 0.0)),
            "pixel {p} changed though it and its neighbours all see the sphere or all the background"
        );
    }
}

/// `SurfaceRenderer`'s forward in f64, each pixel's triangle and depth taken from `raster`: the
/// normals interpolated with barycentrics solved from `positions`, normalised, shaded (n̂ + 1)/2
/// with coverage 1, then antialiased.
fn reference_surface_render(
    shape: RasterShape,
    cameras: &[Camera],
    positions: &[[f64; 3]],
    triangles: &[[u32; 3]],
    opposites: &[[i32; 3]],
    raster: &[[f64; 4]],
) -> Vec<f64> {
    let clip = clip_positions(cameras, positions);
    let normals: Vec<f64> = VertexNormals::new(positions, triangles)
        .unit
        .into_iter()
        .flatten()
        .collect();
    let interpolated = interpolate_fixed(shape, raster, &clip, triangles, &normals, 3);
    let mut shaded = vec![0.0; shape.pixels() * 4];
    for (i, n) in interpolated.chunks_exact(3).enumerate() {
        if triangle_of(raster[i]).is_none() {
            continue;
        }
        let length = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
        for c in 0..3 {
            shaded[i * 4 + c] = (n[c] / length + 1.0) / 2.0;
        }
        shaded[i * 4 + 3] = 1.0;
    }
    let mesh = Mesh {
        clip: &clip,
        triangles,
        opposites,
    };
    antialias(shape, raster, &mesh, &shaded, 4)
}

#[test]
fn surface_renderer_gradients_match_the_f64_composition() {
    // A bumpy closed surface from DMTet.
    let grid = TetGrid::new(5, 1.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let sdf: Vec<f64> = grid
        .points
        .iter()
        .map(|p| {
            0.6 - (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt() + rng.random_range(-0.05..0.05)
        })
        .collect();
    let deformation: Vec<[f64; 3]> = (0..grid.points.len())
        .map(|_| std::array::from_fn(|_| rng.random_range(-0.5..0.5)))
        .collect();
    let surface = extract(&grid, &sdf, &deformation);
    let (positions, triangles) = (&surface.positions, &surface.triangles);
    let cameras = [
        Camera::orbit(25.0, 40.0, 2.2, 45.0),
        Camera::orbit(-15.0, 200.0, 2.0, 50.0),
    ];
    let shape = RasterShape {
        views: 2,
        width: 40,
        height: 40,
    };
    let clip = clip_positions(&cameras, positions);
    let raster = rasterize(shape, &clip, triangles);
    let opposites = edge_opposites(triangles);
    // Pixels near an edge may see another triangle on the GPU; they and their neighbours (whose
    // antialiasing reads them) get no gradient.
    let near = near_edges(shape, &clip, triangles, 1.0 / 32.0);
    let w = shape.width as usize;
    let masked: Vec<bool> = (0..shape.pixels())
        .map(|p| {
            let (_, x, y) = shape.locate(p);
            let mut around = vec![p];
            if x > 0 {
                around.push(p - 1);
            }
            if x + 1 < shape.width {
                around.push(p + 1);
            }
            if y > 0 {
                around.push(p - w);
            }
            if y + 1 < shape.height {
                around.push(p + w);
            }
            around.iter().any(|&q| near[q])
        })
        .collect();
    let grad: Vec<[f32; 4]> = masked
        .iter()
        .map(|&m| std::array::from_fn(|_| if m { 0.0 } else { rng.random_range(-1.0..1.0) }))
        .collect();

    let mut renderer = SurfaceRenderer::new(context(true)).unwrap();
    let out = renderer
        .render(positions, triangles, &cameras, shape.width)
        .unwrap();
    let expected =
        reference_surface_render(shape, &cameras, positions, triangles, &opposites, &raster);
    for p in (0..shape.pixels()).filter(|&p| !masked[p]) {
        for c in 0..4 {
            assert!(
                (f64::from(out[p][c]) - expected[p * 4 + c]).abs() < 1e-4,
                "pixel {p}, channel {c}: GPU {} vs reference {}",
                out[p][c],
                expected[p * 4 + c]
            );
        }
    }
    let gpu = renderer.backward(&grad).unwrap();
    let loss = |moved: &[[f64; 3]]| {
        let image =
            reference_surface_render(shape, &cameras, moved, triangles, &opposites, &raster);
        image
            .chunks_exact(4)
            .zip(&grad)
            .map(|(v, g)| (0..4).map(|c| v[c] * f64::from(g[c])).sum::<f64>())
            .sum::<f64>()
    };
    let h = 1e-6;
    let mut fd = vec![[0.0; 3]; positions.len()];
    for v in 0..positions.len() {
        for k in 0..3 {
            let mut plus = positions.clone();
            let mut minus = positions.clone();
            plus[v][k] += h;
            minus[v][k] -= h;
            fd[v][k] = (loss(&plus) - loss(&minus)) / (2.0 * h);
        }
    }
    let scale = fd.iter().flatten().fold(0.0f64, |m, g| m.max(g.abs()));
    let worst = fd
        .iter()
        .flatten()
        .zip(gpu.iter().flatten())
        .fold(0.0f64, |m, (f, g)| m.max((f - g).abs()));
    eprintln!(
        "surface renderer: position gradients within {:.2e} of the largest",
        worst / scale
    );
    assert!(scale > 0.0);
    assert!(
        worst < 1e-3 * scale,
        "position gradients: {:.2e} of the largest",
        worst / scale
    );
}

/// The texture stage's render: colours looked up at the surface points equal interpolated vertex
/// albedo when the colour is an affine function of position (interpolation is then exact), and
/// the gradient to each point's colour matches a directional finite difference of the image.
#[test]
fn texture_renders_agree_with_vertex_albedo_and_their_gradients_with_finite_differences() {
    let (positions, triangles) = scene();
    let cameras = [
        Camera::orbit(20.0, 30.0, 3.0, 45.0),
        Camera::orbit(-10.0, 150.0, 3.2, 40.0),
    ];
    let size = 48;
    let affine = |p: [f64; 3]| -> [f64; 3] {
        [
            0.5 + 0.3 * p[0] - 0.1 * p[2],
            0.4 + 0.2 * p[1] + 0.25 * p[2],
            0.6 - 0.2 * p[0] + 0.15 * p[1],
        ]
    };
    let mut renderer = SurfaceRenderer::new(context(true)).unwrap();
    let vertex_albedo: Vec<[f64; 3]> = positions.iter().map(|&p| affine(p)).collect();
    let by_vertex = renderer
        .render_albedo(&positions, &triangles, &vertex_albedo, &cameras, size)
        .unwrap();
    let colour = |points: &[[f32; 3]]| -> dream3d::Result<Vec<[f32; 3]>> {
        Ok(points
            .iter()
            .map(|p| affine(p.map(f64::from)).map(|v| v as f32))
            .collect())
    };
    let textured = renderer
        .render_texture(&positions, &triangles, &cameras, size, colour)
        .unwrap();
    assert!(textured.points.len() > 500, "the scene covers the views");
    let worst = by_vertex
        .iter()
        .zip(&textured.image)
        .flat_map(|(a, b)| (0..4).map(move |c| (a[c] - b[c]).abs()))
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "texture vs vertex albedo: {worst}");

    let mut rng = rand::rngs::StdRng::seed_from_u64(31);
    let grad: Vec<[f32; 4]> = (0..textured.image.len())
        .map(|_| std::array::from_fn(|_| rng.random_range(-1.0..1.0)))
        .collect();
    let per_point = renderer.texture_backward(&grad).unwrap();
    assert_eq!(per_point.len(), textured.points.len());
    let direction: Vec<[f32; 3]> = (0..per_point.len())
        .map(|_| std::array::from_fn(|_| rng.random_range(-1.0..1.0)))
        .collect();
    let analytic: f64 = per_point
        .iter()
        .zip(&direction)
        .flat_map(|(g, d)| (0..3).map(move |k| f64::from(g[k]) * f64::from(d[k])))
        .sum();
    let mut loss = |eps: f32| -> f64 {
        let base = colour(&textured.points).unwrap();
        let moved: Vec<[f32; 3]> = base
            .iter()
            .zip(&direction)
            .map(|(c, d)| std::array::from_fn(|k| c[k] + eps * d[k]))
            .collect();
        let image = renderer
            .render_texture(&positions, &triangles, &cameras, size, |_| Ok(moved))
            .unwrap()
            .image;
        image
            .iter()
            .zip(&grad)
            .flat_map(|(v, g)| (0..4).map(move |c| f64::from(v[c]) * f64::from(g[c])))
            .sum()
    };
    // The image is linear in the colours: a large step loses nothing but rounding.
    let fd = (loss(0.25) - loss(-0.25)) / 0.5;
    assert!(
        (fd - analytic).abs() < 1e-3 * analytic.abs().max(1.0),
        "directional derivative: finite difference {fd}, backward {analytic}"
    );
}
