//! Isosurfaces of a sampled scalar field by marching tetrahedra: each grid cell is split into
//! six tetrahedra around its main diagonal, a split every neighbouring cell shares, so the
//! surface is closed and manifold wherever it stays inside the grid, with no case tables.
//! Vertices live on grid edges and are shared through an edge map (welded by construction).

use super::TriangleMesh;
use std::collections::HashMap;

/// Values on a regular grid of `dims` points spanning `min..=max` (x fastest, then y, z).
pub struct Grid<'a> {
    pub values: &'a [f32],
    pub dims: [usize; 3],
    pub min: [f32; 3],
    pub max: [f32; 3],
}

/// The six tetrahedra of a cell: monotone paths from corner 0 to corner 7 (corner bits: x = 1,
/// y = 2, z = 4), one per order of the axes.
pub const TETRAHEDRA: [[usize; 4]; 6] = [
    [0, 1, 3, 7],
    [0, 1, 5, 7],
    [0, 2, 3, 7],
    [0, 2, 6, 7],
    [0, 4, 5, 7],
    [0, 4, 6, 7],
];

impl Grid<'_> {
    fn index(&self, [x, y, z]: [usize; 3]) -> usize {
        x + self.dims[0] * (y + self.dims[1] * z)
    }

    fn position(&self, p: [usize; 3]) -> [f32; 3] {
        std::array::from_fn(|a| {
            let t = p[a] as f32 / (self.dims[a] - 1) as f32;
            self.min[a] + t * (self.max[a] - self.min[a])
        })
    }

    /// The surface where the field crosses `threshold`, oriented with normals pointing from
    /// values above it (inside) to values below (outside).
    pub fn isosurface(&self, threshold: f32) -> TriangleMesh {
        assert_eq!(
            self.values.len(),
            self.dims.iter().product::<usize>(),
            "grid size"
        );
        let mut mesh = TriangleMesh::default();
        let mut on_edge: HashMap<(usize, usize), u32> = HashMap::new();
        let [nx, ny, nz] = self.dims;
        for z in 0..nz.saturating_sub(1) {
            for y in 0..ny.saturating_sub(1) {
                for x in 0..nx.saturating_sub(1) {
                    let corner = |c: usize| [x + (c & 1), y + (c >> 1 & 1), z + (c >> 2 & 1)];
                    let ids: [usize; 8] = std::array::from_fn(|c| self.index(corner(c)));
                    let inside = ids.map(|i| self.values[i] > threshold);
                    if inside.iter().all(|&b| b) || inside.iter().all(|&b| !b) {
                        continue;
                    }
                    for tet in TETRAHEDRA {
                        let points = tet.map(corner);
                        let idx = tet.map(|c| ids[c]);
                        self.tetrahedron(points, idx, threshold, &mut on_edge, &mut mesh);
                    }
                }
            }
        }
        mesh
    }

    /// The vertex where the surface crosses the edge between grid points `a` and `b`.
    fn edge_vertex(
        &self,
        (pa, a): ([usize; 3], usize),
        (pb, b): ([usize; 3], usize),
        threshold: f32,
        on_edge: &mut HashMap<(usize, usize), u32>,
        mesh: &mut TriangleMesh,
    ) -> u32 {
        let key = (a.min(b), a.max(b));
        *on_edge.entry(key).or_insert_with(|| {
            let (va, vb) = (self.values[a], self.values[b]);
            let t = ((threshold - va) / (vb - va)).clamp(0.0, 1.0);
            let (xa, xb) = (self.position(pa), self.position(pb));
            mesh.positions
                .push(std::array::from_fn(|k| xa[k] + t * (xb[k] - xa[k])));
            (mesh.positions.len() - 1) as u32
        })
    }

    fn tetrahedron(
        &self,
        points: [[usize; 3]; 4],
        idx: [usize; 4],
        threshold: f32,
        on_edge: &mut HashMap<(usize, usize), u32>,
        mesh: &mut TriangleMesh,
    ) {
        let (ins, outs): (Vec<usize>, Vec<usize>) =
            (0..4).partition(|&i| self.values[idx[i]] > threshold);
        let mut vertex = |i: usize, o: usize| {
            self.edge_vertex(
                (points[i], idx[i]),
                (points[o], idx[o]),
                threshold,
                on_edge,
                mesh,
            )
        };
        let faces: Vec<[u32; 3]> = match (ins.as_slice(), outs.as_slice()) {
            (&[i], &[a, b, c]) | (&[a, b, c], &[i]) => {
                vec![[vertex(i, a), vertex(i, b), vertex(i, c)]]
            }
            (&[i, j], &[a, b]) => {
                let q = [vertex(i, a), vertex(i, b), vertex(j, b), vertex(j, a)];
                vec![[q[0], q[1], q[2]], [q[0], q[2], q[3]]]
            }
            _ => return,
        };
        // Orient each face from the tetrahedron's inside corners towards its outside ones.
        let centroid = |set: &[usize]| -> [f32; 3] {
            let n = set.len() as f32;
            std::array::from_fn(|k| {
                set.iter()
                    .map(|&i| self.position(points[i])[k])
                    .sum::<f32>()
                    / n
            })
        };
        let (c_in, c_out) = (centroid(&ins), centroid(&outs));
        let outward: [f32; 3] = std::array::from_fn(|k| c_out[k] - c_in[k]);
        for f in faces {
            let n = super::face_normal(&mesh.positions, f);
            let facing: f32 = (0..3).map(|k| n[k] * outward[k]).sum();
            mesh.triangles
                .push(if facing < 0.0 { [f[0], f[2], f[1]] } else { f });
        }
    }
}
