//! Turntable previews: views orbiting the object at a fixed elevation, as frames and an
//! animated GIF (threestudio's evaluation cameras by default), of a field (volume rendering)
//! or of a mesh (rasterised).

use crate::camera::Camera;
use crate::error::{Error, Result};
use crate::field::RenderSettings;
use crate::gpu::GpuField;
use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, Rgb, RgbImage};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Turntable {
    pub frames: u32,
    pub fps: u32,
    pub elevation: f64,
    /// threestudio's evaluation distance and field of view.
    pub distance: f64,
    pub fov_y: f64,
    /// Square frames of this many pixels.
    pub size: u32,
    pub samples_per_ray: u32,
}

impl Default for Turntable {
    fn default() -> Self {
        Self {
            frames: 120,
            fps: 30,
            elevation: 15.0,
            distance: 3.0,
            fov_y: 40.0,
            size: 512,
            samples_per_ray: 512,
        }
    }
}

impl Turntable {
    /// Frame `i`'s camera: azimuth 360°·i/frames.
    pub fn camera(&self, i: u32) -> Camera {
        let azimuth = 360.0 * i as f64 / self.frames as f64;
        Camera::orbit(self.elevation, azimuth, self.distance, self.fov_y)
    }

    /// Renders every frame with `view`, calling `on_frame` after each.
    pub fn render(
        &self,
        mut view: impl FnMut(&Camera) -> Result<RgbImage>,
        mut on_frame: impl FnMut(u32),
    ) -> Result<Vec<RgbImage>> {
        if self.frames == 0 || self.size == 0 || self.fps == 0 {
            return Err(Error::Input(
                "--frames, --size and --fps must be at least 1".into(),
            ));
        }
        (0..self.frames)
            .map(|i| {
                let frame = view(&self.camera(i))?;
                on_frame(i);
                Ok(frame)
            })
            .collect()
    }

    /// A field's view (deterministic mid-step samples along each ray).
    pub fn field_view(&self, field: &mut GpuField, camera: &Camera) -> Result<RgbImage> {
        let settings = RenderSettings {
            samples_per_ray: self.samples_per_ray,
            ..RenderSettings::default()
        };
        let out = field.render(
            std::slice::from_ref(camera),
            self.size,
            self.size,
            &settings,
        )?;
        let mut img = RgbImage::new(self.size, self.size);
        for (px, c) in img.pixels_mut().zip(&out.color) {
            *px = Rgb([c[0], c[1], c[2]].map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8));
        }
        Ok(img)
    }

    /// An endlessly looping GIF of `frames` at this turntable's frame rate, written atomically.
    pub fn write_gif(&self, path: &Path, frames: &[RgbImage]) -> Result<()> {
        crate::files::write_atomic_with(path, |tmp| {
            let file = std::fs::File::create(tmp)?;
            let mut encoder = GifEncoder::new_with_speed(std::io::BufWriter::new(file), 10);
            encoder
                .set_repeat(Repeat::Infinite)
                .map_err(std::io::Error::other)?;
            let delay = Delay::from_numer_denom_ms(1000, self.fps);
            let frames = frames.iter().map(|f| {
                let rgba = image::DynamicImage::ImageRgb8(f.clone()).into_rgba8();
                Frame::from_parts(rgba, 0, 0, delay)
            });
            encoder.encode_frames(frames).map_err(std::io::Error::other)
        })
    }
}
