//! Pinhole cameras in the field's world (Z up, OpenGL camera axes: x right, y up, looking along
//! −z): MVDream's camera conditioning, threestudio's random 4-view batches, and rays.

use nalgebra::{Matrix4, Vector3};
use rand::Rng;

/// A ray `origin + t·dir` with unit `dir`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ray {
    pub origin: [f64; 3],
    pub dir: [f64; 3],
}

impl Ray {
    pub fn at(&self, t: f64) -> [f64; 3] {
        std::array::from_fn(|a| self.origin[a] + t * self.dir[a])
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Camera {
    /// Camera-to-world transform.
    pub c2w: Matrix4<f64>,
    /// Vertical field of view in degrees.
    pub fov_y: f64,
}

impl Camera {
    /// A camera at `distance` from the origin looking at it, at `elevation` above the xy plane
    /// and `azimuth` from +x towards +y (degrees; threestudio's convention, up = +z).
    pub fn orbit(elevation: f64, azimuth: f64, distance: f64, fov_y: f64) -> Self {
        let (e, a) = (elevation.to_radians(), azimuth.to_radians());
        let position = Vector3::new(e.cos() * a.cos(), e.cos() * a.sin(), e.sin()) * distance;
        let forward = (-position).normalize();
        let right = forward.cross(&Vector3::z()).normalize();
        let up = right.cross(&forward).normalize();
        let mut c2w = Matrix4::identity();
        for r in 0..3 {
            c2w[(r, 0)] = right[r];
            c2w[(r, 1)] = up[r];
            c2w[(r, 2)] = -forward[r];
            c2w[(r, 3)] = position[r];
        }
        Self { c2w, fov_y }
    }

    pub fn position(&self) -> [f64; 3] {
        std::array::from_fn(|r| self.c2w[(r, 3)])
    }

    /// Focal length in pixels for an image `height` pixels tall.
    pub fn focal(&self, height: u32) -> f64 {
        0.5 * height as f64 / (0.5 * self.fov_y.to_radians()).tan()
    }

    /// The ray through the centre of pixel (x, y) of a width × height image (y down).
    pub fn ray(&self, width: u32, height: u32, x: u32, y: u32) -> Ray {
        let f = self.focal(height);
        let local = Vector3::new(
            (x as f64 + 0.5 - width as f64 / 2.0) / f,
            -(y as f64 + 0.5 - height as f64 / 2.0) / f,
            -1.0,
        );
        let dir = (self.c2w.fixed_view::<3, 3>(0, 0) * local).normalize();
        Ray {
            origin: self.position(),
            dir: [dir.x, dir.y, dir.z],
        }
    }

    /// The 16 numbers MVDream is conditioned on: the row-major c2w with its translation scaled
    /// to unit length (MVDream's `normalize_camera`; rotation and direction only).
    pub fn mvdream_conditioning(&self) -> [f64; 16] {
        let mut m = self.c2w;
        let t = Vector3::new(m[(0, 3)], m[(1, 3)], m[(2, 3)]);
        let t = t / (t.norm() + 1e-8);
        for r in 0..3 {
            m[(r, 3)] = t[r];
        }
        std::array::from_fn(|i| m[(i / 4, i % 4)])
    }
}

/// MVDream's `get_camera`: `frames` cameras at unit distance, azimuths `start + k·span/frames`
/// (MVDream's azimuth, 90° ahead of threestudio's), row-major c2w in the Z-up world, or in
/// MVDream's Y-up world when `blender_coord` is false.
pub fn mvdream_cameras(
    frames: usize,
    elevation: f64,
    azimuth_start: f64,
    azimuth_span: f64,
    blender_coord: bool,
) -> Vec<[f64; 16]> {
    // Z-up (x, y, z) is Y-up (x, z, −y): undo MVDream's flip of the y and z axes.
    #[rustfmt::skip]
    let to_y_up = Matrix4::new(
        1.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 1.0, 0.0,
        0.0, -1.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 1.0,
    );
    (0..frames)
        .map(|k| {
            let azimuth = azimuth_start + k as f64 * azimuth_span / frames as f64;
            let cam = Camera::orbit(elevation, azimuth - 90.0, 1.0, 0.0);
            let m = if blender_coord {
                cam.c2w
            } else {
                to_y_up * cam.c2w
            };
            std::array::from_fn(|i| m[(i / 4, i % 4)])
        })
        .collect()
}

/// Cameras of [`mvdream_cameras`] as the `frames × 16` f32 tensor the UNet takes, rounded once
/// from f64 at the end as `get_camera`'s final `.float()`.
pub fn mvdream_camera_tensor(
    cameras: &[[f64; 16]],
    device: &candle_core::Device,
) -> candle_core::Result<candle_core::Tensor> {
    let flat: Vec<f32> = cameras.iter().flatten().map(|&v| v as f32).collect();
    candle_core::Tensor::from_vec(flat, (cameras.len(), 16), device)
}

/// threestudio's random multi-view camera ranges (MVDream-threestudio's `mvdream-sd21.yaml`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CameraRanges {
    pub views: usize,
    pub elevation: [f64; 2],
    pub fov_y: [f64; 2],
    /// Distance as a multiple of 1 / tan(fov_y / 2) (threestudio's `relative_radius`), so the
    /// object fills the frame alike at every field of view.
    pub relative_distance: [f64; 2],
}

impl Default for CameraRanges {
    fn default() -> Self {
        Self {
            views: 4,
            elevation: [0.0, 30.0],
            fov_y: [15.0, 60.0],
            relative_distance: [0.8, 1.0],
        }
    }
}

impl CameraRanges {
    /// One group of `views` cameras sharing elevation, field of view and distance, with
    /// azimuths 360°/views apart from a random start.
    pub fn sample(&self, rng: &mut impl Rng) -> Vec<Camera> {
        let uniform =
            |rng: &mut dyn rand::RngCore, [a, b]: [f64; 2]| a + (b - a) * rng.random::<f64>();
        let fov_y = uniform(rng, self.fov_y);
        let distance = uniform(rng, self.relative_distance) / (0.5 * fov_y.to_radians()).tan();
        let elevation = if rng.random::<bool>() {
            uniform(rng, self.elevation)
        } else {
            // MVDream-threestudio's "uniform on the sphere" branch, kept as it is there: it
            // maps [0°, 30°] to [0°, 19.47°].
            let [p0, p1] = self.elevation.map(|e| (e + 90.0) / 180.0);
            (2.0 * uniform(rng, [p0, p1]) - 1.0).asin().to_degrees()
        };
        let start: f64 = rng.random();
        let n = self.views as f64;
        (0..self.views)
            .map(|k| {
                let azimuth = (start + k as f64) / n * 360.0 - 180.0;
                Camera::orbit(elevation, azimuth, distance, fov_y)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn orbit_looks_at_the_origin_with_z_up() {
        let cam = Camera::orbit(0.0, 0.0, 2.0, 40.0);
        assert!((cam.position()[0] - 2.0).abs() < 1e-12);
        // The centre ray goes from +x towards the origin.
        let ray = cam.ray(2, 2, 1, 1);
        let centre = cam.ray(1, 1, 0, 0);
        assert!((centre.dir[0] + 1.0).abs() < 1e-12, "{centre:?}");
        // Pixel rows go down in the image: the lower-right pixel's ray points below the centre.
        assert!(ray.dir[2] < 0.0);
    }

    #[test]
    fn groups_are_ninety_degrees_apart() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        for _ in 0..20 {
            let cams = CameraRanges::default().sample(&mut rng);
            let p: Vec<[f64; 3]> = cams.iter().map(Camera::position).collect();
            let dot = p[0][0] * p[1][0] + p[0][1] * p[1][1];
            assert!(dot.abs() < 1e-9, "views 0 and 1 are 90° apart in azimuth");
            let fov = cams[0].fov_y;
            assert!((15.0..=60.0).contains(&fov));
            let d = cams[0].position().iter().map(|v| v * v).sum::<f64>().sqrt();
            let tan = (0.5 * fov.to_radians()).tan();
            assert!((0.8 / tan - 1e-9..=1.0 / tan + 1e-9).contains(&d));
            let e = (cams[0].position()[2] / d).asin().to_degrees();
            assert!((-1e-9..=30.0 + 1e-9).contains(&e));
        }
    }
}
