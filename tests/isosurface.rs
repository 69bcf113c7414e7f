//! Marching tetrahedra on analytic fields: closed, consistently oriented manifolds with the
//! right area, volume and topology.

mod common;

use std::f64::consts::PI;

fn length(p: [f32; 3]) -> f32 {
    (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt()
}

#[test]
fn a_sphere_is_closed_oriented_and_measures_right() {
    let r = 0.7;
    let mesh = common::analytic_surface(128, |p| r - length(p));
    let topo = mesh.topology();
    assert!(topo.is_watertight(), "{topo:?}");
    assert_eq!(topo.euler_characteristic(), 2, "{topo:?}");
    let r = r as f64;
    let area_err = mesh.area() / (4.0 * PI * r * r) - 1.0;
    let volume_err = mesh.volume() / (4.0 / 3.0 * PI * r * r * r) - 1.0;
    eprintln!(
        "sphere at 128³: area error {area_err:.2e}, volume error {volume_err:.2e}, {} triangles",
        topo.faces
    );
    assert!(area_err.abs() < 0.01 && volume_err.abs() < 0.01);
    // Outward normals: the volume is positive, and each vertex normal points away from the centre.
    let normals = mesh.vertex_normals();
    for (p, n) in mesh.positions.iter().zip(&normals) {
        assert!(p[0] * n[0] + p[1] * n[1] + p[2] * n[2] > 0.0);
    }
}

#[test]
fn a_torus_has_euler_characteristic_zero() {
    let (big, small) = (0.55f32, 0.2f32);
    let mesh = common::analytic_surface(96, |[x, y, z]| {
        let ring = (x * x + y * y).sqrt() - big;
        small - (ring * ring + z * z).sqrt()
    });
    let topo = mesh.topology();
    assert!(topo.is_watertight(), "{topo:?}");
    assert_eq!(topo.euler_characteristic(), 0, "{topo:?}");
}

#[test]
fn small_floaters_are_removed() {
    let mut mesh = common::analytic_surface(64, |p| {
        let big = 0.6 - length(p);
        let floater = 0.05 - length([p[0] - 0.85, p[1] - 0.85, p[2] - 0.85]);
        big.max(floater)
    });
    let before = mesh.triangles.len();
    mesh.remove_small_components(0.01);
    assert!(mesh.triangles.len() < before, "the floater is gone");
    let topo = mesh.topology();
    assert!(
        topo.is_watertight() && topo.euler_characteristic() == 2,
        "{topo:?}"
    );
}
