//! Texture atlases for baked albedo. The surface is cut into charts of connected triangles
//! that face the same one of the six axis directions, so projecting a chart onto its axis
//! plane keeps it flat and (almost always) unfolded; charts that still overlap themselves are
//! split into single triangles. Charts are packed on shelves of an N×N image at one common
//! texel density, and every covered texel gets the surface point it shows, to be coloured.

use super::{face_normal, DisjointSets, TriangleMesh};
use crate::error::{Error, Result};
use std::collections::HashMap;

/// Texels left around each chart, so bilinear filtering never mixes two charts.
const PADDING: u32 = 2;

/// A mesh unwrapped onto a square texture.
#[derive(Debug, Clone)]
pub struct Atlas {
    /// The surface with its vertices split where charts meet.
    pub mesh: TriangleMesh,
    /// Each vertex's index in the mesh that was unwrapped.
    pub source: Vec<u32>,
    /// Texture coordinates in [0, 1] (glTF's: origin at the image's top-left corner).
    pub uvs: Vec<[f32; 2]>,
    /// Image side in texels.
    pub size: u32,
    pub charts: usize,
    /// The texels triangles cover (row-major index) and the surface point each one shows.
    pub texels: Vec<(u32, [f32; 3])>,
}

/// Triangles projected together onto the plane orthogonal to `axis`.
struct Chart {
    faces: Vec<usize>,
    axis: usize,
}

/// The two coordinates left when projecting along `axis`.
fn project(p: [f32; 3], axis: usize) -> [f32; 2] {
    match axis {
        0 => [p[1], p[2]],
        1 => [p[0], p[2]],
        _ => [p[0], p[1]],
    }
}

/// Direction class of each triangle: dominant normal axis and its sign.
fn direction(n: [f32; 3]) -> (usize, bool) {
    let axis = (0..3)
        .max_by(|&a, &b| n[a].abs().total_cmp(&n[b].abs()))
        .unwrap_or(2);
    (axis, n[axis] < 0.0)
}

/// Edge-connected triangles of equal direction.
fn charts(mesh: &TriangleMesh) -> Vec<Chart> {
    let classes: Vec<(usize, bool)> = mesh
        .triangles
        .iter()
        .map(|&t| direction(face_normal(&mesh.positions, t)))
        .collect();
    let mut sets = DisjointSets::new(mesh.triangles.len());
    let mut edge_face: HashMap<(u32, u32), usize> = HashMap::new();
    for (f, t) in mesh.triangles.iter().enumerate() {
        for k in 0..3 {
            let (a, b) = (t[k], t[(k + 1) % 3]);
            match edge_face.entry((a.min(b), a.max(b))) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    if classes[*e.get()] == classes[f] {
                        sets.union(*e.get() as u32, f as u32);
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(f);
                }
            }
        }
    }
    let mut by_root: HashMap<u32, usize> = HashMap::new();
    let mut charts: Vec<Chart> = vec![];
    for (f, &(axis, _)) in classes.iter().enumerate() {
        let root = sets.find(f as u32);
        let index = *by_root.entry(root).or_insert_with(|| {
            charts.push(Chart {
                faces: vec![],
                axis,
            });
            charts.len() - 1
        });
        charts[index].faces.push(f);
    }
    charts
}

/// A chart's projected bounding box.
fn extent(mesh: &TriangleMesh, chart: &Chart) -> ([f32; 2], [f32; 2]) {
    let mut lo = [f32::MAX; 2];
    let mut hi = [f32::MIN; 2];
    for &f in &chart.faces {
        for v in mesh.triangles[f] {
            let q = project(mesh.positions[v as usize], chart.axis);
            for k in 0..2 {
                lo[k] = lo[k].min(q[k]);
                hi[k] = hi[k].max(q[k]);
            }
        }
    }
    (lo, hi)
}

