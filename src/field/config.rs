//! The 3D field's architecture (threestudio's `implicit-volume` defaults) and the layout of its
//! parameters in one flat vector, shared by the GPU kernels and the CPU reference.

use serde::{Deserialize, Serialize};

/// Multi-resolution hash-grid encoding, density and albedo MLPs, and the background.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldConfig {
    /// Half-size of the box [−radius, radius]³ the grid covers and rays are clipped to.
    pub radius: f32,
    pub levels: u32,
    pub features_per_level: u32,
    /// log₂ of the hash-table size per level.
    pub log2_table_size: u32,
    pub base_resolution: u32,
    pub per_level_scale: f32,
    /// Hidden width of the density and albedo MLPs (one hidden layer each, ReLU, no biases).
    pub hidden: u32,
    /// Magic3D's density blob: softplus(raw + scale·(1 − ‖x‖/std)).
    pub blob_scale: f32,
    pub blob_std: f32,
    pub background: Background,
}

impl Default for FieldConfig {
    fn default() -> Self {
        Self {
            radius: 1.0,
            levels: 16,
            features_per_level: 2,
            log2_table_size: 19,
            base_resolution: 16,
            per_level_scale: 1.447_269_3,
            hidden: 64,
            blob_scale: 10.0,
            blob_std: 0.5,
            background: Background::Solid([1.0, 1.0, 1.0]),
        }
    }
}

/// What rays that leave the field see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Background {
    /// A fixed colour (no parameters).
    Solid([f32; 3]),
    /// threestudio's neural environment map: the view direction's spherical harmonics (degree
    /// 3, 9 terms) through a 9 → hidden → hidden → 3 MLP (ReLU, no biases), sigmoid.
    Neural { hidden: u32 },
}

/// Spherical-harmonic terms the neural background sees (bands 0–2).
pub const BACKGROUND_SH: u32 = 9;

impl Background {
    /// threestudio's `neural-environment-map-background` defaults.
    pub fn neural() -> Self {
        Self::Neural { hidden: 16 }
    }

    /// Hidden width of the background MLP (0 for a solid colour).
    pub fn hidden(&self) -> u32 {
        match self {
            Self::Solid(_) => 0,
            Self::Neural { hidden } => *hidden,
        }
    }
}

/// One level of the hash grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridLevel {
    /// Cells per side; grid vertices per side are `resolution + 1`.
    pub resolution: u32,
    /// Entries of this level's table (each `features_per_level` wide): a power of two when
    /// hashed (the kernels mask the hash rather than take it modulo the size).
    pub size: u32,
    /// First entry of this level in the grid's table.
    pub offset: u32,
    /// Indexed densely (every vertex its own entry) rather than by the spatial hash.
    pub dense: bool,
}

/// Where each tensor sits in the flat parameter vector, and its optimiser group.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamLayout {
    pub levels: Vec<GridLevel>,
    /// Hash-table entries over all levels.
    pub grid_entries: u32,
    /// hidden × features density weights, then hidden output weights.
    pub density_w1: u32,
    pub density_w2: u32,
    /// hidden × features albedo weights, then 3 × hidden output weights.
    pub albedo_w1: u32,
    pub albedo_w2: u32,
    /// Background MLP: bg_hidden × 9, bg_hidden × bg_hidden, 3 × bg_hidden (empty when solid).
    pub background_w1: u32,
    pub background_w2: u32,
    pub background_w3: u32,
    /// Parameters in all.
    pub len: u32,
}

impl FieldConfig {
    /// Width of the encoding (the MLPs' input).
    pub fn encoding_width(&self) -> u32 {
        self.levels * self.features_per_level
    }

    pub fn layout(&self) -> ParamLayout {
        let table = 1u32 << self.log2_table_size;
        let mut offset = 0;
        let levels = (0..self.levels)
            .map(|l| {
                let scale =
                    self.base_resolution as f64 * (self.per_level_scale as f64).powi(l as i32);
                let resolution = scale.floor() as u32;
                let vertices = (resolution as u64 + 1).pow(3);
                let dense = vertices <= table as u64;
                let size = if dense { vertices as u32 } else { table };
                let level = GridLevel {
                    resolution,
                    size,
                    offset,
                    dense,
                };
                offset += size;
                level
            })
            .collect();
        let f = self.features_per_level;
        let (enc, hidden) = (self.encoding_width(), self.hidden);
        let density_w1 = offset * f;
        let density_w2 = density_w1 + hidden * enc;
        let albedo_w1 = density_w2 + hidden;
        let albedo_w2 = albedo_w1 + hidden * enc;
        let bg = self.background.hidden();
        let background_w1 = albedo_w2 + 3 * hidden;
        let background_w2 = background_w1 + bg * BACKGROUND_SH;
        let background_w3 = background_w2 + bg * bg;
        ParamLayout {
            levels,
            grid_entries: offset,
            density_w1,
            density_w2,
            albedo_w1,
            albedo_w2,
            background_w1,
            background_w2,
            background_w3,
            len: background_w3 + 3 * bg,
        }
    }

