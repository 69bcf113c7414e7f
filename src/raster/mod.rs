//! Differentiable rasterisation of triangle meshes, split as nvdiffrast splits it: `rasterize`
//! (which triangle each pixel sees, its perspective-correct barycentrics and depth),
//! `interpolate` (vertex attributes at each pixel), `antialias` (silhouette edges blended by
//! where they cross between pixel centres, which gives silhouettes their gradient) and their
//! backward passes. The GPU
//! implementation is `gpu::raster`; `reference` is the f64 one that tests check it against.
//!
//! Conventions shared by both:
//! - Positions are clip-space (x, y, z, w) per view and vertex, wgpu's: depth z/w in [0, 1],
//!   NDC y up, image row 0 at the top. Pixel (x, y) samples NDC
//!   ((x + ½)/W·2 − 1, 1 − (y + ½)/H·2).
//! - A pixel's raster value is (b₀, b₁, z/w, triangle + 1), 0 where no triangle covers it (the
//!   triangle index stored as f32, as nvdiffrast does: exact below 2²⁴ triangles). b₂ = 1 − b₀ − b₁.
//! - Barycentrics are solved in homogeneous coordinates (Olano and Greer): with
//!   aᵢ = xᵢ − pₓwᵢ and cᵢ = yᵢ − p_y wᵢ, the perspective-correct weights are n/Σn, n = a × c.
//!   They, and hence interpolated attributes, are differentiable in the clip positions; which
//!   triangle a pixel sees is not (silhouettes get their gradient from antialiasing).

pub mod reference;

/// Triangles a raster can index exactly (its ids are stored as f32).
pub const MAX_TRIANGLES: usize = 1 << 24;

/// The NDC point pixel (x, y) of a `width` × `height` image samples.
pub fn pixel_ndc(x: u32, y: u32, width: u32, height: u32) -> [f64; 2] {
    [
        (x as f64 + 0.5) / width as f64 * 2.0 - 1.0,
        1.0 - (y as f64 + 0.5) / height as f64 * 2.0,
    ]
}

/// A batch of `views` images of `width` × `height` pixels, view-major then row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RasterShape {
    pub views: u32,
    pub width: u32,
    pub height: u32,
}

impl RasterShape {
    pub fn pixels(&self) -> usize {
        self.views as usize * self.width as usize * self.height as usize
    }

    /// (view, x, y) of pixel `i`.
    pub fn locate(&self, i: usize) -> (u32, u32, u32) {
        let per_view = self.width as usize * self.height as usize;
        let pixel = i % per_view;
        (
            (i / per_view) as u32,
            (pixel % self.width as usize) as u32,
            (pixel / self.width as usize) as u32,
        )
    }
}

/// For each triangle, the vertex across each of its edges (edge k joins its vertices k + 1 and
/// k + 2) in the other triangle sharing that edge, or −1 where no other triangle does (an open
/// boundary, always a silhouette). Antialiasing tells silhouette edges from interior ones with it.
pub fn edge_opposites(triangles: &[[u32; 3]]) -> Vec<[i32; 3]> {
    let key = |a: u32, b: u32| (a.min(b), a.max(b));
    let mut sides: std::collections::HashMap<(u32, u32), Vec<(usize, u32)>> = Default::default();
    for (t, tri) in triangles.iter().enumerate() {
        for k in 0..3 {
            let edge = key(tri[(k + 1) % 3], tri[(k + 2) % 3]);
            sides.entry(edge).or_default().push((t, tri[k]));
        }
    }
    triangles
        .iter()
        .enumerate()
        .map(|(t, tri)| {
            std::array::from_fn(|k| {
                sides[&key(tri[(k + 1) % 3], tri[(k + 2) % 3])]
                    .iter()
                    .find(|&&(other, _)| other != t)
                    .map_or(-1, |&(_, v)| v as i32)
            })
        })
        .collect()
}
