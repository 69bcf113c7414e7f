//! The WGSL kernels parse and validate (no device needed), and the Rust structs that fill their
//! uniform and storage buffers have exactly the layout naga computes for the WGSL structs.

use dream3d::field::{Background, FieldConfig};
use dream3d::gpu::field::{
    AdamUniform, CameraUniform, ChunkUniform, FrameUniform, OccupancyUniform, QueryUniform,
    WorkUniform,
};
use dream3d::gpu::mesh_preview::ViewUniform;
use dream3d::gpu::raster::RasterUniform;
use dream3d::gpu::scan::{DispatchUniform, ScanUniform};
use dream3d::gpu::shader::{raster_source, HiddenSum, Sources, MESH_PREVIEW, SCAN};
use std::mem::{offset_of, size_of};
use wgpu::naga;

fn module(source: &str) -> naga::Module {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{}", e.emit_to_string(source)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{}", e.emit_to_string(source)));
    module
}

/// (member name, offset) of WGSL struct `name`, and its size.
fn wgsl_struct(module: &naga::Module, name: &str) -> (Vec<(String, u32)>, u32) {
    module
        .types
        .iter()
        .find_map(|(_, ty)| match &ty.inner {
            naga::TypeInner::Struct { members, span } if ty.name.as_deref() == Some(name) => {
                Some((
                    members
                        .iter()
                        .map(|m| (m.name.clone().unwrap_or_default(), m.offset))
                        .collect(),
                    *span,
                ))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no struct {name}"))
}

/// Asserts each WGSL member's offset equals the Rust field's, and the Rust size covers the
/// WGSL size (a uniform may be padded to 16 bytes on the Rust side).
macro_rules! same_layout {
    ($module:expr, $wgsl:literal, $rust:ty, [$($w:literal => $r:ident),* $(,)?]) => {{
        let (members, span) = wgsl_struct($module, $wgsl);
        let rust = [$(($w, offset_of!($rust, $r) as u32)),*];
        assert_eq!(members.len(), rust.len(), "{}: member count", $wgsl);
        for ((name, offset), (want_name, rust_offset)) in members.iter().zip(rust) {
            assert_eq!(name, want_name, "{}: member order", $wgsl);
            assert_eq!(*offset, rust_offset, "{}.{name}: WGSL offset {offset}, Rust {rust_offset}", $wgsl);
        }
        assert!(size_of::<$rust>() as u32 >= span && size_of::<$rust>() as u32 <= span.next_multiple_of(16),
            "{}: WGSL size {span}, Rust {}", $wgsl, size_of::<$rust>());
    }};
}

#[test]
fn kernels_validate_with_and_without_float_atomics_and_subgroups() {
    for (atomics, hidden_sum) in [
        (true, HiddenSum::Subgroups { slots: 2 }),
        (false, HiddenSum::Subgroups { slots: 8 }),
        (true, HiddenSum::Workgroup),
        (false, HiddenSum::Workgroup),
    ] {
        for config in [
            FieldConfig::default(),
            FieldConfig {
                levels: 3,
                hidden: 8,
                background: Background::neural(),
                ..FieldConfig::default()
            },
        ] {
            let s = Sources::new(&config, atomics, hidden_sum);
            for source in [
                &s.render,
                &s.field_backward,
                &s.adam,
                &s.occupancy,
                &s.background_backward,
                &s.query,
            ] {
                module(source);
            }
            module(SCAN);
        }
        module(&raster_source(atomics));
    }
}

#[test]
fn host_structs_match_the_wgsl_layouts() {
    let s = Sources::new(&FieldConfig::default(), true, HiddenSum::Workgroup);
    let render = module(&s.render);
    same_layout!(&render, "Frame", FrameUniform, [
        "rays" => rays, "width" => width, "height" => height, "samples_per_ray" => samples_per_ray,
        "early_stop" => early_stop, "jitter_seed" => jitter_seed, "stratified" => stratified,
        "use_occupancy" => use_occupancy, "background" => background,
    ]);
    same_layout!(&render, "Camera", CameraUniform, ["rows" => rows, "intrinsics" => intrinsics]);
    same_layout!(&render, "Chunk", ChunkUniform, [
        "first_ray" => first_ray, "rays" => rays, "capacity" => capacity, "_pad" => pad,
    ]);
    let raster = module(&raster_source(true));
    same_layout!(&raster, "RasterFrame", RasterUniform, [
        "views" => views, "width" => width, "height" => height, "vertices" => vertices,
        "channels" => channels, "row_pitch" => row_pitch, "clip_grad_offset" => clip_grad_offset,
        "_pad" => pad,
    ]);
    let backward = module(&s.field_backward);
    same_layout!(&backward, "Work", WorkUniform, ["at" => at]);
    let scan = module(SCAN);
    same_layout!(&scan, "ScanWork", ScanUniform, ["len" => len]);
    same_layout!(&scan, "DispatchWork", DispatchUniform, [
        "at" => at, "limit" => limit, "per_group" => per_group, "_pad" => pad,
    ]);
    let adam = module(&s.adam);
    same_layout!(&adam, "AdamStep", AdamUniform, [
        "len" => len, "grid_params" => grid_params, "lr_grid" => lr_grid, "lr_mlp" => lr_mlp,
        "beta1" => beta1, "beta2" => beta2, "eps" => eps, "weight_decay" => weight_decay,
        "bias_correction1" => bias_correction1, "bias_correction2" => bias_correction2,
        "groups_x" => groups_x, "_pad" => pad,
    ]);
    let occupancy = module(&s.occupancy);
    same_layout!(&occupancy, "OccupancyWork", OccupancyUniform, [
        "seed" => seed, "step_size" => step_size, "_pad" => pad,
    ]);
    let query = module(&s.query);
    same_layout!(&query, "Query", QueryUniform, [
        "count" => count, "first" => first, "groups_x" => groups_x, "skip_empty" => skip_empty,
        "origin" => origin, "step" => step,
    ]);
    let preview = module(MESH_PREVIEW);
    same_layout!(&preview, "View", ViewUniform, ["view_proj" => view_proj, "eye" => eye]);
    // SampleGrad is written by one kernel and read by another: both must agree with the host's
    // size for it.
    for m in [&render, &backward] {
        assert_eq!(wgsl_struct(m, "SampleGrad").1, 32);
    }
}

/// Subgroup sums where the device has subgroups and the partial sums fit its workgroup memory.
#[test]
fn backward_sums_over_subgroups_only_where_they_fit() {
    let config = FieldConfig::default();
    assert_eq!(
        HiddenSum::choose(&config, Some(32), 16 * 1024),
        HiddenSum::Subgroups { slots: 2 }
    );
    // 8 partial sums per sample of 16 vec4s: 16 KB alone.
    assert_eq!(
        HiddenSum::choose(&config, Some(8), 16 * 1024),
        HiddenSum::Workgroup
    );
    assert_eq!(
        HiddenSum::choose(&config, Some(8), 32 * 1024),
        HiddenSum::Subgroups { slots: 8 }
    );
    assert_eq!(
        HiddenSum::choose(&config, None, 32 * 1024),
        HiddenSum::Workgroup
    );
}
