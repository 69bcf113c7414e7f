//! Triangle meshes extracted from the field: the isosurface, clean-up (floaters, duplicate
//! vertices), normals, and the measures tests check (area, volume, topology).

pub mod atlas;
pub mod export;
pub mod gltf;
pub mod isosurface;
pub mod load;
pub mod surface;

use std::collections::HashMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriangleMesh {
    pub positions: Vec<[f32; 3]>,
    /// Counter-clockwise seen from outside.
    pub triangles: Vec<[u32; 3]>,
}

/// The (unnormalised, twice-area) normal of triangle `f`.
pub fn face_normal(positions: &[[f32; 3]], f: [u32; 3]) -> [f32; 3] {
    let [a, b, c] = f.map(|i| positions[i as usize]);
    let u: [f32; 3] = std::array::from_fn(|k| b[k] - a[k]);
    let v: [f32; 3] = std::array::from_fn(|k| c[k] - a[k]);
    [
        u[1] * v[2] - u[2] * v[1],
        u[2] * v[0] - u[0] * v[2],
        u[0] * v[1] - u[1] * v[0],
    ]
}

/// Union-find over `0..n` (path halving).
pub(crate) struct DisjointSets(Vec<u32>);

impl DisjointSets {
    pub(crate) fn new(n: usize) -> Self {
        Self((0..n as u32).collect())
    }

    pub(crate) fn find(&mut self, mut i: u32) -> u32 {
        while self.0[i as usize] != i {
            self.0[i as usize] = self.0[self.0[i as usize] as usize];
            i = self.0[i as usize];
        }
        i
    }

    pub(crate) fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        self.0[rb as usize] = ra;
    }
}

/// Edge and orientation counts of a mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    pub vertices: usize,
    pub edges: usize,
    pub faces: usize,
    /// Edges not shared by exactly two triangles.
    pub boundary_or_nonmanifold_edges: usize,
    /// Directed edges used twice (neighbours that disagree on orientation).
    pub misoriented_edges: usize,
}

impl Topology {
    pub fn euler_characteristic(&self) -> i64 {
        self.vertices as i64 - self.edges as i64 + self.faces as i64
    }

    /// Closed, manifold and consistently oriented.
    pub fn is_watertight(&self) -> bool {
        self.boundary_or_nonmanifold_edges == 0 && self.misoriented_edges == 0
    }
}

impl TriangleMesh {
    /// Merges vertices at exactly the same position and drops triangles that collapse.
    pub fn weld(&mut self) {
        let mut first: HashMap<[u32; 3], u32> = HashMap::new();
        let mut remap = Vec::with_capacity(self.positions.len());
        let mut kept = Vec::with_capacity(self.positions.len());
        for p in &self.positions {
            let key = p.map(f32::to_bits);
            let id = *first.entry(key).or_insert_with(|| {
                kept.push(*p);
                (kept.len() - 1) as u32
            });
            remap.push(id);
        }
        self.positions = kept;
        self.triangles = self
            .triangles
            .iter()
            .map(|t| t.map(|i| remap[i as usize]))
            .filter(|[a, b, c]| a != b && b != c && a != c)
            .collect();
    }

    /// Drops connected components (by shared vertices) with fewer than `fraction` of the
    /// largest one's triangles, and the vertices no triangle uses.
    pub fn remove_small_components(&mut self, fraction: f64) {
        let mut sets = DisjointSets::new(self.positions.len());
        for t in &self.triangles {
            sets.union(t[0], t[1]);
            sets.union(t[0], t[2]);
        }
        let roots: Vec<u32> = self.triangles.iter().map(|t| sets.find(t[0])).collect();
        let mut sizes: HashMap<u32, usize> = HashMap::new();
        for r in &roots {
            *sizes.entry(*r).or_default() += 1;
        }
        let largest = sizes.values().copied().max().unwrap_or(0);
        let min = (largest as f64 * fraction).ceil() as usize;
        self.triangles = self
            .triangles
            .iter()
            .zip(&roots)
            .filter(|(_, r)| sizes[r] >= min)
            .map(|(t, _)| *t)
            .collect();
        self.drop_unused_vertices();
    }

    fn drop_unused_vertices(&mut self) {
        let mut new_id = vec![u32::MAX; self.positions.len()];
        let mut kept = vec![];
        for t in &mut self.triangles {
            for v in t.iter_mut() {
                if new_id[*v as usize] == u32::MAX {
                    new_id[*v as usize] = kept.len() as u32;
                    kept.push(self.positions[*v as usize]);
                }
                *v = new_id[*v as usize];
            }
        }
        self.positions = kept;
    }

    /// Area-weighted unit vertex normals.
    pub fn vertex_normals(&self) -> Vec<[f32; 3]> {
        let mut normals = vec![[0f32; 3]; self.positions.len()];
        for &t in &self.triangles {
            let n = face_normal(&self.positions, t);
            for v in t {
                for k in 0..3 {
                    normals[v as usize][k] += n[k];
                }
            }
        }
        for n in &mut normals {
            let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
            if len > 0.0 {
                *n = n.map(|c| c / len);
            } else {
                *n = [0.0, 0.0, 1.0];
            }
        }
        normals
    }

    pub fn area(&self) -> f64 {
        self.triangles
            .iter()
            .map(|&t| {
                let n = face_normal(&self.positions, t).map(f64::from);
                0.5 * (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt()
            })
            .sum()
    }

    /// Enclosed volume (divergence theorem; positive for outward-facing triangles).
    pub fn volume(&self) -> f64 {
        self.triangles
            .iter()
            .map(|t| {
                let [a, b, c] = t.map(|i| self.positions[i as usize].map(f64::from));
                (a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
                    + a[2] * (b[0] * c[1] - b[1] * c[0]))
                    / 6.0
            })
            .sum()
    }

    pub fn topology(&self) -> Topology {
        let mut undirected: HashMap<(u32, u32), usize> = HashMap::new();
        let mut directed: HashMap<(u32, u32), usize> = HashMap::new();
        for t in &self.triangles {
            for k in 0..3 {
                let (a, b) = (t[k], t[(k + 1) % 3]);
                *undirected.entry((a.min(b), a.max(b))).or_default() += 1;
                *directed.entry((a, b)).or_default() += 1;
            }
        }
        Topology {
            vertices: self.positions.len(),
            edges: undirected.len(),
            faces: self.triangles.len(),
            boundary_or_nonmanifold_edges: undirected.values().filter(|&&c| c != 2).count(),
            misoriented_edges: directed.values().filter(|&&c| c > 1).count(),
        }
    }
}