/// Rectangles (texels, padding included) for charts of these world extents at `scale`
/// texels per unit.
fn rectangles(extents: &[[f32; 2]], scale: f32) -> Vec<[u32; 2]> {
    extents
        .iter()
        .map(|e| e.map(|side| ((side * scale).ceil() as u32).max(1) + 2 * PADDING))
        .collect()
}

/// Shelf packing, tallest first: each rectangle's top-left corner, or None when they do not
/// fit in `side`².
fn shelf_pack(rects: &[[u32; 2]], side: u32) -> Option<Vec<[u32; 2]>> {
    let mut order: Vec<usize> = (0..rects.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(rects[i][1]));
    let mut corners = vec![[0u32; 2]; rects.len()];
    let (mut x, mut y, mut shelf) = (0u32, 0u32, 0u32);
    for i in order {
        let [w, h] = rects[i];
        if w > side {
            return None;
        }
        if x + w > side {
            y += shelf;
            x = 0;
            shelf = 0;
        }
        if y + h > side {
            return None;
        }
        corners[i] = [x, y];
        x += w;
        shelf = shelf.max(h);
    }
    Some(corners)
}

/// The largest texel density (texels per unit) at which the charts fit, and their corners.
fn fit(extents: &[[f32; 2]], side: u32) -> Option<(f32, Vec<[u32; 2]>)> {
    let area: f32 = extents.iter().map(|e| e[0] * e[1]).sum();
    let mut good = (0.0, shelf_pack(&rectangles(extents, 0.0), side)?);
    // The area bound is an upper limit; halve down to a fit, then bisect.
    let mut bad = side as f32 / area.max(f32::MIN_POSITIVE).sqrt();
    let mut trial = bad;
    for _ in 0..40 {
        match shelf_pack(&rectangles(extents, trial), side) {
            Some(corners) => {
                good = (trial, corners);
                break;
            }
            None => {
                bad = trial;
                trial *= 0.5;
            }
        }
    }
    for _ in 0..12 {
        let mid = 0.5 * (good.0 + bad);
        match shelf_pack(&rectangles(extents, mid), side) {
            Some(corners) => good = (mid, corners),
            None => bad = mid,
        }
    }
    Some(good)
}

/// Barycentric coordinates of `p` in the 2-D triangle `t` (None when degenerate).
fn barycentric(t: [[f32; 2]; 3], p: [f32; 2]) -> Option<[f32; 3]> {
    let d = (t[1][1] - t[2][1]) * (t[0][0] - t[2][0]) + (t[2][0] - t[1][0]) * (t[0][1] - t[2][1]);
    if d.abs() < 1e-12 {
        return None;
    }
    let a = ((t[1][1] - t[2][1]) * (p[0] - t[2][0]) + (t[2][0] - t[1][0]) * (p[1] - t[2][1])) / d;
    let b = ((t[2][1] - t[0][1]) * (p[0] - t[2][0]) + (t[0][0] - t[2][0]) * (p[1] - t[2][1])) / d;
    Some([a, b, 1.0 - a - b])
}

/// Charts placed in the image: each split vertex's texel position.
struct Layout {
    mesh: TriangleMesh,
    source: Vec<u32>,
    /// Per split vertex, in texels.
    texel_uv: Vec<[f32; 2]>,
    /// Per output triangle, its chart.
    chart_of: Vec<usize>,
}

