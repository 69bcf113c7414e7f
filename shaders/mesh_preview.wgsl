// Mesh previews: triangles with their albedo (vertex colour × base colour texture) under a
// headlight, so the shape reads even where the albedo is flat.

// Light on surfaces seen edge-on, as a fraction of those facing the camera.
const HEADLIGHT_AMBIENT: f32 = 0.6;

struct View {
    view_proj: mat4x4<f32>,
    eye: vec4<f32>,
}

@group(0) @binding(0) var<uniform> view: View;
@group(1) @binding(0) var albedo_map: texture_2d<f32>;
@group(1) @binding(1) var albedo_sampler: sampler;

struct Vertex {
    @location(0) position: vec3<f32>,
    @location(1) normal: vec3<f32>,
    @location(2) color: vec4<f32>,
    @location(3) uv: vec2<f32>,
}

struct Fragment {
    @builtin(position) clip: vec4<f32>,
    @location(0) world: vec3<f32>,
    @location(1) normal: vec3<f32>,
    @location(2) color: vec4<f32>,
    @location(3) uv: vec2<f32>,
}

@vertex
fn vertex_main(v: Vertex) -> Fragment {
    var out: Fragment;
    out.clip = view.view_proj * vec4<f32>(v.position, 1.0);
    out.world = v.position;
    out.normal = v.normal;
    out.color = v.color;
    out.uv = v.uv;
    return out;
}

// Linear colour out; the sRGB target encodes it.
@fragment
fn fragment_main(f: Fragment) -> @location(0) vec4<f32> {
    let albedo = f.color * textureSample(albedo_map, albedo_sampler, f.uv);
    let facing = abs(dot(normalize(f.normal), normalize(view.eye.xyz - f.world)));
    return vec4<f32>(albedo.rgb * (HEADLIGHT_AMBIENT + (1.0 - HEADLIGHT_AMBIENT) * facing), 1.0);
}
