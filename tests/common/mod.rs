//! Shared test helpers: the project's copy of the reference fixtures and tensor comparisons.
#![allow(dead_code)]

pub mod mvdream;

use candle_core::{DType, Device, Tensor};
use dream3d::weights::{Lookup, ModelFiles};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `tests/fixtures/sd_tiny`: a tiny random SD 2.x model in diffusers layout plus parity tensors
/// made with diffusers (see its README.txt).
pub fn sd_tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd_tiny")
}

pub fn sd_tiny_files() -> ModelFiles {
    Lookup {
        offline: true,
        ..Lookup::default()
    }
    .resolve(sd_tiny_dir().to_str().unwrap())
    .expect("sd_tiny fixture resolves")
}

/// The reference tensors of `parity.safetensors`.
pub fn parity() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(sd_tiny_dir().join("parity.safetensors"), &Device::Cpu)
        .expect("parity.safetensors loads")
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    max_abs(&(a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap())
}

pub fn max_abs(a: &Tensor) -> f32 {
    a.to_dtype(DType::F32)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Token ids of a fixture tensor as u32 rows.
pub fn id_rows(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_dtype(DType::U32).unwrap().to_vec2::<u32>().unwrap()
}

/// Seeded uniform(−1, 1) values (f64 host side), as `dtype` on the CPU.
pub fn uniform(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// Fails the test with the command's stderr unless it exited successfully.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Ctrl-C for a running `dream3d`: sends it SIGINT and waits for it to finish.
pub fn interrupt(child: std::process::Child) -> std::process::Output {
    signal(child, "INT")
}

/// Sends `child` the signal `name` (`INT`, `TERM`, …) and waits for it to exit.
pub fn signal(child: std::process::Child, name: &str) -> std::process::Output {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{name} {} failed", child.id());
    child.wait_with_output().unwrap()
}

/// The `dream3d` binary under test, run in `cwd`.
pub fn dream3d(cwd: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dream3d"));
    cmd.current_dir(cwd);
    cmd
}

/// The Khronos glTF validator's report for `file` (`tests/js`: `npm ci --prefix tests/js`).
pub fn validate_gltf(file: &Path) -> serde_json::Value {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/gltf-validator").is_dir(),
        "the glTF validator is not installed: npm ci --prefix tests/js (scripts/test does)"
    );
    let out = std::process::Command::new("node")
        .arg(js.join("validate.mjs"))
        .arg(file)
        .output()
        .expect("node (Node.js) on the PATH");
    assert_success(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The welded zero-level surface of `f` (positive inside) sampled on n³ points over [−1, 1]³.
pub fn analytic_surface(n: usize, f: impl Fn([f32; 3]) -> f32) -> dream3d::mesh::TriangleMesh {
    let c = |i: usize| -1.0 + 2.0 * i as f32 / (n - 1) as f32;
    let values: Vec<f32> = (0..n * n * n)
        .map(|i| f([c(i % n), c(i / n % n), c(i / (n * n))]))
        .collect();
    let mut mesh = dream3d::mesh::isosurface::Grid {
        values: &values,
        dims: [n; 3],
        min: [-1.0; 3],
        max: [1.0; 3],
    }
    .isosurface(0.0);
    mesh.weld();
    mesh
}

/// An empty snapshot folder of `repo_id` at `commit` in the Hugging Face cache `hub`, with
/// `refs/main` pointing at it, as the hub client leaves a download.
pub fn hf_snapshot(hub: &Path, repo_id: &str, commit: &str) -> PathBuf {
    let repo = hub.join(format!("models--{}", repo_id.replace('/', "--")));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), format!("{commit}\n")).unwrap();
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    snapshot
}

/// Copies the folder `from` to `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