fn layout(mesh: &TriangleMesh, charts: &[Chart], side: u32) -> Result<Layout> {
    let boxes: Vec<([f32; 2], [f32; 2])> = charts.iter().map(|c| extent(mesh, c)).collect();
    let extents: Vec<[f32; 2]> = boxes
        .iter()
        .map(|(lo, hi)| [hi[0] - lo[0], hi[1] - lo[1]])
        .collect();
    let (scale, corners) = fit(&extents, side).ok_or_else(|| {
        Error::Input(format!(
            "--texture {side}: {} charts do not fit in a {side}×{side} texture; use a larger one",
            charts.len()
        ))
    })?;
    let mut out = Layout {
        mesh: TriangleMesh::default(),
        source: vec![],
        texel_uv: vec![],
        chart_of: vec![],
    };
    for (c, chart) in charts.iter().enumerate() {
        let mut split: HashMap<u32, u32> = HashMap::new();
        for &f in &chart.faces {
            let t = mesh.triangles[f].map(|v| {
                *split.entry(v).or_insert_with(|| {
                    let p = mesh.positions[v as usize];
                    let q = project(p, chart.axis);
                    let offset = [corners[c][0] + PADDING, corners[c][1] + PADDING];
                    out.mesh.positions.push(p);
                    out.source.push(v);
                    out.texel_uv.push(std::array::from_fn(|k| {
                        (q[k] - boxes[c].0[k]) * scale + offset[k] as f32
                    }));
                    (out.mesh.positions.len() - 1) as u32
                })
            });
            out.mesh.triangles.push(t);
            out.chart_of.push(c);
        }
    }
    Ok(out)
}

/// Texels whose centres lie inside a triangle, with the surface point there; also the charts
/// in which two triangles claim the same texel (folded by the projection).
fn rasterise(layout: &Layout, side: u32) -> (Vec<(u32, [f32; 3])>, Vec<usize>) {
    // Strictly inside: neighbours sharing an edge never both claim a texel.
    const INSIDE: f32 = 1e-4;
    let mut owner = vec![u32::MAX; (side * side) as usize];
    let mut texels = vec![];
    let mut folded = vec![];
    for (f, t) in layout.mesh.triangles.iter().enumerate() {
        let uv = t.map(|v| layout.texel_uv[v as usize]);
        let pos = t.map(|v| layout.mesh.positions[v as usize]);
        let lo = [0, 1].map(|k| uv.iter().map(|p| p[k]).fold(f32::MAX, f32::min));
        let hi = [0, 1].map(|k| uv.iter().map(|p| p[k]).fold(f32::MIN, f32::max));
        let x0 = (lo[0] - 0.5).floor().max(0.0) as u32;
        let y0 = (lo[1] - 0.5).floor().max(0.0) as u32;
        let x1 = ((hi[0] - 0.5).ceil().max(0.0) as u32).min(side - 1);
        let y1 = ((hi[1] - 0.5).ceil().max(0.0) as u32).min(side - 1);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let centre = [x as f32 + 0.5, y as f32 + 0.5];
                let Some(w) = barycentric(uv, centre) else {
                    continue;
                };
                if w.iter().any(|&b| b < INSIDE) {
                    continue;
                }
                let pixel = y * side + x;
                match owner[pixel as usize] {
                    u32::MAX => {
                        owner[pixel as usize] = f as u32;
                        texels.push((
                            pixel,
                            std::array::from_fn(|k| {
                                w[0] * pos[0][k] + w[1] * pos[1][k] + w[2] * pos[2][k]
                            }),
                        ));
                    }
                    other => folded.push(layout.chart_of[other as usize]),
                }
            }
        }
    }
    folded.sort_unstable();
    folded.dedup();
    (texels, folded)
}

/// Unwraps `mesh` onto a `side`×`side` texture.
pub fn unwrap(mesh: &TriangleMesh, side: u32) -> Result<Atlas> {
    if !(16..=8192).contains(&side) {
        return Err(Error::Input(format!(
            "--texture {side}: use a side between 16 and 8192 texels"
        )));
    }
    let mut charts = charts(mesh);
    let mut placed = layout(mesh, &charts, side)?;
    let (mut texels, folded) = rasterise(&placed, side);
    if !folded.is_empty() {
        // A chart folded by its projection: its triangles become charts of their own.
        let mut kept = Vec::with_capacity(charts.len());
        for (c, chart) in charts.into_iter().enumerate() {
            if folded.binary_search(&c).is_ok() {
                kept.extend(chart.faces.into_iter().map(|f| Chart {
                    faces: vec![f],
                    axis: chart.axis,
                }));
            } else {
                kept.push(chart);
            }
        }
        charts = kept;
        placed = layout(mesh, &charts, side)?;
        texels = rasterise(&placed, side).0;
    }
    let inverse = 1.0 / side as f32;
    Ok(Atlas {
        uvs: placed
            .texel_uv
            .iter()
            .map(|uv| uv.map(|c| c * inverse))
            .collect(),
        mesh: placed.mesh,
        source: placed.source,
        size: side,
        charts: charts.len(),
        texels,
    })
}

