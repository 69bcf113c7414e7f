//! The f64 reference of `gpu::raster`: a triangle loop per pixel, and the backward of
//! interpolation written out by hand. For tests and benchmarks; triangles must lie in front of
//! every camera (no clipping at w = 0).

use super::{pixel_ndc, RasterShape};

/// A triangle's homogeneous barycentric solve at one NDC point (see the module docs of
/// `raster`): the perspective-correct weights are `n / sum`.
#[derive(Debug, Clone, Copy)]
pub struct Barycentric {
    a: [f64; 3],
    c: [f64; 3],
    n: [f64; 3],
    sum: f64,
}

impl Barycentric {
    pub fn solve(tri: [[f64; 4]; 3], ndc: [f64; 2]) -> Self {
        let a = tri.map(|p| p[0] - ndc[0] * p[3]);
        let c = tri.map(|p| p[1] - ndc[1] * p[3]);
        let n = cross(a, c);
        Self {
            a,
            c,
            n,
            sum: n[0] + n[1] + n[2],
        }
    }

    pub fn weights(&self) -> [f64; 3] {
        self.n.map(|n| n / self.sum)
    }

    /// dL/d(clip positions of the three vertices) from dL/d(weights).
    pub fn backward(&self, ndc: [f64; 2], grad_weights: [f64; 3]) -> [[f64; 4]; 3] {
        let b = self.weights();
        let mean = dot(grad_weights, b);
        let grad_n = grad_weights.map(|g| (g - mean) / self.sum);
        // n = a × c: dL/da = c × dL/dn, dL/dc = dL/dn × a.
        let grad_a = cross(self.c, grad_n);
        let grad_c = cross(grad_n, self.a);
        std::array::from_fn(|i| {
            [
                grad_a[i],
                grad_c[i],
                0.0,
                -ndc[0] * grad_a[i] - ndc[1] * grad_c[i],
            ]
        })
    }
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// The clip positions of triangle `tri` in `view` (`clip` holds `vertices` per view).
pub fn triangle_clip(
    clip: &[[f64; 4]],
    vertices: usize,
    view: u32,
    tri: [u32; 3],
) -> [[f64; 4]; 3] {
    tri.map(|v| clip[view as usize * vertices + v as usize])
}

/// Per pixel: (b₀, b₁, z/w, triangle + 1) of the nearest covering triangle, or zeros.
pub fn rasterize(shape: RasterShape, clip: &[[f64; 4]], triangles: &[[u32; 3]]) -> Vec<[f64; 4]> {
    let vertices = clip.len() / shape.views as usize;
    (0..shape.pixels())
        .map(|i| {
            let (view, x, y) = shape.locate(i);
            let ndc = pixel_ndc(x, y, shape.width, shape.height);
            let mut nearest = [0.0; 4];
            let mut nearest_depth = f64::INFINITY;
            for (t, &tri) in triangles.iter().enumerate() {
                let p = triangle_clip(clip, vertices, view, tri);
                let b = Barycentric::solve(p, ndc).weights();
                if !b.iter().all(|w| w.is_finite() && *w >= 0.0) {
                    continue;
                }
                let w = dot(b, p.map(|v| v[3]));
                let depth = dot(b, p.map(|v| v[2])) / w;
                if w > 0.0 && (0.0..=1.0).contains(&depth) && depth < nearest_depth {
                    nearest_depth = depth;
                    nearest = [b[0], b[1], depth, (t + 1) as f64];
                }
            }
            nearest
        })
        .collect()
}

/// The covering triangle of a raster value, if any.
pub fn triangle_of(raster: [f64; 4]) -> Option<usize> {
    (raster[3] > 0.0).then(|| raster[3] as usize - 1)
}

fn raster_weights(raster: [f64; 4]) -> [f64; 3] {
    [raster[0], raster[1], 1.0 - raster[0] - raster[1]]
}

/// `channels` attributes per vertex (shared by every view) at each pixel: Σ bᵢ·attrᵢ, 0 where
/// no triangle covers it.
pub fn interpolate(
    raster: &[[f64; 4]],
    triangles: &[[u32; 3]],
    attributes: &[f64],
    channels: usize,
) -> Vec<f64> {
    let mut out = vec![0.0; raster.len() * channels];
    for (i, &r) in raster.iter().enumerate() {
        let Some(t) = triangle_of(r) else { continue };
        let b = raster_weights(r);
        for (k, &v) in triangles[t].iter().enumerate() {
            for ch in 0..channels {
                out[i * channels + ch] += b[k] * attributes[v as usize * channels + ch];
            }
        }
    }
    out
}

/// Gradients of a loss through `interpolate`, given dL/d(output) (`grad`, pixels × channels):
/// dL/d(attributes) and dL/d(clip positions), with each pixel's triangle held fixed.
pub fn interpolate_backward(
    shape: RasterShape,
    raster: &[[f64; 4]],
    clip: &[[f64; 4]],
    triangles: &[[u32; 3]],
    attributes: &[f64],
    channels: usize,
    grad: &[f64],
) -> (Vec<f64>, Vec<[f64; 4]>) {
    let vertices = clip.len() / shape.views as usize;
    let mut grad_attributes = vec![0.0; attributes.len()];
    let mut grad_clip = vec![[0.0; 4]; clip.len()];
    for (i, &r) in raster.iter().enumerate() {
        let Some(t) = triangle_of(r) else { continue };
        let (view, x, y) = shape.locate(i);
        let ndc = pixel_ndc(x, y, shape.width, shape.height);
        let tri = triangles[t];
        let b = Barycentric::solve(triangle_clip(clip, vertices, view, tri), ndc);
        let weights = b.weights();
        let g = &grad[i * channels..(i + 1) * channels];
        let mut grad_weights = [0.0; 3];
        for (k, &v) in tri.iter().enumerate() {
            let attr = &attributes[v as usize * channels..(v as usize + 1) * channels];
            for ch in 0..channels {
                grad_attributes[v as usize * channels + ch] += weights[k] * g[ch];
                grad_weights[k] += g[ch] * attr[ch];
            }
        }
        for (k, d) in b.backward(ndc, grad_weights).into_iter().enumerate() {
            let slot = &mut grad_clip[view as usize * vertices + tri[k] as usize];
            for j in 0..4 {
                slot[j] += d[j];
            }
        }
    }
    (grad_attributes, grad_clip)
}
