//! DMTet (Shen et al. 2021) as threestudio's geometry stage uses it: a tetrahedral grid over the
//! field's box whose vertices carry a signed distance and a deformation bounded by tanh to one
//! cell, and marching tetrahedra that
//! turn them into a triangle surface differentiably: each surface vertex lies on a grid edge
//! (a, b) at pₐ + t·(p_b − pₐ) with t = sₐ / (sₐ − s_b), a smooth function of both ends' signed
//! distances and deformations (which edges the surface crosses is not).
//!
//! The signed distance is positive inside, as the isosurface export's density − threshold is
//! (threestudio's DMTet level is negative inside): a field initialises it as density − threshold.
//!
//! The grid splits each cube into the six tetrahedra `mesh::isosurface` uses, so neighbouring
//! cubes share faces and the surface is closed wherever it stays inside the box. This f64
//! version is the reference a GPU extraction is checked against.

use crate::error::{Error, Result};
use crate::gpu::GpuField;
use crate::mesh::isosurface::TETRAHEDRA;
use crate::mesh::TriangleMesh;
use nalgebra::Vector3;
use std::collections::HashMap;

/// threestudio's refine configs: a 128-cell grid.
pub const DEFAULT_RESOLUTION: u32 = 128;

pub struct TetGrid {
    /// Cells per side.
    pub resolution: u32,
    /// The grid spans [−radius, radius]³.
    pub radius: f64,
    /// (resolution + 1)³ points, x fastest, then y, z.
    pub points: Vec<[f64; 3]>,
    /// Six per cell, as point indices.
    pub tets: Vec<[u32; 4]>,
}

impl TetGrid {
    pub fn new(resolution: u32, radius: f64) -> Self {
        let n = resolution as usize + 1;
        let step = 2.0 * radius / resolution as f64;
        let index = |x: usize, y: usize, z: usize| (x + n * (y + n * z)) as u32;
        let mut points = Vec::with_capacity(n * n * n);
        for z in 0..n {
            for y in 0..n {
                for x in 0..n {
                    points.push([x, y, z].map(|i| -radius + i as f64 * step));
                }
            }
        }
        let cells = resolution as usize;
        let mut tets = Vec::with_capacity(6 * cells * cells * cells);
        for z in 0..cells {
            for y in 0..cells {
                for x in 0..cells {
                    let corner = |c: usize| index(x + (c & 1), y + (c >> 1 & 1), z + (c >> 2 & 1));
                    tets.extend(TETRAHEDRA.iter().map(|t| t.map(corner)));
                }
            }
        }
        Self {
            resolution,
            radius,
            points,
            tets,
        }
    }

    /// The most a deformation moves a point along each axis: the box's side over the resolution
    /// (the offset is this times tanh of the raw parameter, threestudio's
    /// `normalize_grid_deformation`).
    pub fn max_offset(&self) -> f64 {
        2.0 * self.radius / self.resolution as f64
    }

    /// The grid's points moved by `deformation` (raw, one per point).
    pub fn deformed(&self, deformation: &[[f64; 3]]) -> Vec<[f64; 3]> {
        let scale = self.max_offset();
        self.points
            .iter()
            .zip(deformation)
            .map(|(p, d)| std::array::from_fn(|k| p[k] + scale * d[k].tanh()))
            .collect()
    }
}

/// The grid's signed distances from a NeRF field, as threestudio starts its mesh stage from the
/// coarse one: density − `threshold` at every grid point (positive inside). With zero
/// deformation, the extracted surface is the field's isosurface export at that threshold.
pub fn sdf_from_field(grid: &TetGrid, field: &GpuField, threshold: f32) -> Result<Vec<f64>> {
    if grid.radius != f64::from(field.config.radius) {
        return Err(Error::Input(format!(
            "a DMTet grid over [−{r}, {r}]³ cannot start from a field over [−{f}, {f}]³: make the grid with the field's radius",
            r = grid.radius,
            f = field.config.radius
        )));
    }
    let density = field.density_grid(grid.resolution + 1)?;
    Ok(density
        .iter()
        .map(|&d| f64::from(d) - f64::from(threshold))
        .collect())
}

/// A surface extracted from a grid: vertex i lies on grid edge `edges[i]` = (a, b), between an
/// inside point a and an outside point b; triangles face from inside to outside.
#[derive(Debug, Clone, Default)]
pub struct Surface {
    pub positions: Vec<[f64; 3]>,
    pub triangles: Vec<[u32; 3]>,
    pub edges: Vec<[u32; 2]>,
}

