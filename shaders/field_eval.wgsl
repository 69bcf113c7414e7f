// Field evaluation for kernels that read the parameters as plain floats.

struct FieldValue {
    sigma: f32,
    // dσ/d(raw density)
    dsigma: f32,
    rgb: vec3<f32>,
}

fn encode(p: vec3<f32>) -> array<f32, WIDTH> {
    var features: array<f32, WIDTH>;
    for (var l = 0u; l < LEVELS; l++) {
        let c = level_corners(p, levels[l]);
        for (var k = 0u; k < FEATURES; k++) {
            var acc = 0.0;
            for (var corner = 0u; corner < 8u; corner++) {
                acc += c.weight[corner] * params[c.index[corner] + k];
            }
            features[l * FEATURES + k] = acc;
        }
    }
    return features;
}

fn eval_field(p: vec3<f32>) -> FieldValue {
    let f = encode(p);
    var raw = 0.0;
    var pre = vec3<f32>(0.0);
    for (var j = 0u; j < HIDDEN; j++) {
        var hd = 0.0;
        var ha = 0.0;
        for (var k = 0u; k < WIDTH; k++) {
            hd += params[DENSITY_W1 + j * WIDTH + k] * f[k];
            ha += params[ALBEDO_W1 + j * WIDTH + k] * f[k];
        }
        raw += params[DENSITY_W2 + j] * max(hd, 0.0);
        let a = max(ha, 0.0);
        pre += vec3<f32>(
            params[ALBEDO_W2 + j],
            params[ALBEDO_W2 + HIDDEN + j],
            params[ALBEDO_W2 + 2u * HIDDEN + j],
        ) * a;
    }
    let x = raw + blob(p);
    return FieldValue(softplus(x), sigmoid(x), vec3<f32>(sigmoid(pre.x), sigmoid(pre.y), sigmoid(pre.z)));
}

// σ alone (density grids, occupancy): the albedo MLP is skipped.
fn eval_density(p: vec3<f32>) -> f32 {
    let f = encode(p);
    var raw = 0.0;
    for (var j = 0u; j < HIDDEN; j++) {
        var hd = 0.0;
        for (var k = 0u; k < WIDTH; k++) {
            hd += params[DENSITY_W1 + j * WIDTH + k] * f[k];
        }
        raw += params[DENSITY_W2 + j] * max(hd, 0.0);
    }
    return softplus(raw + blob(p));
}
