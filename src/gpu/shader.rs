//! WGSL sources: the files in `shaders/`, joined behind a prelude of constants generated from
//! the field's configuration (WGSL has no includes and array sizes must be constants).

use crate::field::march::{OCCUPANCY_RESOLUTION, STEP_FACTOR};
use crate::field::{Background, FieldConfig, ParamLayout};

pub const COMMON: &str = include_str!("../../shaders/common.wgsl");
pub const FIELD_EVAL: &str = include_str!("../../shaders/field_eval.wgsl");
pub const RENDER: &str = include_str!("../../shaders/render.wgsl");
pub const FIELD_BACKWARD: &str = include_str!("../../shaders/field_backward.wgsl");
pub const HIDDEN_SUM_SUBGROUP: &str = include_str!("../../shaders/hidden_sum_subgroup.wgsl");
pub const HIDDEN_SUM_WORKGROUP: &str = include_str!("../../shaders/hidden_sum_workgroup.wgsl");
pub const ADAM: &str = include_str!("../../shaders/adam.wgsl");
pub const OCCUPANCY: &str = include_str!("../../shaders/occupancy.wgsl");
pub const FIELD_QUERY: &str = include_str!("../../shaders/field_query.wgsl");
pub const BACKGROUND: &str = include_str!("../../shaders/background.wgsl");
pub const BACKGROUND_BACKWARD: &str = include_str!("../../shaders/background_backward.wgsl");
/// Self-contained (no prelude): prefix sums and indirect dispatch sizes.
pub const SCAN: &str = include_str!("../../shaders/scan.wgsl");
/// The differentiable rasteriser (see [`raster_source`]).
pub const RASTER: &str = include_str!("../../shaders/raster.wgsl");
pub const ANTIALIAS: &str = include_str!("../../shaders/antialias.wgsl");
/// Self-contained (no prelude): mesh previews know nothing of the field.
pub const MESH_PREVIEW: &str = include_str!("../../shaders/mesh_preview.wgsl");

/// `const` declarations describing the field.
pub fn prelude(config: &FieldConfig, layout: &ParamLayout) -> String {
    let f = |name: &str, v: f32| format!("const {name}: f32 = {v:?};\n");
    [
        u32_const("LEVELS", config.levels),
        u32_const("FEATURES", config.features_per_level),
        u32_const("WIDTH", config.encoding_width()),
        u32_const("W4", vec4s_per_encoding(config)),
        u32_const("HIDDEN", config.hidden),
        u32_const("DENSITY_W1", layout.density_w1),
        u32_const("DENSITY_W2", layout.density_w2),
        u32_const("ALBEDO_W1", layout.albedo_w1),
        u32_const("ALBEDO_W2", layout.albedo_w2),
        u32_const("OCC_RES", OCCUPANCY_RESOLUTION),
        u32_const("BG_HIDDEN", config.background.hidden().max(1)),
        u32_const("BG_W1", layout.background_w1),
        u32_const("BG_W2", layout.background_w2),
        u32_const("BG_W3", layout.background_w3),
        format!(
            "const NEURAL_BACKGROUND: bool = {};\n",
            matches!(config.background, Background::Neural { .. })
        ),
        f("RADIUS", config.radius),
        f("STEP_FACTOR", STEP_FACTOR as f32),
        f("BLOB_SCALE", config.blob_scale),
        f("BLOB_STD", config.blob_std),
    ]
    .concat()
}

/// A WGSL `u32` constant declaration.
fn u32_const(name: &str, value: u32) -> String {
    format!("const {name}: u32 = {value}u;\n")
}

/// The gradient buffer (binding 4) and `grad_add`, with f32 atomics or a compare-exchange loop.
pub fn grad_accumulator(float_atomics: bool) -> &'static str {
    if float_atomics {
        "@group(0) @binding(4) var<storage, read_write> grads: array<atomic<f32>>;\n\
         fn grad_add(i: u32, v: f32) { if v != 0.0 { atomicAdd(&grads[i], v); } }\n"
    } else {
        "@group(0) @binding(4) var<storage, read_write> grads: array<atomic<u32>>;\n\
         fn grad_add(i: u32, v: f32) {\n\
             if v == 0.0 { return; }\n\
             var old = atomicLoad(&grads[i]);\n\
             loop {\n\
                 let r = atomicCompareExchangeWeak(&grads[i], old, bitcast<u32>(bitcast<f32>(old) + v));\n\
                 if r.exchanged { break; }\n\
                 old = r.old_value;\n\
             }\n\
         }\n"
    }
}