impl Atlas {
    /// The texture: `colors` for the covered texels (in `texels` order), spread into the
    /// gutters around charts, and the mean colour elsewhere so mipmaps stay neutral.
    pub fn bake(&self, colors: &[[f32; 3]]) -> Result<image::RgbImage> {
        if colors.len() != self.texels.len() {
            return Err(Error::Input(format!(
                "{} colours for {} texels",
                colors.len(),
                self.texels.len()
            )));
        }
        let side = self.size as usize;
        let mut image = vec![[0f32; 3]; side * side];
        let mut filled = vec![false; side * side];
        for (&(pixel, _), &c) in self.texels.iter().zip(colors) {
            image[pixel as usize] = c;
            filled[pixel as usize] = true;
        }
        for _ in 0..=PADDING {
            dilate(&mut image, &mut filled, side);
        }
        let count = filled.iter().filter(|&&f| f).count().max(1) as f32;
        let mean: [f32; 3] = std::array::from_fn(|k| {
            image
                .iter()
                .zip(&filled)
                .filter(|(_, &f)| f)
                .map(|(c, _)| c[k])
                .sum::<f32>()
                / count
        });
        let bytes = image
            .iter()
            .zip(&filled)
            .flat_map(|(c, &f)| if f { *c } else { mean })
            .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        Ok(image::RgbImage::from_raw(self.size, self.size, bytes).expect("side² RGB texels"))
    }
}

