//! Vertex normals and the surface regularisers of threestudio's mesh refinement, each with its
//! gradient with respect to the vertex positions (the DMTet stage carries it on to the grid):
//! - normal consistency: the mean over edges of 1 − cos between its two vertices' normals
//!   (area-weighted sums of the adjacent faces' normals, normalised);
//! - Laplacian smoothness: the mean over vertices of |deg(i)·vᵢ − Σ neighbours|, the uniform
//!   Laplacian's norm per vertex.

use std::collections::BTreeSet;

type V3 = [f64; 3];

fn sub(a: V3, b: V3) -> V3 {
    std::array::from_fn(|k| a[k] - b[k])
}

fn add_to(a: &mut V3, b: V3, scale: f64) {
    for k in 0..3 {
        a[k] += scale * b[k];
    }
}

fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}

/// Each undirected edge once, as (smaller, larger) vertex index.
pub fn edges(triangles: &[[u32; 3]]) -> Vec<[u32; 2]> {
    let set: BTreeSet<[u32; 2]> = triangles
        .iter()
        .flat_map(|t| (0..3).map(move |k| (t[k], t[(k + 1) % 3])))
        .map(|(a, b)| [a.min(b), a.max(b)])
        .collect();
    set.into_iter().collect()
}

/// Vertex normals as threestudio computes them: the sum of the adjacent faces' (area-weighted)
/// normals, normalised (zero where the sum is, where threestudio substitutes +z); with the
/// backward to the positions.
pub struct VertexNormals {
    sums: Vec<V3>,
    pub unit: Vec<V3>,
}

impl VertexNormals {
    pub fn new(positions: &[V3], triangles: &[[u32; 3]]) -> Self {
        let mut sums = vec![[0.0; 3]; positions.len()];
        for t in triangles {
            let [a, b, c] = t.map(|v| positions[v as usize]);
            let n = cross(sub(b, a), sub(c, a));
            for &v in t {
                add_to(&mut sums[v as usize], n, 1.0);
            }
        }
        let unit = sums
            .iter()
            .map(|m| {
                let l = norm(*m);
                if l > 0.0 {
                    m.map(|x| x / l)
                } else {
                    [0.0; 3]
                }
            })
            .collect();
        Self { sums, unit }
    }

    /// dL/d(positions) from dL/d(unit normals).
    pub fn backward(&self, positions: &[V3], triangles: &[[u32; 3]], grad_unit: &[V3]) -> Vec<V3> {
        // Through the normalisation: dL/dm = (g − (g·u)u)/|m|.
        let grad_sums: Vec<V3> = (0..positions.len())
            .map(|v| {
                let l = norm(self.sums[v]);
                if l == 0.0 {
                    return [0.0; 3];
                }
                let (g, u) = (grad_unit[v], self.unit[v]);
                let along = dot(g, u);
                std::array::from_fn(|k| (g[k] - along * u[k]) / l)
            })
            .collect();
        // Through each face normal n = (b − a) × (c − a).
        let mut grad = vec![[0.0; 3]; positions.len()];
        for t in triangles {
            let [a, b, c] = t.map(|v| positions[v as usize]);
            let mut gn = [0.0; 3];
            for &v in t {
                add_to(&mut gn, grad_sums[v as usize], 1.0);
            }
            let gb = cross(sub(c, a), gn);
            let gc = cross(gn, sub(b, a));
            add_to(&mut grad[t[1] as usize], gb, 1.0);
            add_to(&mut grad[t[2] as usize], gc, 1.0);
            add_to(&mut grad[t[0] as usize], gb, -1.0);
            add_to(&mut grad[t[0] as usize], gc, -1.0);
        }
        grad
    }
}

/// The normal consistency loss and its gradient per vertex.
pub fn normal_consistency(positions: &[V3], triangles: &[[u32; 3]]) -> (f64, Vec<V3>) {
    let normals = VertexNormals::new(positions, triangles);
    let edges = edges(triangles);
    let count = edges.len().max(1) as f64;
    let mut loss = 0.0;
    let mut grad_unit = vec![[0.0; 3]; positions.len()];
    for &[i, j] in &edges {
        let (ui, uj) = (normals.unit[i as usize], normals.unit[j as usize]);
        loss += 1.0 - dot(ui, uj);
        add_to(&mut grad_unit[i as usize], uj, -1.0 / count);
        add_to(&mut grad_unit[j as usize], ui, -1.0 / count);
    }
    (
        loss / count,
        normals.backward(positions, triangles, &grad_unit),
    )
}

/// The Laplacian smoothness loss and its gradient per vertex.
pub fn laplacian_smoothness(positions: &[V3], triangles: &[[u32; 3]]) -> (f64, Vec<V3>) {
    let edges = edges(triangles);
    let mut delta: Vec<V3> = vec![[0.0; 3]; positions.len()];
    for &[i, j] in &edges {
        let (pi, pj) = (positions[i as usize], positions[j as usize]);
        add_to(&mut delta[i as usize], sub(pi, pj), 1.0);
        add_to(&mut delta[j as usize], sub(pj, pi), 1.0);
    }
    let count = positions.len().max(1) as f64;
    let loss = delta.iter().map(|d| norm(*d)).sum::<f64>() / count;
    let grad_delta: Vec<V3> = delta
        .iter()
        .map(|d| {
            let l = norm(*d);
            if l > 0.0 {
                d.map(|x| x / (l * count))
            } else {
                [0.0; 3]
            }
        })
        .collect();
    // δᵢ = Σⱼ (vᵢ − vⱼ) over i's neighbours: each edge moves both ends.
    let mut grad = vec![[0.0; 3]; positions.len()];
    for &[i, j] in &edges {
        let diff = sub(grad_delta[i as usize], grad_delta[j as usize]);
        add_to(&mut grad[i as usize], diff, 1.0);
        add_to(&mut grad[j as usize], diff, -1.0);
    }
    (loss, grad)
}
