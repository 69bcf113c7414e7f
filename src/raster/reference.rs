//! The f64 reference of `gpu::raster`: a triangle loop per pixel, interpolation,
//! antialiasing, and their backward passes written out by hand. For tests and benchmarks; triangles must lie in front of
//! every camera (no clipping at w = 0).

use super::{pixel_ndc, RasterShape};
use nalgebra::Vector3;

/// A triangle's homogeneous barycentric solve at one NDC point (see the module docs of
/// `raster`): the perspective-correct weights are `n / sum`.
#[derive(Debug, Clone, Copy)]
pub struct Barycentric {
    a: Vector3<f64>,
    c: Vector3<f64>,
    n: Vector3<f64>,
    sum: f64,
}

impl Barycentric {
    pub fn solve(tri: [[f64; 4]; 3], ndc: [f64; 2]) -> Self {
        let a = Vector3::from(tri.map(|p| p[0] - ndc[0] * p[3]));
        let c = Vector3::from(tri.map(|p| p[1] - ndc[1] * p[3]));
        let n = a.cross(&c);
        Self {
            a,
            c,
            n,
            sum: n.sum(),
        }
    }

    pub fn weights(&self) -> [f64; 3] {
        (self.n / self.sum).into()
    }

    /// dL/d(clip positions of the three vertices) from dL/d(weights).
    pub fn backward(&self, ndc: [f64; 2], grad_weights: [f64; 3]) -> [[f64; 4]; 3] {
        let b = Vector3::from(self.weights());
        let g = Vector3::from(grad_weights);
        let grad_n = (g - Vector3::repeat(g.dot(&b))) / self.sum;
        // n = a × c: dL/da = c × dL/dn, dL/dc = dL/dn × a.
        let grad_a = self.c.cross(&grad_n);
        let grad_c = grad_n.cross(&self.a);
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
                let b3 = Vector3::from(b);
                let w = b3.dot(&Vector3::from(p.map(|v| v[3])));
                let depth = b3.dot(&Vector3::from(p.map(|v| v[2]))) / w;
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

/// How far (in pixels) a silhouette crossing may fall outside the segment between two pixel
/// centres and still count, as in nvdiffrast: rasterisers are accurate to about 1/16 pixel.
pub const CROSSING_SLACK: f64 = 1.0 / 16.0;

/// A silhouette edge crossing between neighbouring pixels `p0` and `p1` (right or below it),
/// and the blend antialiasing applies there: `target` (p0 or p1) gets `alpha`·(colour₁ −
/// colour₀) added.
#[derive(Debug, Clone, Copy)]
pub struct Crossing {
    pub target: usize,
    pub alpha: f64,
    /// The edge's two vertices (indices into the views' clip positions) and dα/d(their clip
    /// positions); zero where the crossing was clamped to a pixel centre.
    pub ends: [usize; 2],
    pub grad_ends: [[f64; 4]; 2],
}

fn same_sign(a: f64, b: f64) -> bool {
    a.is_sign_negative() == b.is_sign_negative()
}

fn area(a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> f64 {
    (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1])
}

/// The mesh a raster was made of, for antialiasing.
pub struct Mesh<'a> {
    pub clip: &'a [[f64; 4]],
    pub triangles: &'a [[u32; 3]],
    /// From `edge_opposites`.
    pub opposites: &'a [[i32; 3]],
}

/// nvdiffrast's analytic antialiasing for one pair of pixels: the nearer of the two pixels'
/// triangles (or the only one) is taken; along the segment between the pixel centres, the
/// crossing of its edges farthest towards the other pixel is found; where that edge is a
/// silhouette (the triangle across it folds back, or there is none) and steeper than 45° to the
/// segment, the pixel on the far side of the segment's midpoint gets the other's colour in
/// proportion to how far past the midpoint the edge lies.
pub fn crossing(
    shape: RasterShape,
    raster: &[[f64; 4]],
    mesh: &Mesh,
    p0: usize,
    p1: usize,
    down: bool,
) -> Option<Crossing> {
    let (r0, r1) = (raster[p0], raster[p1]);
    if r0[3] == r1[3] {
        return None;
    }
    let (tri, first) = match (triangle_of(r0), triangle_of(r1)) {
        (Some(a), Some(b)) => {
            if r0[2] < r1[2] {
                (a, true)
            } else {
                (b, false)
            }
        }
        (Some(a), None) => (a, true),
        (None, Some(b)) => (b, false),
        (None, None) => return None,
    };
    let ds = if first { 1.0 } else { -1.0 };
    let (view, px, py) = shape.locate(if first { p0 } else { p1 });
    let (half_w, half_h) = (shape.width as f64 / 2.0, shape.height as f64 / 2.0);
    let vertices = mesh.clip.len() / shape.views as usize;
    let base = view as usize * vertices;
    // Pixel-space position relative to the chosen pixel's centre, y down.
    let screen = |v: usize| {
        let p = mesh.clip[base + v];
        [
            (p[0] / p[3] + 1.0) * half_w - (px as f64 + 0.5),
            (1.0 - p[1] / p[3]) * half_h - (py as f64 + 0.5),
        ]
    };
    let ids = mesh.triangles[tri].map(|v| v as usize);
    let s = ids.map(screen);
    let wings: [[f64; 2]; 3] = std::array::from_fn(|k| match mesh.opposites[tri][k] {
        -1 => s[k],
        o => screen(o as usize),
    });
    let whole = area(s[0], s[1], s[2]);
    let silhouette: [bool; 3] = std::array::from_fn(|k| {
        let mut wing = s;
        wing[k] = wings[k];
        same_sign(area(wing[0], wing[1], wing[2]), whole)
    });
    if !silhouette.iter().any(|&b| b) {
        return None;
    }
    // Along the segment: x towards the right neighbour, or (swapped) towards the one below.
    let q = s.map(|p| if down { [p[1], p[0]] } else { p });
    let mut best: Option<(usize, f64)> = None;
    for k in 0..3 {
        let (a, b) = (q[(k + 1) % 3], q[(k + 2) % 3]);
        if same_sign(a[1], b[1]) {
            continue;
        }
        let reach = ds * (a[0] * b[1] - a[1] * b[0]) / (b[1] - a[1]);
        if best.is_none_or(|(_, r)| reach >= r) {
            best = Some((k, reach));
        }
    }
    let (k, reach) = best?;
    let (a, b) = (q[(k + 1) % 3], q[(k + 2) % 3]);
    if !silhouette[k] || (b[1] - a[1]).abs() < (b[0] - a[0]).abs() {
        return None;
    }
    if reach <= -CROSSING_SLACK || reach >= 1.0 + CROSSING_SLACK {
        return None;
    }
    let free = (0.0..=1.0).contains(&reach);
    let alpha = ds * (0.5 - reach.clamp(0.0, 1.0));
    // α = ds/2 − X where X = (a.x b.y − a.y b.x)/(b.y − a.y) is where the edge crosses.
    let x = ds * reach;
    let d = b[1] - a[1];
    let dx_dq = [[b[1] / d, (x - b[0]) / d], [-a[1] / d, (a[0] - x) / d]];
    let ends = [ids[(k + 1) % 3], ids[(k + 2) % 3]];
    let grad_ends = std::array::from_fn(|e| {
        if !free {
            return [0.0; 4];
        }
        let g = dx_dq[e].map(|v| -v);
        let (gx, gy) = if down { (g[1], g[0]) } else { (g[0], g[1]) };
        let p = mesh.clip[base + ends[e]];
        let w = p[3];
        [
            gx * half_w / w,
            -gy * half_h / w,
            0.0,
            -gx * p[0] * half_w / (w * w) + gy * p[1] * half_h / (w * w),
        ]
    });
    Some(Crossing {
        target: if alpha > 0.0 { p0 } else { p1 },
        alpha,
        ends: ends.map(|v| base + v),
        grad_ends,
    })
}

/// Every pixel pair (p, right neighbour) and (p, neighbour below), with `down`.
fn pairs(shape: RasterShape) -> impl Iterator<Item = (usize, usize, bool)> {
    let w = shape.width as usize;
    (0..shape.pixels()).flat_map(move |p| {
        let (_, x, y) = shape.locate(p);
        let right = (x + 1 < shape.width).then_some((p, p + 1, false));
        let below = (y + 1 < shape.height).then_some((p, p + w, true));
        right.into_iter().chain(below)
    })
}

/// `colours` (`channels` per pixel) antialiased across the raster's silhouette edges.
pub fn antialias(
    shape: RasterShape,
    raster: &[[f64; 4]],
    mesh: &Mesh,
    colours: &[f64],
    channels: usize,
) -> Vec<f64> {
    let mut out = colours.to_vec();
    for (p0, p1, down) in pairs(shape) {
        if let Some(c) = crossing(shape, raster, mesh, p0, p1, down) {
            for ch in 0..channels {
                out[c.target * channels + ch] +=
                    c.alpha * (colours[p1 * channels + ch] - colours[p0 * channels + ch]);
            }
        }
    }
    out
}

/// Gradients of a loss through `antialias`, given dL/d(output): dL/d(colours) and dL/d(clip
/// positions), with the raster held fixed.
pub fn antialias_backward(
    shape: RasterShape,
    raster: &[[f64; 4]],
    mesh: &Mesh,
    colours: &[f64],
    channels: usize,
    grad: &[f64],
) -> (Vec<f64>, Vec<[f64; 4]>) {
    let mut grad_colours = grad.to_vec();
    let mut grad_clip = vec![[0.0; 4]; mesh.clip.len()];
    for (p0, p1, down) in pairs(shape) {
        let Some(c) = crossing(shape, raster, mesh, p0, p1, down) else {
            continue;
        };
        let mut grad_alpha = 0.0;
        for ch in 0..channels {
            let g = grad[c.target * channels + ch];
            grad_alpha += g * (colours[p1 * channels + ch] - colours[p0 * channels + ch]);
            grad_colours[p1 * channels + ch] += c.alpha * g;
            grad_colours[p0 * channels + ch] -= c.alpha * g;
        }
        for (end, d) in c.ends.iter().zip(c.grad_ends) {
            for j in 0..4 {
                grad_clip[*end][j] += grad_alpha * d[j];
            }
        }
    }
    (grad_colours, grad_clip)
}