/// One ring of growth: each empty texel next to filled ones takes their mean.
fn dilate(image: &mut [[f32; 3]], filled: &mut [bool], side: usize) {
    let before = filled.to_vec();
    for y in 0..side {
        for x in 0..side {
            let i = y * side + x;
            if before[i] {
                continue;
            }
            let mut sum = [0f32; 3];
            let mut n = 0;
            for ny in y.saturating_sub(1)..=(y + 1).min(side - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(side - 1) {
                    let j = ny * side + nx;
                    if before[j] {
                        (0..3).for_each(|k| sum[k] += image[j][k]);
                        n += 1;
                    }
                }
            }
            if n > 0 {
                image[i] = sum.map(|s| s / n as f32);
                filled[i] = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube() -> TriangleMesh {
        let positions = (0..8)
            .map(|i| [i & 1, (i >> 1) & 1, (i >> 2) & 1].map(|b| b as f32 - 0.5))
            .collect();
        // Two counter-clockwise (outward) triangles per face.
        let quads = [
            [0, 2, 3, 1],
            [4, 5, 7, 6],
            [0, 1, 5, 4],
            [2, 6, 7, 3],
            [0, 4, 6, 2],
            [1, 3, 7, 5],
        ];
        let triangles = quads
            .iter()
            .flat_map(|q| [[q[0], q[1], q[2]], [q[0], q[2], q[3]]])
            .collect();
        TriangleMesh {
            positions,
            triangles,
        }
    }

    #[test]
    fn a_cube_unwraps_into_six_charts_of_equal_size() {
        let mesh = cube();
        assert!(mesh.topology().is_watertight());
        let atlas = unwrap(&mesh, 64).unwrap();
        assert_eq!(atlas.charts, 6);
        assert_eq!(atlas.mesh.triangles.len(), 12);
        // Each face's 4 corners, split from their 3 neighbouring faces.
        assert_eq!(atlas.mesh.positions.len(), 24);
        for (v, &s) in atlas.source.iter().enumerate() {
            assert_eq!(atlas.mesh.positions[v], mesh.positions[s as usize]);
        }
        assert!(atlas
            .uvs
            .iter()
            .all(|uv| uv.iter().all(|&c| (0.0..=1.0).contains(&c))));
        // Every texel shows a point on the cube's surface.
        assert!(atlas
            .texels
            .iter()
            .all(|(_, p)| p.iter().any(|&c| (c.abs() - 0.5).abs() < 1e-5)
                && p.iter().all(|&c| c.abs() <= 0.5 + 1e-5)));
        // Six equal squares on shelves: at least a third of the image is surface.
        assert!(atlas.texels.len() * 3 > 64 * 64, "{}", atlas.texels.len());
    }

    #[test]
    fn baking_puts_each_points_colour_at_its_uv() {
        let atlas = unwrap(&cube(), 128).unwrap();
        let color = |p: [f32; 3]| p.map(|c| c + 0.5);
        let colors: Vec<[f32; 3]> = atlas.texels.iter().map(|&(_, p)| color(p)).collect();
        let image = atlas.bake(&colors).unwrap();
        // Sampling the texture at a triangle's centroid UV gives the centroid's colour.
        for t in &atlas.mesh.triangles {
            let uv: [f32; 2] = std::array::from_fn(|k| {
                t.iter().map(|&v| atlas.uvs[v as usize][k]).sum::<f32>() / 3.0
            });
            let p: [f32; 3] = std::array::from_fn(|k| {
                t.iter()
                    .map(|&v| atlas.mesh.positions[v as usize][k])
                    .sum::<f32>()
                    / 3.0
            });
            let texel = image.get_pixel((uv[0] * 128.0) as u32, (uv[1] * 128.0) as u32);
            for k in 0..3 {
                let expected = color(p)[k] * 255.0;
                assert!(
                    (texel[k] as f32 - expected).abs() < 4.0,
                    "{texel:?} vs {p:?}"
                );
            }
        }
        // Gutters took their neighbours' colours: no black texel next to a chart.
        let dark = image.pixels().filter(|px| px.0 == [0, 0, 0]).count();
        assert!(dark < 16, "{dark} black texels");
    }

    #[test]
    fn folded_charts_are_split() {
        let corners = vec![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        let with = |p: [f32; 3], second: [u32; 3]| TriangleMesh {
            positions: [corners.clone(), vec![p]].concat(),
            triangles: vec![[0, 1, 2], second],
        };
        // Both triangles face +z: beside each other they make one chart; with the fourth
        // corner over the first triangle the projection folds, and the chart is split.
        let flat = with([0.9, 0.9, 0.1], [1, 3, 2]);
        let fold = with([0.3, 0.3, -0.2], [1, 2, 3]);
        for mesh in [&flat, &fold] {
            assert_eq!(charts(mesh).len(), 1);
        }
        assert_eq!(unwrap(&flat, 32).unwrap().charts, 1);
        assert_eq!(unwrap(&fold, 32).unwrap().charts, 2);
    }

    #[test]
    fn too_many_charts_for_the_texture_is_an_error() {
        let mesh = TriangleMesh {
            positions: (0..600)
                .map(|i| {
                    let x = (i / 3) as f32 * 2.0;
                    [[x, 0.0, 0.0], [x + 1.0, 0.0, 0.0], [x, 1.0, 0.0]][i % 3]
                })
                .collect(),
            triangles: (0..200).map(|t| [3 * t, 3 * t + 1, 3 * t + 2]).collect(),
        };
        let err = unwrap(&mesh, 16).unwrap_err().to_string();
        assert!(
            err.contains("--texture 16") && err.contains("larger"),
            "{err}"
        );
    }
}