/// Marching tetrahedra over `grid` with signed distances `sdf` and raw deformations
/// `deformation` (one per point). One vertex per crossed grid edge, shared by every triangle on
/// it.
pub fn extract(grid: &TetGrid, sdf: &[f64], deformation: &[[f64; 3]]) -> Surface {
    assert_eq!(
        sdf.len(),
        grid.points.len(),
        "one signed distance per point"
    );
    assert_eq!(
        deformation.len(),
        grid.points.len(),
        "one deformation per point"
    );
    let points = grid.deformed(deformation);
    let mut surface = Surface::default();
    let mut on_edge: HashMap<(u32, u32), u32> = HashMap::new();
    let mut vertex = |a: u32, b: u32, surface: &mut Surface| -> u32 {
        *on_edge.entry((a, b)).or_insert_with(|| {
            let (sa, sb) = (sdf[a as usize], sdf[b as usize]);
            let t = sa / (sa - sb);
            let (pa, pb) = (points[a as usize], points[b as usize]);
            surface
                .positions
                .push(std::array::from_fn(|k| pa[k] + t * (pb[k] - pa[k])));
            surface.edges.push([a, b]);
            (surface.positions.len() - 1) as u32
        })
    };
    for tet in &grid.tets {
        // Most tetrahedra lie wholly inside or outside: skip them before any allocation.
        let inside = tet.iter().filter(|&&p| sdf[p as usize] > 0.0).count();
        if inside == 0 || inside == 4 {
            continue;
        }
        let (ins, outs): (Vec<u32>, Vec<u32>) = tet.iter().partition(|&&p| sdf[p as usize] > 0.0);
        let faces: Vec<[u32; 3]> = match (ins.as_slice(), outs.as_slice()) {
            (&[i], &[a, b, c]) => vec![[
                vertex(i, a, &mut surface),
                vertex(i, b, &mut surface),
                vertex(i, c, &mut surface),
            ]],
            (&[a, b, c], &[o]) => vec![[
                vertex(a, o, &mut surface),
                vertex(b, o, &mut surface),
                vertex(c, o, &mut surface),
            ]],
            (&[i, j], &[a, b]) => {
                let q = [
                    vertex(i, a, &mut surface),
                    vertex(i, b, &mut surface),
                    vertex(j, b, &mut surface),
                    vertex(j, a, &mut surface),
                ];
                vec![[q[0], q[1], q[2]], [q[0], q[2], q[3]]]
            }
            _ => continue,
        };
        // Face each triangle from the tetrahedron's inside points towards its outside ones.
        let centroid = |set: &[u32]| -> [f64; 3] {
            std::array::from_fn(|k| {
                set.iter().map(|&p| points[p as usize][k]).sum::<f64>() / set.len() as f64
            })
        };
        let (inside, outside) = (centroid(&ins), centroid(&outs));
        for f in faces {
            let [a, b, c] = f.map(|v| Vector3::from(surface.positions[v as usize]));
            let normal = (b - a).cross(&(c - a));
            let facing = normal.dot(&(Vector3::from(outside) - Vector3::from(inside)));
            surface
                .triangles
                .push(if facing < 0.0 { [f[0], f[2], f[1]] } else { f });
        }
    }
    surface
}

/// nvdiffrec's SDF sign regulariser, against spurious surfaces: over the grid edges the surface
/// crosses, the mean of the binary cross-entropies between each end's sign probability σ(s) and
/// the other end's sign, softplus(sₐ) + softplus(−s_b) for inside a and outside b; with its
/// gradient per grid point (it shrinks signed distances on both sides of the surface).
pub fn sign_consistency(surface: &Surface, sdf: &[f64]) -> (f64, Vec<f64>) {
    let mut grad = vec![0.0; sdf.len()];
    if surface.edges.is_empty() {
        return (0.0, grad);
    }
    let n = surface.edges.len() as f64;
    let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    let mut loss = 0.0;
    for &[a, b] in &surface.edges {
        let (sa, sb) = (sdf[a as usize], sdf[b as usize]);
        loss += softplus(sa) + softplus(-sb);
        grad[a as usize] += sigmoid(sa) / n;
        grad[b as usize] -= sigmoid(-sb) / n;
    }
    (loss / n, grad)
}

impl Surface {
    /// The surface as a mesh (f32 positions) for export, previews and topology checks.
    pub fn to_mesh(&self) -> TriangleMesh {
        TriangleMesh {
            positions: self.positions.iter().map(|p| p.map(|v| v as f32)).collect(),
            triangles: self.triangles.clone(),
        }
    }

    /// The surface as an export takes it: welded, components under `min_component` of the
    /// largest dropped.
    pub fn export_mesh(&self, min_component: f64) -> TriangleMesh {
        let mut mesh = self.to_mesh();
        mesh.weld();
        mesh.remove_small_components(min_component);
        mesh
    }

    /// dL/d(sdf) and dL/d(raw deformation), per grid point, from dL/d(positions), with the
    /// crossed edges held fixed.
    pub fn backward(
        &self,
        grid: &TetGrid,
        sdf: &[f64],
        deformation: &[[f64; 3]],
        grad_positions: &[[f64; 3]],
    ) -> (Vec<f64>, Vec<[f64; 3]>) {
        let points = grid.deformed(deformation);
        let scale = grid.max_offset();
        let mut grad_sdf = vec![0.0; sdf.len()];
        let mut grad_deformation = vec![[0.0; 3]; deformation.len()];
        for (&[a, b], g) in self.edges.iter().zip(grad_positions) {
            let (a, b) = (a as usize, b as usize);
            let (sa, sb) = (sdf[a], sdf[b]);
            let d = sa - sb;
            let t = sa / d;
            // p = pₐ + t·(p_b − pₐ); dt/dsₐ = −s_b/d², dt/ds_b = sₐ/d².
            let along: f64 = (0..3).map(|k| g[k] * (points[b][k] - points[a][k])).sum();
            grad_sdf[a] += along * -sb / (d * d);
            grad_sdf[b] += along * sa / (d * d);
            for k in 0..3 {
                // dp/dpₐ = 1 − t, dp/dp_b = t; d(point)/d(raw) = scale·(1 − tanh²).
                let slope = |raw: f64| scale * (1.0 - raw.tanh().powi(2));
                grad_deformation[a][k] += g[k] * (1.0 - t) * slope(deformation[a][k]);
                grad_deformation[b][k] += g[k] * t * slope(deformation[b][k]);
            }
        }
        (grad_sdf, grad_deformation)
    }
}