/// The differentiable rasteriser's kernels behind the gradient accumulator only: they know
/// nothing of the field.
pub fn raster_source(float_atomics: bool) -> String {
    [grad_accumulator(float_atomics), RASTER, ANTIALIAS].concat()
}

/// Samples per tile of `eval_samples` (`render.wgsl`), and tiles per workgroup.
pub const EVAL_TILE: u32 = 16;
pub const EVAL_TILES_PER_GROUP: u32 = 16;

/// Samples per tile of `field_backward`, and tiles per workgroup.
pub const BACKWARD_TILE: u32 = 16;
pub const BACKWARD_TILES_PER_GROUP: u32 = 16;

/// How `field_backward` sums the encoding's gradient over the hidden units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenSum {
    /// Subgroup additions; `slots` partial sums per sample (the most subgroups a workgroup of
    /// HIDDEN threads can have).
    Subgroups { slots: u32 },
    /// Through workgroup memory, for devices without subgroup operations (or too little
    /// workgroup memory for the partial sums).
    Workgroup,
}

impl HiddenSum {
    /// Subgroups when the device has them (`subgroup_min_size`) and the partial sums fit in
    /// `max_workgroup_bytes` beside the kernel's other workgroup arrays.
    pub fn choose(
        config: &FieldConfig,
        subgroup_min_size: Option<u32>,
        max_workgroup_bytes: u32,
    ) -> Self {
        let Some(min_size) = subgroup_min_size else {
            return Self::Workgroup;
        };
        let slots = config.hidden.div_ceil(min_size.max(1));
        let vec4s = BACKWARD_TILE * vec4s_per_encoding(config);
        // Encodings, then positions and output gradients (vec3s take a vec4's stride).
        let shared = 16 * (vec4s + 2 * BACKWARD_TILE);
        let partials = 16 * slots * vec4s + 4;
        if shared + partials <= max_workgroup_bytes {
            Self::Subgroups { slots }
        } else {
            Self::Workgroup
        }
    }
}

/// The encoding's width in vec4s, rounded up (W4: kernels keep encodings as zero-padded vec4s).
fn vec4s_per_encoding(config: &FieldConfig) -> u32 {
    config.encoding_width().div_ceil(4)
}

/// The render kernels' constants: `eval_samples`' tiles.
fn render_head() -> String {
    [
        u32_const("EVAL_TILE", EVAL_TILE),
        u32_const("EVAL_TILES_PER_GROUP", EVAL_TILES_PER_GROUP),
    ]
    .concat()
}

/// `field_backward`'s constants and its sum over the hidden units.
fn backward_head(sum: HiddenSum) -> String {
    let mut head = [
        u32_const("TILE", BACKWARD_TILE),
        u32_const("TILES_PER_GROUP", BACKWARD_TILES_PER_GROUP),
    ]
    .concat();
    match sum {
        HiddenSum::Subgroups { slots } => {
            head += &u32_const("SUBGROUP_SLOTS", slots);
            head += HIDDEN_SUM_SUBGROUP;
        }
        HiddenSum::Workgroup => head += HIDDEN_SUM_WORKGROUP,
    }
    head
}

/// Each kernel's full source.
pub struct Sources {
    pub render: String,
    pub field_backward: String,
    pub adam: String,
    pub occupancy: String,
    pub background_backward: String,
    pub query: String,
}

impl Sources {
    pub fn new(config: &FieldConfig, float_atomics: bool, hidden_sum: HiddenSum) -> Self {
        let head = prelude(config, &config.layout()) + COMMON;
        Self {
            render: [
                head.as_str(),
                &render_head(),
                FIELD_EVAL,
                BACKGROUND,
                RENDER,
            ]
            .concat(),
            field_backward: [
                head.as_str(),
                grad_accumulator(float_atomics),
                &backward_head(hidden_sum),
                FIELD_BACKWARD,
            ]
            .concat(),
            adam: ADAM.to_string(),
            occupancy: [head.as_str(), FIELD_EVAL, OCCUPANCY].concat(),
            query: [head.as_str(), FIELD_EVAL, FIELD_QUERY].concat(),
            background_backward: [
                head.as_str(),
                grad_accumulator(float_atomics),
                BACKGROUND,
                BACKGROUND_BACKWARD,
            ]
            .concat(),
        }
    }
}