    pub fn validate(&self) -> crate::Result<()> {
        let bad = |what: &str| Err(crate::Error::Input(format!("field config: {what}")));
        if self.levels == 0 || self.features_per_level == 0 || self.hidden == 0 {
            return bad("levels, features_per_level and hidden must be at least 1");
        }
        if !(10..=24).contains(&self.log2_table_size) {
            return bad("log2_table_size must be within 10..=24");
        }
        if self.background == (Background::Neural { hidden: 0 }) {
            return bad("the neural background needs a hidden width of at least 1");
        }
        if self.radius <= 0.0 || self.per_level_scale < 1.0 || self.base_resolution < 2 {
            return bad("radius > 0, per_level_scale ≥ 1 and base_resolution ≥ 2 are required");
        }
        Ok(())
    }
}

impl FieldConfig {
    /// Initial parameters: hash-table entries U(−10⁻⁴, 10⁻⁴) (instant-ngp), MLP weights
    /// U(−1/√fan_in, 1/√fan_in) (PyTorch's `nn.Linear`), from a seeded RNG.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let layout = self.layout();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let fan_in_bound = |n: u32| 1.0 / (n as f32).sqrt();
        let l = &layout;
        (0..layout.len)
            .map(|i| {
                let bound = if i < l.density_w1 {
                    1e-4
                } else if i < l.density_w2 || (l.albedo_w1..l.albedo_w2).contains(&i) {
                    fan_in_bound(self.encoding_width())
                } else if i < l.background_w1 {
                    fan_in_bound(self.hidden)
                } else if i < l.background_w2 {
                    fan_in_bound(BACKGROUND_SH)
                } else {
                    fan_in_bound(self.background.hidden())
                };
                rng.random_range(-bound..bound)
            })
            .collect()
    }
}

impl ParamLayout {
    /// Parameters of the hash grid (optimiser group 0); the MLPs follow (group 1).
    pub fn grid_params(&self) -> u32 {
        self.density_w1
    }

    /// The parameters by job, in order and covering them all: each hash level, then each
    /// layer of the MLPs and the background (a solid background has none).
    pub fn groups(&self) -> Vec<(String, std::ops::Range<u32>)> {
        let per_entry = self.grid_params() / self.grid_entries.max(1);
        let mut groups: Vec<(String, std::ops::Range<u32>)> = self
            .levels
            .iter()
            .enumerate()
            .map(|(i, level)| {
                let start = level.offset * per_entry;
                (
                    format!("hash level {i}"),
                    start..start + level.size * per_entry,
                )
            })
            .collect();
        groups.extend(
            [
                ("density W1", self.density_w1..self.density_w2),
                ("density W2", self.density_w2..self.albedo_w1),
                ("albedo W1", self.albedo_w1..self.albedo_w2),
                ("albedo W2", self.albedo_w2..self.background_w1),
                ("background", self.background_w1..self.len),
            ]
            .map(|(name, range)| (name.to_string(), range)),
        );
        groups.retain(|(_, range)| !range.is_empty());
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_grid_matches_threestudio() {
        let layout = FieldConfig::default().layout();
        let res: Vec<u32> = layout.levels.iter().map(|l| l.resolution).collect();
        assert_eq!(res[0], 16);
        assert_eq!(res[15], (16.0 * 1.447_269_3f64.powi(15)).floor() as u32);
        // 2¹⁹ entries hold a dense grid up to 80³ vertices: levels 0–4 (up to 71³) are dense.
        assert!(layout.levels[0].dense && layout.levels[4].dense && !layout.levels[5].dense);
        assert_eq!(layout.levels[15].size, 1 << 19);
        assert_eq!(
            layout.len - layout.density_w1,
            64 * 32 + 64 + 64 * 32 + 3 * 64
        );
    }

    #[test]
    fn parameter_groups_cover_every_parameter_once() {
        for (background, layers) in [(Background::Solid([1.0; 3]), 4), (Background::neural(), 5)] {
            let layout = FieldConfig {
                background,
                ..FieldConfig::default()
            }
            .layout();
            let groups = layout.groups();
            assert_eq!(groups.len(), 16 + layers);
            let mut next = 0;
            for (name, range) in &groups {
                assert_eq!(
                    range.start, next,
                    "{name} starts where the last group ended"
                );
                next = range.end;
            }
            assert_eq!(next, layout.len);
        }
    }
}
