//! Reference images: reading a folder, and turning each image into training crops.
//!
//! Every image must decode: a corrupt file stops the fit with its name, since silently training
//! on fewer images would change what the distribution learns.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use image::{imageops::FilterType, DynamicImage, RgbImage};
use rand::Rng;
use std::path::{Path, PathBuf};

const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp"];

/// The images of `dir` (not recursive), sorted by file name, as RGB with any alpha
/// composited over white.
pub fn load_folder(dir: &Path) -> Result<Vec<(PathBuf, RgbImage)>> {
    if !dir.is_dir() {
        return Err(Error::Input(format!(
            "reference folder {} does not exist; pass a folder of 2–20 png/jpeg/webp images",
            dir.display()
        )));
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(Error::Input(format!(
            "{} holds no png, jpeg or webp images",
            dir.display()
        )));
    }
    let images = paths
        .into_iter()
        .map(|p| {
            let img = image::open(&p).map_err(|e| {
                Error::Input(format!(
                    "{}: cannot read the image ({e}); remove or replace it",
                    p.display()
                ))
            })?;
            Ok((p, to_rgb_on_white(img)))
        })
        .collect::<Result<Vec<_>>>()?;
    if images.len() < 2 {
        return Err(Error::Input(format!(
            "{} holds a single image; a prompt distribution is learned from the variation across 2–20 references",
            dir.display()
        )));
    }
    Ok(images)
}

/// RGB, alpha composited over white; grey images become RGB.
pub fn to_rgb_on_white(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    let rgba = img.to_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3] as f32 / 255.0;
        image::Rgb([0, 1, 2].map(|c| (p[c] as f32 * a + 255.0 * (1.0 - a)).round() as u8))
    })
}

/// Resizes the shorter side to `size` (bilinear), then crops a random `size`² square.
pub fn random_crop(img: &RgbImage, size: u32, rng: &mut impl Rng) -> RgbImage {
    let (w, h) = img.dimensions();
    let scale = size as f64 / w.min(h) as f64;
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).max(size),
        ((h as f64 * scale).round() as u32).max(size),
    );
    let resized = image::imageops::resize(img, nw, nh, FilterType::Triangle);
    let x = rng.random_range(0..=nw - size);
    let y = rng.random_range(0..=nh - size);
    image::imageops::crop_imm(&resized, x, y, size, size).to_image()
}

/// 1 × 3 × H × W in [−1, 1].
pub fn to_tensor(img: &RgbImage, device: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = img.dimensions();
    let data: Vec<f32> = img
        .as_raw()
        .iter()
        .map(|&v| v as f32 / 127.5 - 1.0)
        .collect();
    Tensor::from_vec(data, (h as usize, w as usize, 3), device)?
        .permute((2, 0, 1))?
        .unsqueeze(0)
}
