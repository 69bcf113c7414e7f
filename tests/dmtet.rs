//! DMTet's grid and differentiable marching tetrahedra: a closed, outward-facing surface where
//! the signed distance says, bounded deformations, and gradients against finite differences.

use dream3d::dmtet::{extract, sdf_from_field, sign_consistency, TetGrid};
use dream3d::field::FieldConfig;
use dream3d::gpu::{GpuContext, GpuField};
use dream3d::mesh::export::{self, Albedo, ExportSettings};
use rand::{Rng, SeedableRng};
use std::sync::Arc;

fn sphere_sdf(grid: &TetGrid, radius: f64) -> Vec<f64> {
    grid.points
        .iter()
        .map(|p| radius - (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt())
        .collect()
}

#[test]
fn a_sphere_becomes_a_closed_outward_surface_on_it() {
    let grid = TetGrid::new(12, 1.0);
    assert_eq!(grid.points.len(), 13 * 13 * 13);
    assert_eq!(grid.tets.len(), 6 * 12 * 12 * 12);
    let r = 0.7;
    let surface = extract(
        &grid,
        &sphere_sdf(&grid, r),
        &vec![[0.0; 3]; grid.points.len()],
    );
    let mesh = surface.to_mesh();
    let topology = mesh.topology();
    assert!(topology.is_watertight(), "{topology:?}");
    assert_eq!(topology.euler_characteristic(), 2, "a sphere's surface");
    // Vertices interpolate the signed distance linearly along grid edges: close to the sphere,
    // within a fraction of a cell.
    for p in &surface.positions {
        let d = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
        assert!(
            (d - r).abs() < 0.25 * grid.max_offset(),
            "vertex at radius {d}"
        );
    }
    let volume = mesh.volume();
    let exact = 4.0 / 3.0 * std::f64::consts::PI * r * r * r;
    assert!(
        volume > 0.0 && (volume - exact).abs() / exact < 0.05,
        "volume {volume} for {exact}: outward-facing and close"
    );
    let sdf = sphere_sdf(&grid, r);
    for (v, [a, b]) in surface.edges.iter().enumerate() {
        let (sa, sb) = (sdf[*a as usize], sdf[*b as usize]);
        assert!(
            sa > 0.0 && sb <= 0.0,
            "vertex {v}: edge from inside to outside"
        );
    }
}

#[test]
fn deformations_move_points_at_most_one_cell() {
    let grid = TetGrid::new(4, 0.5);
    let huge = vec![[50.0, -50.0, 0.3]; grid.points.len()];
    for (p, q) in grid.points.iter().zip(grid.deformed(&huge)) {
        for k in 0..3 {
            assert!((q[k] - p[k]).abs() <= grid.max_offset() + 1e-12);
        }
    }
    assert!(
        (grid.max_offset() - 0.25).abs() < 1e-12,
        "side 1 over 4 cells"
    );
}

#[test]
fn surface_gradients_match_finite_differences() {
    let grid = TetGrid::new(6, 1.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let sdf: Vec<f64> = sphere_sdf(&grid, 0.6)
        .iter()
        .map(|s| s + rng.random_range(-0.05..0.05))
        .collect();
    let deformation: Vec<[f64; 3]> = (0..grid.points.len())
        .map(|_| std::array::from_fn(|_| rng.random_range(-1.0..1.0)))
        .collect();
    let surface = extract(&grid, &sdf, &deformation);
    let grad: Vec<[f64; 3]> = (0..surface.positions.len())
        .map(|_| std::array::from_fn(|_| rng.random_range(-1.0..1.0)))
        .collect();
    // L = Σ g·positions over the same crossed edges (a small step changes no sign).
    let loss = |sdf: &[f64], deformation: &[[f64; 3]]| {
        let moved = extract(&grid, sdf, deformation);
        assert_eq!(
            moved.edges, surface.edges,
            "the step changed which edges are crossed"
        );
        moved
            .positions
            .iter()
            .zip(&grad)
            .map(|(p, g)| (0..3).map(|k| p[k] * g[k]).sum::<f64>())
            .sum::<f64>()
    };
    let (grad_sdf, grad_deformation) = surface.backward(&grid, &sdf, &deformation, &grad);
    let on_surface: Vec<usize> = surface
        .edges
        .iter()
        .flatten()
        .map(|&p| p as usize)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        on_surface.len() > 50,
        "{} points near the surface",
        on_surface.len()
    );
    let h = 1e-6;
    for &p in on_surface.iter().step_by(5) {
        let mut plus = sdf.clone();
        let mut minus = sdf.clone();
        plus[p] += h;
        minus[p] -= h;
        let fd = (loss(&plus, &deformation) - loss(&minus, &deformation)) / (2.0 * h);
        assert!(
            (fd - grad_sdf[p]).abs() < 1e-6 * fd.abs().max(1.0),
            "sdf[{p}]: finite difference {fd}, analytic {}",
            grad_sdf[p]
        );
        for k in 0..3 {
            let mut plus = deformation.clone();
            let mut minus = deformation.clone();
            plus[p][k] += h;
            minus[p][k] -= h;
            let fd = (loss(&sdf, &plus) - loss(&sdf, &minus)) / (2.0 * h);
            assert!(
                (fd - grad_deformation[p][k]).abs() < 1e-6 * fd.abs().max(1.0),
                "deformation[{p}][{k}]: finite difference {fd}, analytic {}",
                grad_deformation[p][k]
            );
        }
    }
    // Points away from the surface get nothing.
    for p in 0..grid.points.len() {
        if !on_surface.contains(&p) {
            assert_eq!(grad_sdf[p], 0.0);
            assert_eq!(grad_deformation[p], [0.0; 3]);
        }
    }
}

/// A bumpy closed surface: the sphere with noisy signed distances and deformations.
fn bumpy_surface() -> dream3d::dmtet::Surface {
    let grid = TetGrid::new(5, 1.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let sdf: Vec<f64> = sphere_sdf(&grid, 0.6)
        .iter()
        .map(|s| s + rng.random_range(-0.05..0.05))
        .collect();
    let deformation: Vec<[f64; 3]> = (0..grid.points.len())
        .map(|_| std::array::from_fn(|_| rng.random_range(-0.5..0.5)))
        .collect();
    extract(&grid, &sdf, &deformation)
}

type Regulariser = fn(&[[f64; 3]], &[[u32; 3]]) -> (f64, Vec<[f64; 3]>);

fn check_regulariser(name: &str, loss: Regulariser) {
    let surface = bumpy_surface();
    let (positions, triangles) = (&surface.positions, &surface.triangles);
    let (value, grad) = loss(positions, triangles);
    assert!(value > 0.0, "{name} of a bumpy surface");
    let h = 1e-6;
    for v in (0..positions.len()).step_by(3) {
        for k in 0..3 {
            let mut plus = positions.clone();
            let mut minus = positions.clone();
            plus[v][k] += h;
            minus[v][k] -= h;
            let fd = (loss(&plus, triangles).0 - loss(&minus, triangles).0) / (2.0 * h);
            assert!(
                (fd - grad[v][k]).abs() < 1e-6 * fd.abs().max(1e-2),
                "{name}: vertex {v}[{k}]: finite difference {fd}, analytic {}",
                grad[v][k]
            );
        }
    }
}

#[test]
fn regulariser_gradients_match_finite_differences() {
    use dream3d::mesh::surface::{laplacian_smoothness, normal_consistency};
    check_regulariser("normal consistency", normal_consistency);
    check_regulariser("Laplacian smoothness", laplacian_smoothness);
}

#[test]
fn flat_and_symmetric_meshes_give_the_regularisers_known_values() {
    use dream3d::mesh::surface::{laplacian_smoothness, normal_consistency};
    // A 4 × 4 vertex patch of the plane z = 0.3: every normal agrees.
    let n = 4u32;
    let positions: Vec<[f64; 3]> = (0..n * n)
        .map(|i| [(i % n) as f64, (i / n) as f64, 0.3])
        .collect();
    let mut triangles = vec![];
    for y in 0..n - 1 {
        for x in 0..n - 1 {
            let a = y * n + x;
            triangles.push([a, a + 1, a + n + 1]);
            triangles.push([a, a + n + 1, a + n]);
        }
    }
    let (nc, grad) = normal_consistency(&positions, &triangles);
    assert!(nc.abs() < 1e-15, "normal consistency {nc}");
    assert!(grad.iter().flatten().all(|g| g.abs() < 1e-12));
    // A regular octahedron: every vertex's neighbours average to a point on its own axis.
    let octahedron = [
        [1.0, 0.0, 0.0],
        [-1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, -1.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.0, 0.0, -1.0],
    ];
    let faces = [
        [0, 2, 4],
        [2, 1, 4],
        [1, 3, 4],
        [3, 0, 4],
        [2, 0, 5],
        [1, 2, 5],
        [3, 1, 5],
        [0, 3, 5],
    ];
    let (lap, _) = laplacian_smoothness(&octahedron, &faces);
    assert!(
        (lap - 4.0).abs() < 1e-12,
        "each vertex: 4·v − (sum of 4 neighbours) = 4·v, norm 4; got {lap}"
    );
}

/// Started from a field with no deformation, DMTet's surface is the export's isosurface: the
/// same tetrahedra, the same interpolation along the same edges.
#[test]
fn a_grid_started_from_a_field_reproduces_its_isosurface() {
    let config = FieldConfig {
        levels: 4,
        log2_table_size: 12,
        base_resolution: 4,
        per_level_scale: 2.0,
        hidden: 16,
        ..FieldConfig::default()
    };
    let ctx = Arc::new(
        GpuContext::new().expect("a wgpu adapter (lavapipe: apt install mesa-vulkan-drivers)"),
    );
    let field = GpuField::new(ctx, config.clone(), &config.init_params(3)).unwrap();
    let settings = ExportSettings {
        resolution: 33,
        threshold: 5.0,
        min_component: 0.0,
        albedo: Albedo::None,
    };
    let (isosurface, _) = export::extract(&field, &settings).unwrap();
    let grid = TetGrid::new(32, f64::from(config.radius));
    let sdf = sdf_from_field(&grid, &field, 5.0).unwrap();
    let surface = extract(&grid, &sdf, &vec![[0.0; 3]; grid.points.len()]);
    assert!(
        surface.triangles.len() > 100,
        "{} triangles",
        surface.triangles.len()
    );
    assert_eq!(surface.triangles.len(), isosurface.triangles.len());
    assert_eq!(surface.positions.len(), isosurface.positions.len());
    let mut ours: Vec<[f64; 3]> = surface.positions.clone();
    let mut theirs: Vec<[f64; 3]> = isosurface
        .positions
        .iter()
        .map(|p| p.map(f64::from))
        .collect();
    let key = |p: &[f64; 3]| {
        (p[0] * 1e4).round() as i64 * 1_000_000_000
            + (p[1] * 1e4).round() as i64 * 100_000
            + (p[2] * 1e4).round() as i64
    };
    ours.sort_by_key(key);
    theirs.sort_by_key(key);
    for (a, b) in ours.iter().zip(&theirs) {
        for k in 0..3 {
            assert!((a[k] - b[k]).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }
    let far = TetGrid::new(8, 2.0);
    let err = sdf_from_field(&far, &field, 5.0).unwrap_err().to_string();
    assert!(
        err.contains("make the grid with the field's radius"),
        "{err}"
    );
}

/// nvdiffrec's sign regulariser: its value on a hand-computed edge and its gradient against
/// finite differences (the crossed edges held fixed).
#[test]
fn sign_consistency_matches_its_formula_and_finite_differences() {
    let grid = TetGrid::new(6, 1.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let sdf: Vec<f64> = sphere_sdf(&grid, 0.6)
        .iter()
        .map(|s| 3.0 * s + rng.random_range(-0.05..0.05))
        .collect();
    let deformation = vec![[0.0; 3]; grid.points.len()];
    let surface = extract(&grid, &sdf, &deformation);
    let (loss, grad) = sign_consistency(&surface, &sdf);
    let softplus = |x: f64| (1.0 + x.exp()).ln();
    let want = surface
        .edges
        .iter()
        .map(|&[a, b]| softplus(sdf[a as usize]) + softplus(-sdf[b as usize]))
        .sum::<f64>()
        / surface.edges.len() as f64;
    assert!((loss - want).abs() < 1e-12, "{loss} vs {want}");
    let h = 1e-6;
    let mut checked = 0;
    for p in (0..sdf.len()).filter(|&p| grad[p] != 0.0).step_by(3) {
        let mut plus = sdf.clone();
        let mut minus = sdf.clone();
        plus[p] += h;
        minus[p] -= h;
        let fd = (sign_consistency(&surface, &plus).0 - sign_consistency(&surface, &minus).0)
            / (2.0 * h);
        assert!(
            (fd - grad[p]).abs() < 1e-7,
            "sdf[{p}]: finite difference {fd}, analytic {}",
            grad[p]
        );
        checked += 1;
    }
    assert!(checked > 20, "{checked} points checked");
}
