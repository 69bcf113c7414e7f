// Field evaluation for kernels that read the parameters as plain floats.

struct FieldValue {
    sigma: f32,
    // dσ/d(raw density)
    dsigma: f32,
    rgb: vec3<f32>,
}

// The encoding, zero-padded to W4 vec4s (short vector arrays stay in registers on lavapipe).
fn encode(p: vec3<f32>) -> array<vec4<f32>, W4> {
    var features: array<vec4<f32>, W4>;
    for (var l = 0u; l < LEVELS; l++) {
        let f = level_features(p, levels[l]);
        for (var q = 0u; q < FEATURES; q++) {
            let k = l * FEATURES + q;
            features[k / 4u][k % 4u] = f[q];
        }
    }
    return features;
}

// The weight row at `offset` (WIDTH wide) times the features, four at a time: the short
// constant-count loop gets unrolled, which keeps a 512-sample ray far below lavapipe's limit of
// 65 535 loop iterations per invocation (past it, loops silently stop).
fn row_dot(offset: u32, f: ptr<function, array<vec4<f32>, W4>>) -> f32 {
    var acc = 0.0;
    for (var k = 0u; k < WIDTH / 4u; k++) {
        let at = offset + 4u * k;
        acc += dot(vec4<f32>(params[at], params[at + 1u], params[at + 2u], params[at + 3u]), (*f)[k]);
    }
    for (var k = WIDTH / 4u * 4u; k < WIDTH; k++) {
        acc += params[offset + k] * (*f)[k / 4u][k % 4u];
    }
    return acc;
}

fn eval_field(p: vec3<f32>) -> FieldValue {
    var f = encode(p);
    var raw = 0.0;
    var pre = vec3<f32>(0.0);
    for (var j = 0u; j < HIDDEN; j++) {
        let hd = row_dot(DENSITY_W1 + j * WIDTH, &f);
        let ha = row_dot(ALBEDO_W1 + j * WIDTH, &f);
        let w2 = output_weights(j);
        raw += w2.x * max(hd, 0.0);
        pre += w2.yzw * max(ha, 0.0);
    }
    return field_value(p, raw, pre);
}

// The outputs' activations: σ from the density MLP's output plus the blob, albedo in (0, 1).
fn field_value(p: vec3<f32>, raw: f32, pre: vec3<f32>) -> FieldValue {
    let x = raw + blob(p);
    return FieldValue(softplus(x), sigmoid(x), vec3<f32>(sigmoid(pre.x), sigmoid(pre.y), sigmoid(pre.z)));
}

// Hidden unit `j`'s second-layer weights: density, then the albedo's three.
fn output_weights(j: u32) -> vec4<f32> {
    return vec4<f32>(params[DENSITY_W2 + j], params[ALBEDO_W2 + j], params[ALBEDO_W2 + HIDDEN + j], params[ALBEDO_W2 + 2u * HIDDEN + j]);
}

// σ alone (density grids, occupancy): the albedo MLP is skipped.
fn eval_density(p: vec3<f32>) -> f32 {
    var f = encode(p);
    var raw = 0.0;
    for (var j = 0u; j < HIDDEN; j++) {
        let hd = row_dot(DENSITY_W1 + j * WIDTH, &f);
        raw += params[DENSITY_W2 + j] * max(hd, 0.0);
    }
    return softplus(raw + blob(p));
}
