//! Image tensors to pictures: 8-bit RGB quantisation, contact sheets and atomic PNG writes.

use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use image::{ImageFormat, Rgb, RgbImage};
use std::path::Path;

/// B × 3 × H × W decoder output in [−1, 1] → B RGB images, rounded to the nearest 8-bit level
/// (as diffusers' `numpy_to_pil`).
pub fn to_rgb_images(x: &Tensor) -> Result<Vec<RgbImage>> {
    let (b, c, h, w) = x.dims4()?;
    if c != 3 {
        return Err(Error::Input(format!(
            "expected RGB images, got {c} channels"
        )));
    }
    let bytes = ((x.to_dtype(DType::F32)? / 2.0)? + 0.5)?
        .clamp(0f32, 1f32)?
        .affine(255.0, 0.0)?
        .round()?
        .permute((0, 2, 3, 1))?
        .to_dtype(DType::U8)?
        .flatten_all()?
        .to_vec1::<u8>()?;
    Ok(bytes
        .chunks_exact(h * w * 3)
        .take(b)
        .map(|px| RgbImage::from_raw(w as u32, h as u32, px.to_vec()).expect("sized buffer"))
        .collect())
}

/// Pixels between tiles of a contact sheet.
const GAP: u32 = 4;

/// Tiles same-sized images row by row, `columns` wide, on a white background.
pub fn contact_sheet(images: &[RgbImage], columns: usize) -> RgbImage {
    let Some(first) = images.first() else {
        return RgbImage::new(0, 0);
    };
    let (w, h) = first.dimensions();
    let columns = columns.clamp(1, images.len()) as u32;
    let rows = (images.len() as u32).div_ceil(columns);
    let mut sheet = RgbImage::from_pixel(
        columns * (w + GAP) - GAP,
        rows * (h + GAP) - GAP,
        Rgb([255, 255, 255]),
    );
    for (i, img) in images.iter().enumerate() {
        let (col, row) = (i as u32 % columns, i as u32 / columns);
        image::imageops::replace(
            &mut sheet,
            img,
            (col * (w + GAP)) as i64,
            (row * (h + GAP)) as i64,
        );
    }
    sheet
}

/// Columns of a roughly square sheet of `n` images.
pub fn square_columns(n: usize) -> usize {
    (n as f64).sqrt().ceil().max(1.0) as usize
}

/// Writes a PNG atomically.
pub fn save_png(path: &Path, img: &RgbImage) -> Result<()> {
    crate::files::write_atomic_with(path, |tmp| {
        img.save_with_format(tmp, ImageFormat::Png)
            .map_err(std::io::Error::other)
    })
}

/// The image encoded as PNG.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(vec![]);
    img.write_to(&mut bytes, ImageFormat::Png)
        .map_err(|e| Error::Input(format!("encoding a PNG: {e}")))?;
    Ok(bytes.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn quantisation_rounds_and_clamps() {
        let x = Tensor::new(&[-2.0f32, -1.0, 0.0, 0.5, 1.0, 3.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 3, 1, 2))
            .unwrap();
        let img = &to_rgb_images(&x).unwrap()[0];
        // Channel-major in, pixel-major out: pixel 0 = (−2, 0, 1), pixel 1 = (−1, 0.5, 3).
        assert_eq!(img.get_pixel(0, 0).0, [0, 128, 255]);
        assert_eq!(img.get_pixel(1, 0).0, [0, 191, 255]);
    }

    #[test]
    fn sheet_places_tiles_in_rows() {
        let tile = |v| RgbImage::from_pixel(2, 3, Rgb([v, v, v]));
        let sheet = contact_sheet(&[tile(10), tile(20), tile(30)], 2);
        assert_eq!(sheet.dimensions(), (2 * 2 + GAP, 2 * 3 + GAP));
        assert_eq!(sheet.get_pixel(0, 0).0[0], 10);
        assert_eq!(sheet.get_pixel(2 + GAP, 0).0[0], 20);
        assert_eq!(sheet.get_pixel(0, 3 + GAP).0[0], 30);
        assert_eq!(sheet.get_pixel(2 + GAP, 3 + GAP).0[0], 255);
    }
}
