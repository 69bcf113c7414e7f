// threestudio's neural environment map: spherical harmonics (bands 0–2) of the view direction
// through a 9 → BG_HIDDEN → BG_HIDDEN → 3 MLP (ReLU, no biases), sigmoid. Reads `params`.

fn sh9(d: vec3<f32>) -> array<f32, 9> {
    return array<f32, 9>(
        0.28209479177387814,
        -0.48860251190291987 * d.y,
        0.48860251190291987 * d.z,
        -0.48860251190291987 * d.x,
        1.0925484305920792 * d.x * d.y,
        -1.0925484305920792 * d.y * d.z,
        0.94617469575755997 * d.z * d.z - 0.31539156525251999,
        -1.0925484305920792 * d.x * d.z,
        0.54627421529603959 * (d.x * d.x - d.y * d.y),
    );
}

struct BackgroundActivations {
    sh: array<f32, 9>,
    h1: array<f32, BG_HIDDEN>,
    h2: array<f32, BG_HIDDEN>,
    rgb: vec3<f32>,
}

fn background_activations(dir: vec3<f32>) -> BackgroundActivations {
    var a: BackgroundActivations;
    a.sh = sh9(dir);
    for (var j = 0u; j < BG_HIDDEN; j++) {
        var acc = 0.0;
        for (var i = 0u; i < 9u; i++) {
            acc += params[BG_W1 + j * 9u + i] * a.sh[i];
        }
        a.h1[j] = max(acc, 0.0);
    }
    for (var j = 0u; j < BG_HIDDEN; j++) {
        var acc = 0.0;
        for (var k = 0u; k < BG_HIDDEN; k++) {
            acc += params[BG_W2 + j * BG_HIDDEN + k] * a.h1[k];
        }
        a.h2[j] = max(acc, 0.0);
    }
    var pre = vec3<f32>(0.0);
    for (var j = 0u; j < BG_HIDDEN; j++) {
        pre += vec3<f32>(
            params[BG_W3 + j],
            params[BG_W3 + BG_HIDDEN + j],
            params[BG_W3 + 2u * BG_HIDDEN + j],
        ) * a.h2[j];
    }
    a.rgb = vec3<f32>(sigmoid(pre.x), sigmoid(pre.y), sigmoid(pre.z));
    return a;
}
